"""What the Space serves and within which bounds: its variables (`SpaceConfig`) and the adapter's
chat contract (`ChatContract`), each read and checked once at start-up. Anything unusable is a
`SpaceConfigError` whose message names the variable or file to fix.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from transformers import GenerationConfig

CONTRACT_FILE = "chat_contract.json"
CONTRACT_FORMAT = 2
GENERATION_FILE = "generation_config.json"
# Hard bounds on the work one request can cause, whatever the contract asks for.
MAX_NEW_TOKENS_CAP = 512
MAX_INPUT_TOKENS_CAP = 2048


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
    def from_env(cls, env: os._Environ | dict = os.environ) -> SpaceConfig:
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
    transformers' generation_config.json as training saved it, stop tokens included. Both token
    budgets are capped here, once, so that every request is bounded."""

    system_prompt: str
    max_input_tokens: int
    generation: GenerationConfig

    @classmethod
    def read(cls, adapter_dir: Path) -> ChatContract:
        path = adapter_dir / CONTRACT_FILE
        if not path.is_file():
            raise SpaceConfigError(f"the adapter has no {CONTRACT_FILE}: push it with the adapter")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:  # not JSON, or not UTF-8
            raise SpaceConfigError(f"{CONTRACT_FILE}: not valid JSON ({error})") from None
        found = raw.get("format") if isinstance(raw, dict) else None
        if found != CONTRACT_FORMAT:
            raise SpaceConfigError(
                f"{CONTRACT_FILE}: unsupported format {found!r} (this Space reads {CONTRACT_FORMAT})")
        if not (adapter_dir / GENERATION_FILE).is_file():
            raise SpaceConfigError(f"the adapter has no {GENERATION_FILE}: push it with the adapter")
        try:
            generation = GenerationConfig.from_pretrained(adapter_dir)
            generation.max_new_tokens = min(int(generation.max_new_tokens), MAX_NEW_TOKENS_CAP)
            return cls(system_prompt=str(raw["system_prompt"]), generation=generation,
                       max_input_tokens=min(int(raw["max_input_tokens"]), MAX_INPUT_TOKENS_CAP))
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise SpaceConfigError(f"{CONTRACT_FILE} / {GENERATION_FILE}: missing or invalid {error}") from None
