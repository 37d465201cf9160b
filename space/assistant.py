"""Loading the served model and streaming its answers.

The base model and the adapter (`repo @ revision`) come from the Space variables; the system
prompt from the adapter's `chat_contract.json`, decoding settings (stop tokens included) from its
`generation_config.json`; the chat template from the adapter's tokenizer files. Answers are decoded
by decoding.py's CUDA-graph loop (Space variable FAST_DECODE, on by default), or by
`model.generate` for what that loop does not take. The adapter is merged into the base on CPU, then the model is
moved to "cuda" at import time when CUDA is present (ZeroGPU requires both).

"Compare with base" keeps a second, untouched copy of the base model rather than an unmerged
PeftModel with `disable_adapter()`: that context manager flips shared state, so concurrent
requests would race (a fine-tuned answer computed with the adapter off), and the unmerged
model is slower per token. The copy costs one more model in memory (TinyLlama-1.1B: 2.2 GB
in bf16/fp16), which fits ZeroGPU and a T4; set COMPARE_WITH_BASE=0 to skip it.
"""
from __future__ import annotations

import gpu  # first: `spaces` must be imported before torch (see gpu.py)

import contextlib
import copy
import json
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

import decoding
from safety import clean_text

CONTRACT_FILE = "chat_contract.json"
CONTRACT_FORMAT = 2
GENERATION_FILE = "generation_config.json"
# Hard bounds on the work one request can cause, whatever the contract asks for.
MAX_NEW_TOKENS_CAP = 512
MAX_INPUT_TOKENS_CAP = 2048
MAX_INPUT_CHARS = 4000
# Seconds of ZeroGPU time requested per generation: quota is charged on the request, so it
# is sized for MAX_NEW_TOKENS_CAP tokens of a 1.1B model, not generously.
GPU_SECONDS = 30


class SpaceConfigError(RuntimeError):
    """The Space's variables or the downloaded adapter are not usable; the message says which."""


@dataclass(frozen=True)
class SpaceConfig:
    base_model: str
    adapter_repo: str
    base_revision: str | None = None
    adapter_revision: str = "main"  # `main` holds the best experiment
    compare_with_base: bool = True
    concurrency_limit: int = 4
    queue_size: int = 64
    fast_decode: bool = True  # decoding.py's CUDA-graph loop; off: model.generate for every request

    @classmethod
    def from_env(cls, env: os._Environ | dict = os.environ) -> "SpaceConfig":
        missing = [name for name in ("BASE_MODEL", "ADAPTER_REPO") if not env.get(name)]
        if missing:
            raise SpaceConfigError(f"set the Space variable(s) {', '.join(missing)} (Settings > Variables)")
        return cls(
            base_model=env["BASE_MODEL"],
            adapter_repo=env["ADAPTER_REPO"],
            base_revision=env.get("BASE_REVISION") or None,
            adapter_revision=env.get("ADAPTER_REVISION") or "main",
            compare_with_base=_flag(env, "COMPARE_WITH_BASE"),
            concurrency_limit=_positive_int(env, "CONCURRENCY_LIMIT", 4),
            queue_size=_positive_int(env, "QUEUE_SIZE", 64),
            fast_decode=_flag(env, "FAST_DECODE"),
        )


def _flag(env, name: str) -> bool:
    """A Space variable that is on unless set to 0 or false."""
    return env.get(name, "1") not in ("0", "false", "False")


def _positive_int(env, name: str, default: int) -> int:
    value = env.get(name) or str(default)
    if not value.isdigit() or int(value) < 1:
        raise SpaceConfigError(f"the Space variable {name} must be a whole number of at least 1, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class ChatContract:
    """The adapter's system prompt and input budget (chat_contract.json), and its decoding settings:
    transformers' generation_config.json as training saved it, stop tokens included."""

    system_prompt: str
    max_input_tokens: int
    generation: GenerationConfig

    @classmethod
    def read(cls, adapter_dir: Path) -> "ChatContract":
        path = adapter_dir / CONTRACT_FILE
        if not path.is_file():
            raise SpaceConfigError(f"the adapter has no {CONTRACT_FILE}: push it with the adapter")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != CONTRACT_FORMAT:
            raise SpaceConfigError(
                f"{CONTRACT_FILE}: unsupported format {raw.get('format')!r} (this Space reads {CONTRACT_FORMAT})")
        if not (adapter_dir / GENERATION_FILE).is_file():
            raise SpaceConfigError(f"the adapter has no {GENERATION_FILE}: push it with the adapter")
        try:
            generation = GenerationConfig.from_pretrained(adapter_dir)
            generation.max_new_tokens = min(int(generation.max_new_tokens), MAX_NEW_TOKENS_CAP)
            return cls(system_prompt=str(raw["system_prompt"]), generation=generation,
                       max_input_tokens=min(int(raw["max_input_tokens"]), MAX_INPUT_TOKENS_CAP))
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise SpaceConfigError(f"{CONTRACT_FILE} / {GENERATION_FILE}: missing or invalid {error}") from None


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


@dataclass(frozen=True)
class Prompt:
    """A request ready for the GPU: token ids of the templated conversation."""

    input_ids: list[int]
    dropped_turns: int


@dataclass
class Assistant:
    config: SpaceConfig
    adapter_sha: str
    contract: ChatContract
    tokenizer: object
    models: dict  # "tuned" and, when comparing, "base"
    stats: GenerationStats = field(default_factory=GenerationStats)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def build_prompt(self, message: str, history: list) -> Prompt | None:
        """Template system + history + message within max_input_tokens, dropping the oldest
        turns first; None when the message alone does not fit."""
        limit = self.contract.max_input_tokens
        # Bound cleaning and tokenizer work: API callers can send any amount of history.
        turns = normalise_history(_newest_within(history, budget=limit * 8))
        dropped = 0
        while True:
            ids = self._encode(turns + [{"role": "user", "content": message}])
            if len(ids) <= limit:
                return Prompt(input_ids=ids, dropped_turns=dropped)
            if not turns:
                return None
            turns, dropped = turns[1:], dropped + 1

    def stream(self, variant: str, prompt: Prompt) -> Iterator[str]:
        """Cumulative answer text, growing token by token."""
        text = ""
        # closing(): stopping this stream must close the generation at once, not at garbage collection
        with contextlib.closing(stream_generation(self.key, variant, prompt.input_ids)) as pieces:
            for piece in pieces:
                text += piece
                yield text

    def _encode(self, turns: list[dict]) -> list[int]:
        messages = [{"role": "system", "content": self.contract.system_prompt}, *turns]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text).input_ids


def normalise_history(history: list) -> list[dict]:
    """`{role, content: str}` turns from web UI history (content = list of text parts) or
    API history (content = str); files, components and empty turns are dropped."""
    turns = []
    for message in history or []:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            continue
        text = clean_text(message_text(message.get("content")))
        if text:
            turns.append({"role": message["role"], "content": text})
    return turns


def message_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content["text"] if content.get("type") == "text" and isinstance(content.get("text"), str) else ""
    if isinstance(content, (list, tuple)):
        return "\n".join(part for part in map(message_text, content) if part)
    return ""


def _newest_within(history: list, budget: int) -> list:
    """The newest messages whose raw text totals at most `budget` characters, chosen before any
    per-character cleaning: a 40 MB history must cost no more than a short one."""
    kept, size = [], 0
    for message in reversed(history or []):
        size += len(message_text(message.get("content"))) if isinstance(message, dict) else 0
        if size > budget:
            break
        kept.append(message)
    return kept[::-1]


# ---- loading -------------------------------------------------------------------------------

# ZeroGPU runs the decorated function in a forked worker: models are reached through this
# module-level registry, never passed (pickled) as arguments.
_LOADED: dict[str, Assistant] = {}


def device_and_dtype() -> tuple[str, torch.dtype]:
    """fp32 on CPU; bf16 on ZeroGPU and Ampere or newer; fp16 on older GPUs such as the T4."""
    if not torch.cuda.is_available():
        return "cpu", torch.float32
    if os.environ.get("SPACES_ZERO_GPU"):  # the GPU is attached per call: cannot be queried here
        return "cuda", torch.bfloat16
    major, _ = torch.cuda.get_device_capability()
    return "cuda", torch.bfloat16 if major >= 8 else torch.float16


def hub_problem(error: Exception) -> str:
    """What a failed Hub request means for the Space's settings, in words (never the token)."""
    token_set = bool(os.environ.get("HF_TOKEN"))
    if isinstance(error, RevisionNotFoundError):
        return "RevisionNotFoundError (no such branch, tag or commit)"
    if isinstance(error, RepositoryNotFoundError):  # the Hub answers a private repo alike
        why = "the HF_TOKEN secret cannot read it" if token_set else "no HF_TOKEN secret is set"
        return f"RepositoryNotFoundError (no such repo, or it is private and {why})"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        return "401 Unauthorized (the HF_TOKEN secret is invalid or expired: replace it with a read token)"
    if status == 403:
        return "403 Forbidden (the HF_TOKEN secret has no access: accept the repo's terms or use another token)"
    return f"{type(error).__name__} (the Hub could not be reached or failed{f', HTTP {status}' if status else ''})"


def download_adapter(repo: str, revision: str) -> tuple[Path, str]:
    """The adapter snapshot at `revision` and the commit sha it resolved to."""
    try:
        sha = HfApi().model_info(repo, revision=revision).sha
        return Path(snapshot_download(repo, revision=sha)), sha
    except (HfHubHTTPError, OSError) as error:  # OSError: connection failures and offline mode
        raise SpaceConfigError(
            f"adapter {repo} @ {revision}: {hub_problem(error)}; check ADAPTER_REPO, ADAPTER_REVISION and HF_TOKEN"
        ) from None


def load_base(config: SpaceConfig, dtype: torch.dtype):
    """The base model on CPU; a missing repo, folder or revision is a SpaceConfigError."""
    name = f"base model {config.base_model} @ {config.base_revision or 'main'}"
    try:
        return AutoModelForCausalLM.from_pretrained(config.base_model, revision=config.base_revision, dtype=dtype)
    except HfHubHTTPError as error:
        raise SpaceConfigError(f"{name}: {hub_problem(error)}; check BASE_MODEL and BASE_REVISION") from None
    except (OSError, ValueError) as error:  # transformers reports a missing repo or revision as OSError
        what = "no such revision" if "git identifier" in str(error) else "not found (neither a folder nor a Hub repo)"
        raise SpaceConfigError(f"{name}: {what}, or not readable with HF_TOKEN; check BASE_MODEL and "
                               "BASE_REVISION") from None


def load_assistant(config: SpaceConfig) -> Assistant:
    adapter_dir, sha = download_adapter(config.adapter_repo, config.adapter_revision)
    contract = ChatContract.read(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    if not tokenizer.chat_template:
        raise SpaceConfigError("the adapter's tokenizer files carry no chat template")
    device, dtype = device_and_dtype()
    base = load_base(config, dtype)
    untouched_base = copy.deepcopy(base) if config.compare_with_base else None
    tuned = merged_adapter(base, adapter_dir, config)
    models = {"tuned": tuned} | ({"base": untouched_base} if untouched_base is not None else {})
    for model in models.values():
        model.generation_config.max_length = None  # the contract's max_new_tokens governs
        model.to(device).eval()
    assistant = Assistant(config=config, adapter_sha=sha, contract=contract, tokenizer=tokenizer, models=models)
    _LOADED[assistant.key] = assistant
    return assistant


def merged_adapter(base, adapter_dir: Path, config: SpaceConfig):
    """The adapter merged into `base`, on the device the base is on (the CPU, before any move).

    peft picks the adapter weights' device with `infer_device()`, "cuda" whenever CUDA is
    available, without looking at the base (peft issue #3793): on ZeroGPU, with safetensors >= 0.8,
    loading straight to CUDA at start-up fails. So the device is passed, taken from the base.
    `merge_and_unload()` returns a new model, which the caller then moves.
    """
    try:
        model = PeftModel.from_pretrained(base, adapter_dir, torch_device=str(base.device))
        return model.merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as error:  # wrong base, or a broken adapter
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise SpaceConfigError(f"adapter {config.adapter_repo} does not load onto base model {config.base_model}: "
                               f"{first_line}") from None


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
