"""A fast decode loop for one streamed answer: transformers' own model forward over a static KV
cache, the one-token step captured once as a CUDA graph and replayed per token.

Why not `model.generate`: for one user its per-token host overhead dominates (on an H200 the
eager generate streamed 71 tokens/s; even transformers' static cache + torch.compile reached only
118). Why a CUDA graph and not torch.compile: ZeroGPU does not allow torch.compile, and a graph
removes the same overhead (hundreds of kernel launches per token become one replay).

What is outside the graph, per token: the logits processors (transformers' public classes, the
same ones `generate` builds from the GenerationConfig), the greedy or sampled choice, one device
to host copy of the chosen id (needed anyway, to stream it and to check stop tokens). On CPU the
same step runs eagerly, so CPU tests cover everything but the capture.

Checked against transformers 5.24's StaticCache (`StaticLayer` keeps its fill level in a device
tensor, `cumulative_length`, and writes each new key/value there with `index_copy_`: no host
sync) and masking_utils (with a static cache and a one-token query, `create_causal_mask` always
builds the mask `kv_idx <= cumulative_length` over the whole cache, from that device tensor: the
unfilled slots are hidden and no host sync happens). A transformers older than that, or any
setting this loop does not implement, sends the request to `model.generate` instead.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import transformers
from transformers import GenerationConfig, StaticCache
from transformers.generation import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

logger = logging.getLogger(__name__)

# The transformers version whose cache and masking code this loop was checked against (see above).
VERIFIED_TRANSFORMERS = (5, 24)
# Settings this loop implements.
HANDLED = frozenset({"max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
                     "eos_token_id"})
# Settings that do not change which tokens come out: ids for padding and prompting, bookkeeping,
# the cache or compilation `generate` would use, what `generate` returns besides the tokens.
# `max_length` too: `generate` lets `max_new_tokens` (required here) take precedence over it.
INERT = frozenset({"max_length", "pad_token_id", "bos_token_id", "decoder_start_token_id", "use_cache",
                   "cache_implementation", "cache_config", "compile_config", "disable_compile", "max_cache_len",
                   "transformers_version", "_from_model_config", "return_dict_in_generate", "output_scores",
                   "output_logits", "output_attentions", "output_hidden_states"})
# Eager steps on a side stream before capture (the torch.cuda.graph recipe): they let cuBLAS and
# the caching allocator settle so that the capture records no one-off work.
WARMUP_STEPS = 3


# ---- which settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeSettings:
    """A GenerationConfig as this loop runs it."""

    max_new_tokens: int
    stop_ids: frozenset[int]
    do_sample: bool
    processors: LogitsProcessorList


def _library_defaults() -> dict | None:
    """The values `generate` gives settings nobody set (transformers keeps them in a private
    helper); None where this transformers lacks it, so that the request goes to `generate`."""
    defaults = getattr(GenerationConfig, "_get_default_generation_params", None)
    return defaults() if callable(defaults) else None


@functools.cache  # fixed for the process
def _version_problem() -> str | None:
    major_minor = tuple(int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    if major_minor < VERIFIED_TRANSFORMERS:
        return f"transformers {transformers.__version__} (checked against >= {'.'.join(map(str, VERIFIED_TRANSFORMERS))})"
    if _library_defaults() is None:
        return "transformers' default generation settings are not readable"
    return None


@functools.cache
def _neutral_values() -> dict:
    """Every setting's value when nobody sets it: what a setting outside HANDLED | INERT must keep."""
    neutral = GenerationConfig()
    neutral.update(**_library_defaults(), defaults_only=True)
    return neutral.to_dict()


def resolved(generation: GenerationConfig, model=None) -> GenerationConfig:
    """`generation` completed as `generate` completes it: unset (None) settings from the model's
    own generation config, then transformers' defaults (e.g. top_k 50 when sampling)."""
    config = copy.deepcopy(generation)
    if model is not None:
        config.update(**model.generation_config.to_dict(), defaults_only=True)
    config.update(**_library_defaults(), defaults_only=True)
    return config


def _unsupported(config: GenerationConfig) -> list[str]:
    """The settings of a resolved config that this loop does not implement."""
    neutral = _neutral_values()
    problems = [key for key, value in config.to_dict().items()
                if key not in HANDLED | INERT and value != neutral.get(key)]
    if not isinstance(config.max_new_tokens, int) or config.max_new_tokens < 1:
        problems.append("max_new_tokens")
    return problems


def unsupported_settings(generation: GenerationConfig, model=None) -> list[str]:
    """The settings of `generation` that this loop does not implement (empty: it runs them exactly)."""
    problem = _version_problem()
    return [problem] if problem else _unsupported(resolved(generation, model))


def supports(generation: GenerationConfig, model=None) -> bool:
    """Whether the fast loop decodes exactly as `model.generate(generation_config=generation)` would."""
    return not unsupported_settings(generation, model)


def decode_settings(generation: GenerationConfig, model=None) -> DecodeSettings | None:
    """The settings to run, None when they are not all supported. The processors are those
    `generate` builds, in its order (repetition penalty; then, sampling only, temperature, top-k, top-p)."""
    if _version_problem():
        return None
    config = resolved(generation, model)
    if _unsupported(config):
        return None
    processors = LogitsProcessorList()
    if config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.do_sample:
        if config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    eos = config.eos_token_id
    stop_ids = frozenset() if eos is None else frozenset([eos] if isinstance(eos, int) else eos)
    return DecodeSettings(config.max_new_tokens, stop_ids, bool(config.do_sample), processors)


# ---- one decoder: a cache, a captured step -------------------------------------------------


@dataclass(frozen=True)
class Answer:
    new_ids: list[int]
    stopped: bool  # the stop event was set when the last token was checked (as `_StopWhenSet.fired`)


# torch.cuda.graph captures on one shared stream by default: one capture at a time per process.
_capture_lock = threading.Lock()


class Decoder:
    """One request at a time: a StaticCache of `capacity` tokens (prompt + answer), static input
    buffers for the token id and its position, and the decode step, captured on CUDA."""

    def __init__(self, model, capacity: int):
        self.model, self.capacity = model, capacity
        device = model.device
        self.cache = StaticCache(config=model.config, max_cache_len=capacity)
        self._token = torch.zeros((1, 1), dtype=torch.long, device=device)
        self._position = torch.zeros((1, 1), dtype=torch.long, device=device)
        self._ids = torch.zeros((1, capacity), dtype=torch.long, device=device)  # for the repetition penalty
        with torch.inference_mode():
            self._logits = self._step()  # allocates the cache's tensors (StaticLayer initialises lazily)
            self.graph = self._capture() if device.type == "cuda" else None
            self.cache.reset()  # zeroes in place: the addresses the graph recorded stay valid

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        # `cache`: transformers 5.24's name for what was `past_key_values` (still accepted, with a warning)
        output = self.model(input_ids=input_ids, position_ids=position_ids, cache=self.cache, use_cache=True,
                            **kwargs)
        return output.logits[:, -1, :].float()  # float32, as `generate` hands logits to the processors

    def _step(self) -> torch.Tensor:
        """The one-token decode step on the static buffers (what the graph records)."""
        return self._forward(self._token, self._position)

    def _capture(self) -> torch.cuda.CUDAGraph | None:
        """The step as a CUDA graph; None (eager steps) when capture fails on this GPU."""
        try:
            with _capture_lock:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(WARMUP_STEPS):
                        self._step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                # thread_local: other threads may generate (eagerly) while this one captures
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    logits = self._step()
            self._logits = logits
            return graph
        except Exception as error:  # never break a request: decode eagerly instead
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            logger.warning("fast decode: CUDA graph capture failed on %s (%s: %s); decoding eagerly",
                           torch.cuda.get_device_name(), type(error).__name__, reason)
            return None

    def _decode(self, token: torch.Tensor, position: int) -> torch.Tensor:
        self._token.copy_(token.view(1, 1))
        self._position.fill_(position)  # a kernel argument: no host sync
        if self.graph is None:
            return self._step()
        self.graph.replay()
        return self._logits

    def _prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(prompt.shape[-1], device=prompt.device).unsqueeze(0)
        return self._forward(prompt, positions, logits_to_keep=1)

    def _choose(self, length: int, logits: torch.Tensor, settings: DecodeSettings) -> torch.Tensor:
        scores = settings.processors(self._ids[:, :length], logits)
        if settings.do_sample:
            return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        return torch.argmax(scores, dim=-1)

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, settings: DecodeSettings, streamer, stop: threading.Event) -> Answer:
        """The answer to `prompt` (shape [1, n], on the model's device), each token pushed to
        `streamer` as `generate` pushes it (prompt first); ends early once `stop` is set."""
        length = prompt.shape[-1]
        new_ids: list[int] = []
        try:
            if length + settings.max_new_tokens > self.capacity:
                raise ValueError(f"{length} prompt + {settings.max_new_tokens} new tokens exceed the cache "
                                 f"({self.capacity})")
            streamer.put(prompt.cpu())
            self.cache.reset()
            self._ids[:, :length].copy_(prompt)
            logits = self._prefill(prompt)
            while True:
                token = self._choose(length, logits, settings)
                self._ids[:, length].copy_(token)
                new_ids.append(int(token.item()))  # the one host sync per token
                streamer.put(torch.tensor(new_ids[-1:]))
                stopped = stop.is_set()
                if stopped or new_ids[-1] in settings.stop_ids or len(new_ids) >= settings.max_new_tokens:
                    return Answer(new_ids, stopped)
                logits = self._decode(token, position=length)
                length += 1
        finally:
            streamer.end()


# ---- a few decoders per model, per process -------------------------------------------------


@dataclass
class _Pool:
    idle: list[Decoder]
    size: int = 0  # decoders made, idle or lent
    broken: bool = False  # making one failed: this model always goes to `generate`


# ZeroGPU runs the GPU function in forked workers: graphs and caches never cross processes, so
# pools are per process id. The Space's models live as long as the process, and so do their pools.
_pools: dict[tuple[int, int], _Pool] = {}
_pools_lock = threading.Lock()


def _pool(model) -> _Pool:
    with _pools_lock:
        return _pools.setdefault((os.getpid(), id(model)), _Pool(idle=[]))


@contextlib.contextmanager
def borrowed_decoder(model, capacity: int, limit: int) -> Iterator[Decoder | None]:
    """An idle decoder for `model` holding at least `capacity` tokens, a new one while fewer than
    `limit` exist, else None: the caller then uses `generate` rather than wait."""
    pool = _pool(model)
    decoder, make = None, False
    with _pools_lock:
        if not pool.broken:
            decoder = next((d for d in pool.idle if d.capacity >= capacity), None)
            if decoder is not None:
                pool.idle.remove(decoder)
            elif pool.size < limit:
                pool.size += 1  # reserved now, made below outside the lock (capture takes a moment)
                make = True
    if make:
        decoder = _new_decoder(model, capacity, pool)
    try:
        yield decoder
    finally:
        if decoder is not None:
            with _pools_lock:
                pool.idle.append(decoder)


def _new_decoder(model, capacity: int, pool: _Pool) -> Decoder | None:
    try:
        return Decoder(model, capacity)
    except Exception as error:  # e.g. out of memory, or a model this loop cannot drive
        with _pools_lock:
            pool.size -= 1
            pool.broken = True
        logger.warning("fast decode: cannot make a decoder (%s: %s); using model.generate",
                       type(error).__name__, str(error).strip().splitlines()[0][:200] if str(error).strip() else "")
        return None


def pool_state(model) -> dict:
    """This process's decoders for `model`: how many were made (idle or lent), how many idle ones
    replay a CUDA graph, and whether making one failed (then `generate` serves every request)."""
    with _pools_lock:
        pool = _pools.get((os.getpid(), id(model)), _Pool(idle=[]))
        return {"decoders": pool.size, "cuda_graphs": sum(d.graph is not None for d in pool.idle),
                "broken": pool.broken}


def forget(model) -> None:
    """Drop this process's decoders for `model` (their caches and graphs), e.g. before freeing it."""
    with _pools_lock:
        _pools.pop((os.getpid(), id(model)), None)


def generate_fast(model, input_ids: torch.Tensor, generation: GenerationConfig, streamer, stop: threading.Event,
                  *, capacity: int, decoders_per_model: int) -> Answer | None:
    """The answer through a pooled decoder, or None, with nothing streamed, when this request must
    go to `model.generate`: settings the loop does not implement, a prompt and answer beyond
    `capacity`, or every decoder busy."""
    settings = decode_settings(generation, model)
    if settings is None or input_ids.shape[-1] + settings.max_new_tokens > capacity:
        return None
    with borrowed_decoder(model, capacity, decoders_per_model) as decoder:
        if decoder is None:
            return None
        return decoder.generate(input_ids, settings, streamer, stop)
