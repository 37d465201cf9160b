"""The chat contract: how a question becomes a prompt, and what travels with an adapter.

Training text is exactly `prompt + completion`, where `prompt` is the tokenizer's chat template
applied to (system, user) with the generation prompt, and `completion` is `answer + eos_token`.
Generation later applies the same template to the same system prompt, so training and serving
agree token for token.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from training.config import GenerationConfig, validate
from training.errors import ConfigError, DataError
from training.provenance import write_json_atomic

# TinyLlama-1.1B-Chat-v1.0's (Zephyr-style) template, re-typed so the tiny base speaks the same format.
TINYLLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)

CONTRACT_FILE = "chat_contract.json"
CONTRACT_FORMAT = 1

# Files a SentencePiece (Llama) tokenizer can be rebuilt from, without tokenizer.json.
_SENTENCEPIECE_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


class ChatContract(NamedTuple):
    system_prompt: str
    generation: GenerationConfig


def build_messages(system_prompt: str, question: str, answer: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def format_prompt(tokenizer, system_prompt: str, question: str) -> str:
    """The text the model sees before it answers (ends with the assistant turn's opening)."""
    return tokenizer.apply_chat_template(
        build_messages(system_prompt, question), add_generation_prompt=True, tokenize=False
    )


def format_example(tokenizer, system_prompt: str, question: str, answer: str) -> dict[str, Any]:
    """One training row: `prompt + completion` is the training text exactly."""
    return {
        "messages": build_messages(system_prompt, question, answer),
        "prompt": format_prompt(tokenizer, system_prompt, question),
        "completion": answer + tokenizer.eos_token,
    }


def write_contract(folder: str | Path, system_prompt: str, generation: GenerationConfig) -> Path:
    path = Path(folder) / CONTRACT_FILE
    write_json_atomic(
        path, {"format": CONTRACT_FORMAT, "system_prompt": system_prompt, "generation": generation.model_dump()}
    )
    return path


def read_contract(folder: str | Path) -> ChatContract:
    path = Path(folder) / CONTRACT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: chat contract not found (is {folder} an adapter folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable chat contract ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != CONTRACT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: unsupported chat contract format {found!r} (expected {CONTRACT_FORMAT})")
    if not isinstance(data.get("system_prompt"), str):
        raise DataError(f"{path}: 'system_prompt' is missing or not a string")
    try:
        generation = validate(GenerationConfig, data.get("generation") or {}, str(path))
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return ChatContract(data["system_prompt"], generation)


def load_tokenizer(name: str | Path, revision: str | None = None):
    """AutoTokenizer for a Hub id (at a revision) or a folder, tolerant of legacy Llama tokenizer.json files.

    Older tokenizer.json files (TinyLlama's included) store merges as "a b" strings, and a few of
    Llama's merges contain literal spaces, which `tokenizers` >= 0.23 rejects. Those tokenizers
    are rebuilt from their SentencePiece model instead (the route transformers takes when there
    is no tokenizer.json), with Llama's upstream `add_bos_token=True` when the config omits it.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name), revision=revision)
    except TypeError as exc:
        if "merges" not in str(exc).lower():
            raise
        return _load_from_sentencepiece(name, revision)
    except OSError as exc:
        raise ConfigError(f"tokenizer {name}: cannot load ({_first_line(exc)})") from None


def _load_from_sentencepiece(name: str | Path, revision: str | None):
    from transformers import AutoTokenizer

    folder = _local_folder(name, revision)
    if not (folder / "tokenizer.model").exists():
        raise ConfigError(f"tokenizer {name}: tokenizer.json is in a legacy format and there is no tokenizer.model")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        for file in _SENTENCEPIECE_FILES:
            if (folder / file).exists():
                shutil.copy(folder / file, tmp)
        return AutoTokenizer.from_pretrained(tmp, add_bos_token=config.get("add_bos_token", True))


def _local_folder(name: str | Path, revision: str | None) -> Path:
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name), revision=revision, allow_patterns=list(_SENTENCEPIECE_FILES)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
