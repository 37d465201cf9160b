"""Padding-free training: a micro-batch is one row of whole examples laid end to end.

Why: the flashcards are short (median ~110 tokens, p95 ~280), so padded batches spend much of the
GPU on pad tokens, and the small batches that avoid padding leave it idle. Here a micro-batch's
examples are concatenated into one row with no padding at all, so large batches cost only real tokens.

Exactness: the math is the same as the padded computation, example by example.
- `position_ids` restart at 0 for every example (rotary positions as if it stood alone);
- the label at each example's first token is -100, so no example is trained to follow another;
- attention never crosses examples: `PADDING_FREE_ATTENTION` runs variable-length flash attention
  over the examples' boundaries (`cu_seq_lens_q`) on CUDA, and a block-diagonal causal mask elsewhere.

Two traps this module closes (transformers 5.x): with plain `sdpa`, the packed-sequence mask is
derived from `position_ids` only when no cache exists, but a model whose config has `use_cache=True`
builds one even in training without gradient checkpointing, so examples silently attend to each
other; and even when detected, `sdpa` gets a dense (tokens x tokens) mask, quadratic in the row.

Batches come from trl's padding-free collator in `training.train`, or from transformers'
`DataCollatorWithFlattening` (`padding_free_collator`, same fields) in the benchmarks and tests;
this module adds the attention function and token-budget batches (bench/bench_train_gpu.py).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import random
from collections.abc import Sequence

import torch
from torch.nn import functional as F

PADDING_FREE_ATTENTION = "padding_free_sdpa"
# torch's variable-length flash attention (the CUDA path of padding_free_attention); newer torch releases only.
VARLEN_MODULE = "torch.nn.attention.varlen"


def token_budget_batches(lengths: Sequence[int], max_tokens: int, seed: int) -> list[list[int]]:
    """Shuffled example indices cut into batches of at most `max_tokens` tokens each.

    An example longer than the budget gets a batch of its own. Every index appears exactly once.
    Padding-free batches have no padding to save, so there is no length grouping: batch sizes
    vary with the examples' lengths, and the data order stays as random as with fixed batches.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index in order:
        if current and used + lengths[index] > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += lengths[index]
    if current:
        batches.append(current)
    return batches


def padding_free_collator():
    """Flattens examples (`input_ids`, optional `labels`) into one row with restarting `position_ids`,
    -100 at each example's first label, and the boundaries the attention function needs."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, return_flash_attn_kwargs=True)


def padding_free_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function (query/key/value: batch, heads, tokens, head_dim).

    Without `cu_seq_lens_q` (ordinary padded batches, generation) it is plain `sdpa`.
    """
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"padding-free batches are one row; got {query.shape[0]} rows")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # tokens, heads, head_dim
    cu_seq_lens = cu_seq_lens_q.to(device=q.device, dtype=torch.int32)
    if q.is_cuda:
        # Flash kernels take half precision only; QLoRA's fp32-upcast layers hand over fp32 (as transformers'
        # own flash path does, compute in bf16 and return the caller's dtype).
        half = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        q, k, v = (t.to(half) for t in (q, k, v))
        # no int() on max_length_q: it stays symbolic under torch.compile
        out = _flash_varlen(q, k, v, cu_seq_lens, max_length_q, scaling).to(query.dtype)
    else:
        out = _block_diagonal_sdpa(q, k, v, cu_seq_lens, scaling, dropout if module.training else 0.0)
    return out.unsqueeze(0), None


# varlen_attn and its keyword names, looked up once: inspect.signature costs ~0.1 ms, and this runs in
# every attention layer of every step. A plain dict, because torch.compile warns on functools.cache.
_VARLEN: dict = {}


def has_flash_varlen() -> bool:
    """Whether this torch has VARLEN_MODULE (training.hardware falls back to padded batches without it)."""
    try:
        return importlib.util.find_spec(VARLEN_MODULE) is not None
    except ModuleNotFoundError:  # not even torch.nn.attention
        return False


def _flash_varlen(q, k, v, cu_seq_lens, max_len, scale: float | None) -> torch.Tensor:
    """torch's variable-length flash attention; its keyword names moved between torch releases."""
    if not _VARLEN:
        varlen_attn = importlib.import_module(VARLEN_MODULE).varlen_attn
        _VARLEN["fn"], _VARLEN["params"] = varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)
    varlen_attn, params = _VARLEN["fn"], _VARLEN["params"]
    options = {"scale": scale}
    if "window_size" in params:
        options["window_size"] = (-1, 0)  # causal
    else:
        options["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            options["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    return varlen_attn(q, k, v, cu_seq_lens, cu_seq_lens, max_len, max_len, **options)


def _block_diagonal_sdpa(q, k, v, cu_seq_lens, scale: float | None, dropout: float) -> torch.Tensor:
    """Reference path (CPU): causal attention restricted to each example by a dense mask."""
    tokens = q.shape[0]
    example = torch.repeat_interleave(
        torch.arange(cu_seq_lens.numel() - 1, device=q.device), cu_seq_lens.diff().long(), output_size=tokens
    )
    position = torch.arange(tokens, device=q.device)
    mask = (example[:, None] == example[None, :]) & (position[:, None] >= position[None, :])
    k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, dropout_p=dropout, scale=scale
    )
    return out.transpose(0, 1)


def _padding_free_mask(*args, attention_mask=None, **kwargs):
    """Padding-free rows need no mask (boundaries travel as `cu_seq_lens_q`); padded batches get sdpa's."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_padding_free_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PADDING_FREE_ATTENTION, padding_free_attention)
    AttentionMaskInterface.register(PADDING_FREE_ATTENTION, _padding_free_mask)
    return PADDING_FREE_ATTENTION


def enable_padding_free(model) -> None:
    """Switch a transformers (or peft-wrapped) causal LM to padding-free batches from `padding_free_collator`."""
    register_padding_free_attention()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(PADDING_FREE_ATTENTION)
    # A cache in the training forward is useless and hides packed rows from transformers' own mask logic.
    base.config.use_cache = False


def real_tokens(batch: dict) -> int:
    """Non-pad tokens in a collated batch (padded batches carry `attention_mask`; padding-free rows have none)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())
