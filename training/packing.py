"""Padding-free training: a micro-batch is one row of whole examples laid end to end.

Why: the flashcards are short (median ~110 tokens, p95 ~280), so padded batches spend much of the
GPU on pad tokens, and the small batches that avoid padding leave it idle. Here a micro-batch's
examples are concatenated into one row with no padding at all, so large batches cost only real tokens.

Exactness: the math is the same as the padded computation, example by example.
- `position_ids` restart at 0 for every example (rotary positions as if it stood alone);
- the label at each example's first token is -100, so no example is trained to follow another;
- attention never crosses examples: the plan's kernel (training/plan.py) runs each example alone, given
  the examples' boundaries (`cu_seq_lens_q`): torch's variable-length flash attention where the GPU has
  it (compute capability 8.0+, half precision), else SDPA over the examples padded within length
  buckets (`padded_sdpa_attention`: the memory-efficient kernel on a T4 or V100, the math one on a CPU).

Two traps this module closes (transformers 5.x): with plain `sdpa`, the packed-sequence mask is
derived from `position_ids` only when no cache exists, but a model whose config has `use_cache=True`
builds one even in training without gradient checkpointing, so examples silently attend to each
other; and even when detected, `sdpa` gets a dense (tokens x tokens) mask, quadratic in the row.

Batches come from trl's padding-free collator (training/trainer.py), or from transformers'
`DataCollatorWithFlattening` (`padding_free_collator`, same fields) in the benchmarks and tests;
this module adds the attention functions and token-budget batches (bench/bench_train_gpu.py).
"""
from __future__ import annotations

import importlib
import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from training.device import VARLEN_MODULE
from training.plan import FLASH_VARLEN, SDPA_PADDED

# The attention implementation registered with transformers for each kernel of the plan (training/plan.py). No
# "flash" in a name: transformers >= 5.25 takes any such name for a flash-attention kernel to fetch from the Hub.
ATTENTION_NAMES = {FLASH_VARLEN: "padding_free_varlen", SDPA_PADDED: "padding_free_sdpa"}


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


def flash_varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                           scaling: float | None = None, cu_seq_lens_q: torch.Tensor | None = None,
                           max_length_q: int | None = None, **kwargs):
    """transformers attention function (query/key/value: batch, heads, tokens, head_dim): a padding-free row
    through torch's variable-length flash attention (compute capability 8.0+, half precision). Without
    `cu_seq_lens_q` (padded batches, generation) it is plain `sdpa`."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    q, k, v = _one_row(query, key, value)
    # Flash kernels take half precision only; QLoRA's fp32-upcast layers hand over fp32 (as transformers' own flash
    # path does, compute in bf16, which every GPU with this kernel has, and return the caller's dtype).
    half = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q, k, v = (t.to(half) for t in (q, k, v))
    cu_seq_lens = cu_seq_lens_q.to(device=q.device, dtype=torch.int32)
    # no int() on max_length_q: it stays symbolic under torch.compile
    out = _flash_varlen(q, k, v, cu_seq_lens, max_length_q, scaling).to(query.dtype)
    return out.unsqueeze(0), None


def padded_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                          scaling: float | None = None, cu_seq_lens_q: torch.Tensor | None = None, **kwargs):
    """The same, on any GPU or CPU: each example of the row is padded (at its end) to the longest example of its
    length bucket and attended causally by SDPA (the memory-efficient kernel on CUDA: no mask, no grouped heads).
    Exact: causal attention never reaches the padding after an example, and the padding's outputs are dropped."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    q, k, v = _one_row(query, key, value)
    groups = q.shape[1] // k.shape[1]
    buckets = _cached_buckets(cu_seq_lens_q, q.device)
    pieces = []
    for slots, width in buckets.slots:
        rows = slots.numel() // width
        qb, kb, vb = (t[slots].view(rows, width, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))
        # Key/value heads repeated for grouped queries: SDPA's enable_gqa runs only in its flash and math kernels,
        # and a GPU without flash would fall to the math one (the whole attention matrix in memory).
        out = F.scaled_dot_product_attention(qb, repeat_kv(kb, groups), repeat_kv(vb, groups), dropout_p=dropout,
                                             scale=scaling, is_causal=True)
        pieces.append(out.transpose(1, 2).reshape(rows * width, *q.shape[1:]))
    return torch.cat(pieces)[buckets.inverse].unsqueeze(0), None


def _one_row(query, key, value):
    if query.shape[0] != 1:
        raise ValueError(f"padding-free batches are one row; got {query.shape[0]} rows")
    return (t[0].transpose(0, 1) for t in (query, key, value))  # tokens, heads, head_dim


# varlen_attn and its keyword names, looked up once: inspect.signature costs ~0.1 ms, and this runs in
# every attention layer of every step. A plain dict, because torch.compile warns on functools.cache.
_VARLEN: dict = {}


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


# Examples are padded only to the longest of their power-of-two length class (at least 64 tokens): on the real
# flashcards, at a T4's step size, that is 1.3x the attention work of per-example attention, against 3x for one
# padded batch of the whole row (trl's packing of the real lengths, 6 and 16 rows of 512 tokens).
MIN_BUCKET = 64


@dataclass(frozen=True)
class Buckets:
    slots: list  # per bucket: (the row's token index of each padded slot, examples x width, flattened; width)
    inverse: torch.Tensor  # per token of the row: its slot in the buckets' outputs laid end to end


def bucket_layout(cu_seq_lens: torch.Tensor, device) -> Buckets:
    bounds = cu_seq_lens.tolist()
    groups: dict[int, list[tuple[int, int]]] = {}
    for start, end in zip(bounds, bounds[1:]):
        groups.setdefault(max(MIN_BUCKET, 1 << (end - start - 1).bit_length()), []).append((start, end))
    slots, inverse, offset = [], torch.empty(bounds[-1], dtype=torch.long), 0
    for _, spans in sorted(groups.items()):
        width = max(end - start for start, end in spans)
        # Padding slots read token 0: they come after their example's tokens, so causal attention never takes them
        # into a real token's output, and their own outputs (and so their gradients) are dropped.
        index = torch.zeros(len(spans), width, dtype=torch.long)
        for row, (start, end) in enumerate(spans):
            index[row, : end - start] = torch.arange(start, end)
            inverse[start:end] = torch.arange(end - start) + offset + row * width
        slots.append((index.flatten().to(device), width))
        offset += len(spans) * width
    return Buckets(slots, inverse.to(device))


# The layout of the row being computed: every layer of one forward pass gets the same boundaries tensor, so the
# one device-to-host copy of the boundaries happens once per pass, not once per layer.
_LAYOUT: dict = {}


def _cached_buckets(cu_seq_lens: torch.Tensor, device) -> Buckets:
    if _LAYOUT.get("key") is not cu_seq_lens:
        _LAYOUT.clear()
        _LAYOUT.update(key=cu_seq_lens, value=bucket_layout(cu_seq_lens, device))
    return _LAYOUT["value"]


def _padding_free_mask(*args, attention_mask=None, **kwargs):
    """Padding-free rows need no mask (boundaries travel as `cu_seq_lens_q`); padded batches get sdpa's."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_padding_free_attention(attention: str) -> str:
    """Registers the attention function of the plan's kernel (FLASH_VARLEN or SDPA_PADDED); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    name = ATTENTION_NAMES[attention]
    function = flash_varlen_attention if attention == FLASH_VARLEN else padded_sdpa_attention
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, _padding_free_mask)
    return name


def enable_padding_free(model, attention: str = SDPA_PADDED) -> None:
    """Switch a transformers (or peft-wrapped) causal LM to padding-free rows through the `attention` kernel."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(register_padding_free_attention(attention))
    # A cache in the training forward is useless and hides packed rows from transformers' own mask logic.
    base.config.use_cache = False


def real_tokens(batch: dict) -> int:
    """Non-pad tokens in a collated batch (padded batches carry `attention_mask`; padding-free rows have none)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())
