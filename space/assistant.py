"""The served assistant and how it answers: its models, tokenizer and chat contract (loaded by
loading.py), and the ZeroGPU function that streams one answer.

Answers are decoded by decoding.py's CUDA-graph loop (Space variable FAST_DECODE, on by default),
or by `model.generate` for what that loop does not take. A request reaches this module already
cleaned and bounded (request.py); Stop, or a closed connection, ends its generation at the next token.
"""
from __future__ import annotations

import gpu  # first: `spaces` must be imported before torch (see gpu.py)

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

import decoding
from config import ChatContract, SpaceConfig

if TYPE_CHECKING:
    from request import Prompt

# Seconds of ZeroGPU time requested per generation: quota is charged on the request, so it
# is sized for config.MAX_NEW_TOKENS_CAP tokens of a 1.1B model, not generously.
GPU_SECONDS = 30


@dataclass
class GenerationStats:
    """Counts generations; `stopped_early` are those ended because the request went away."""

    started: int = 0
    completed: int = 0
    stopped_early: int = 0
    last_new_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, new_tokens: int, stopped_early: bool) -> None:
        with self.lock:
            self.last_new_tokens = new_tokens
            if stopped_early:
                self.stopped_early += 1
            else:
                self.completed += 1


@dataclass
class Assistant:
    """What loading.py loaded, and its counters; requests find it by `key` (see `register`)."""

    config: SpaceConfig
    adapter_sha: str
    contract: ChatContract
    tokenizer: object
    models: dict  # "tuned" and, when comparing, "base"
    base_sha: str | None = None  # the base's commit, when it came from the Hub
    stats: GenerationStats = field(default_factory=GenerationStats)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def stream(self, variant: str, prompt: Prompt) -> Iterator[str]:
        """Cumulative answer text, growing token by token."""
        text = ""
        # closing(): stopping this stream must close the generation at once, not at garbage collection
        with contextlib.closing(stream_generation(self.key, variant, prompt.input_ids)) as pieces:
            for piece in pieces:
                text += piece
                yield text


# ZeroGPU runs the decorated function in a forked worker: models are reached through this
# module-level registry, never passed (pickled) as arguments.
_LOADED: dict[str, Assistant] = {}


def register(assistant: Assistant) -> Assistant:
    """`assistant`, reachable from the GPU function by its key."""
    _LOADED[assistant.key] = assistant
    return assistant


# ---- generation ----------------------------------------------------------------------------


class _StopWhenSet(StoppingCriteria):
    """Ends generation once `event` is set (the request was stopped or its connection closed)."""

    def __init__(self, event: threading.Event):
        self.event = event
        self.fired = False

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.fired = self.event.is_set()
        return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)


# Generation runs on reused threads: on the H200 test host the first generate() of every new
# thread ran ~15x slower per token (512 tokens: 23 s on a fresh thread, 1.6 s on a reused one).
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _generation_threads(workers: int) -> ThreadPoolExecutor:
    # One pool per process: ZeroGPU generates in forked workers, where the parent's threads do not exist.
    with _pools_lock:
        pool = _pools.get(os.getpid())
        if pool is None:
            pool = _pools[os.getpid()] = ThreadPoolExecutor(workers, thread_name_prefix="generate")
        return pool


def generate_answer(assistant: Assistant, model, ids: torch.Tensor, streamer,
                    stop_criterion: _StopWhenSet) -> list[int]:
    """The new token ids, streamed: by decoding.py's fast loop when FAST_DECODE is on and it can take
    the request (supported settings, a free decoder), else by `model.generate` as before."""
    generation = assistant.contract.generation
    if assistant.config.fast_decode:
        answer = decoding.generate_fast(
            model, ids, generation, streamer, stop_criterion.event,
            capacity=assistant.contract.max_input_tokens + generation.max_new_tokens,  # both already capped
            decoders_per_model=assistant.config.concurrency_limit)
        if answer is not None:
            stop_criterion.fired = answer.stopped
            return answer.new_ids
    output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                            stopping_criteria=StoppingCriteriaList([stop_criterion]), generation_config=generation)
    return output[0, ids.shape[-1]:].tolist()


@gpu.gpu_task(duration=GPU_SECONDS)
def stream_generation(assistant_key: str, variant: str, input_ids: list[int]) -> Iterator[str]:
    """New text pieces as they are generated. Closing the generator (Stop, a closed
    connection) sets the event in `finally`, which ends `generate` at the next token."""
    assistant = _LOADED[assistant_key]
    model, tokenizer = assistant.models[variant], assistant.tokenizer
    ids = torch.tensor([input_ids], device=model.device)
    stop = threading.Event()
    stop_criterion = _StopWhenSet(stop)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    outcome: dict = {}

    def run() -> None:
        try:
            with torch.inference_mode():
                outcome["new_ids"] = generate_answer(assistant, model, ids, streamer, stop_criterion)
        except BaseException as error:  # re-raised in the caller's thread below
            outcome["error"] = error
            streamer.end()

    with assistant.stats.lock:
        assistant.stats.started += 1
    # The chat and the comparison each run up to concurrency_limit requests at once.
    generation = _generation_threads(2 * assistant.config.concurrency_limit).submit(run)
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        stop.set()
        generation.result()
        new_tokens = len(outcome.get("new_ids", ()))
        assistant.stats.record(new_tokens, stopped_early=stop_criterion.fired)
    if "error" in outcome:
        raise outcome["error"]
