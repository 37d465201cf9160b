"""Loading a model for evaluation, batched greedy generation and teacher-forced log-likelihoods.

Both batch with LEFT padding and length-sorted batches: generation needs the prompt to end where
the new tokens start, and teacher forcing then finds every completion at the end of its row,
so only the last positions' logits are computed (`logits_to_keep`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F

from common.errors import ConfigError, HubError
from common.hub_errors import hub_errors
from common.hub_ids import is_hub_id
from training.device import Device, resolve_precision, torch_dtype


def load_model(base: str, revision: str | None, adapter_dir: Path | None, precision: str = "auto"):
    """The base model, with the adapter merged into its weights when given (faster than unmerged LoRA)."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from training.chat import stop_token_ids
    from training.tokenizer import load_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch_dtype(resolve_precision(precision, Device.detect(), "evaluation"))
    try:
        with hub_errors(base, revision, "cannot load base model"):
            model = AutoModelForCausalLM.from_pretrained(base, revision=revision, dtype=dtype)
    except OSError as exc:
        # A missing folder is a config mistake; a Hub id that cannot be fetched is a Hub problem.
        error = HubError if is_hub_id(base) else ConfigError
        raise error(f"cannot load base model {base!r} (revision {revision}): {exc}".splitlines()[0]) from None
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    # The adapter folder carries the tokenizer (and chat template) it was trained with.
    has_tokenizer = adapter_dir is not None and (Path(adapter_dir) / "tokenizer_config.json").exists()
    tokenizer = load_tokenizer(adapter_dir) if has_tokenizer else load_tokenizer(base, revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Decode only with the settings `generate` passes: the checkpoint's defaults (sampling,
    # max_length) must not leak into evaluation.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(register_decode_attention())
    return model.to(device).eval(), tokenizer


DECODE_ATTENTION = "sdpa_grouped_decode"


def grouped_decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' `sdpa`, except that one new token attends to grouped key/value heads without copies.

    With grouped-query attention (TinyLlama: 32 query heads over 4 key/value heads), `sdpa` given a mask
    copies every cached key and value 8 times per layer and step when the decode step is compiled
    (static cache), which made batched evaluation memory-bound. Here the query heads that share a
    key/value head are laid out as that head's queries instead (as transformers itself does outside
    compilation): the same scores, softmax and sums, per head.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1
    if query.shape[2] != 1 or groups == 1 or not shared_mask or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, dim = query.shape
    grouped = query.reshape(batch, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                           scale=scaling, is_causal=False)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register_decode_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, grouped_decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return DECODE_ATTENTION


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def left_pad(tokenizer, rows: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows as one batch (ids, attention mask) on `device`, padded on the left so that every
    row's last token is in the last column, where generation continues and completions end."""
    batch = tokenizer.pad({"input_ids": list(rows)}, padding_side="left", return_tensors="pt")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    # Same call trl's SFTTrainer makes on the `prompt` column, so eval sees the training context.
    return tokenizer(prompt)["input_ids"]


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], batch_size: int, max_new_tokens: int,
             static_cache: bool | None = None, sampling: dict | None = None) -> list[str]:
    """Answers, stopping at the end-of-turn token (or eos); special tokens stripped.

    Greedy unless `sampling` says otherwise: the other decoding settings saved with an adapter
    (`do_sample`, `temperature`, `top_p`, `repetition_penalty`; evaluate.decoding_settings reads them).

    static_cache (default: on CUDA): a fixed-size KV cache, which lets transformers compile the decode
    step into CUDA graphs (4x the tokens/s of the dynamic cache at batch 256 on an H200, after a
    one-off compile; bench/README.md). The compiled step is specialised to the batch size, so a
    short last batch is filled up with repeats of its last prompt, whose answers are dropped.
    """
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    from training.chat import stop_token_ids

    if static_cache is None:
        static_cache = model.device.type == "cuda"
    sampling = {key: value for key, value in (sampling or {}).items() if value is not None}
    config = GenerationConfig(
        **{"do_sample": False, **sampling}, max_new_tokens=max_new_tokens, eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id, cache_implementation="static" if static_cache else None,
    )
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    answers: list[str] = [""] * len(prompts)
    progress = tqdm(total=len(prompts), desc="generating", unit="q", leave=False)
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    for batch in batches:
        rows = [encoded[i] for i in batch]
        if static_cache and len(batches) > 1:
            rows += [rows[-1]] * (batch_size - len(rows))
        ids, mask = left_pad(tokenizer, rows, model.device)
        output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(output[row, ids.shape[1]:], skip_special_tokens=True).strip()
        progress.update(len(batch))
    progress.close()
    return answers


def prompt_completion_ids(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt+completion and where the completion starts, as trl's SFTTrainer splits them."""
    from trl.data_utils import common_prefix_length

    prompt_ids = encode_prompt(tokenizer, prompt)
    full_ids = tokenizer(prompt + completion)["input_ids"]
    return full_ids, common_prefix_length(prompt_ids, full_ids)


@torch.inference_mode()
def completion_log_likelihoods(
    model, tokenizer, prompts: Sequence[str], completions: Sequence[str], batch_size: int, split=None
) -> list[tuple[float, int]]:
    """Per example: (sum of -log p over the completion tokens under teacher forcing, completion tokens).

    `split(tokenizer, prompt, completion) -> (ids, completion start)` says where the completion starts;
    default: as trl's SFTTrainer splits them (prompt_completion_ids).
    """
    split = split or prompt_completion_ids
    encoded = [split(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for batch in length_sorted_batches([len(ids) for ids, _ in encoded], batch_size):
        rows = [encoded[i][0] for i in batch]
        n_completion = [len(encoded[i][0]) - encoded[i][1] for i in batch]
        ids, mask = left_pad(tokenizer, rows, model.device)
        # Left padding shifts positions; give each row positions counted from its first real token.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(n_completion) + 1
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        # logits[:, j] predicts token ids[:, width - keep + j + 1]: a row's n completion tokens are its last n,
        # predicted by logits[:, keep - 1 - n : keep - 1]. Scored a row at a time in float32: the whole batch's
        # float32 log-probabilities (batch x tokens x vocabulary) would not fit a 15 GiB GPU.
        for row, i in enumerate(batch):
            n = n_completion[row]
            nll = F.cross_entropy(logits[row, keep - 1 - n:keep - 1].float(), ids[row, ids.shape[1] - n:],
                                  reduction="sum").item() if n else 0.0
            results[i] = (nll, n)
    return results


@torch.inference_mode()
def next_token_log_probs(model, tokenizer, rows: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
                         batch_size: int) -> list[list[float]]:
    """Per row of token ids, the log-probability of each of its candidate next tokens: one forward pass over
    the row, of which only the last position's logits are computed. For a one-token completion this is
    completion_log_likelihoods' number, at a quarter of the passes when four completions share the row."""
    results: list[list[float]] = [[] for _ in rows]
    for batch in length_sorted_batches([len(row) for row in rows], batch_size):
        ids, mask = left_pad(tokenizer, [rows[i] for i in batch], model.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)
        for row, i in enumerate(batch):
            results[i] = log_probs[row, list(candidates[i])].tolist()
    return results
