"""The chat contract: how a question becomes a prompt, and what travels with an adapter.

Training text is exactly `prompt + completion`, where `prompt` is the tokenizer's chat template
applied to (system, user) with the generation prompt, and `completion` is `answer + eos_token`.
Generation later applies the same template to the same system prompt, so training and serving
agree token for token.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from common.atomic import write_json_atomic
from common.errors import ConfigError, DataError
from common.hub_errors import first_line, hub_errors
from training.config import GenerationConfig

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
# 2: decoding settings moved to transformers' generation_config.json; the contract keeps the rest.
CONTRACT_FORMAT = 2
GENERATION_FILE = "generation_config.json"
# A private-use character: no chat template contains it, so it marks where a message's content ends.
_CONTENT_MARK = "\ue000"

# The files a tokenizer is loaded from (a model repo also holds weights, which are not needed).
_TOKENIZER_FILES = ["tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                    "vocab*", "merges.txt", "config.json"]
# A tokenizer.json whose merges are "a b" strings rather than ["a", "b"] pairs.
_LEGACY_MERGES = re.compile(r'"merges"\s*:\s*\[\s*"')


class ChatContract(NamedTuple):
    """What an adapter folder says about how to talk to it.

    `generation` is a `transformers.GenerationConfig` (read from generation_config.json, the file
    every tool reads), stopping at the template's end-of-turn token; the contract file holds only what
    GenerationConfig has no field for.
    """

    system_prompt: str
    max_input_tokens: int
    generation: Any


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
    return format_examples(tokenizer, system_prompt, [(question, answer)])[0]


def format_examples(tokenizer, system_prompt: str, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """`format_example` for many (question, answer) pairs; one batched template call renders them faster."""
    if not pairs:
        return []
    prompts = tokenizer.apply_chat_template(
        [build_messages(system_prompt, q) for q, _ in pairs], add_generation_prompt=True, tokenize=False
    )
    end = end_of_turn(tokenizer)
    return [
        {"messages": build_messages(system_prompt, q, a), "prompt": prompt, "completion": a + end}
        for (q, a), prompt in zip(pairs, prompts)
    ]


def end_of_turn(tokenizer) -> str:
    """The special token that closes an assistant turn in the tokenizer's own chat template.

    ChatML (SmolLM2) closes turns with `<|im_end|>`, Zephyr (TinyLlama) with `</s>`: render a
    conversation and read the token that follows the assistant's content. The model learns to emit
    it (it is the completion's last label) and generation stops there.
    """
    text = tokenizer.apply_chat_template(build_messages("s", "q", _CONTENT_MARK), tokenize=False)
    tail = text[text.rindex(_CONTENT_MARK) + 1:].lstrip(" ")
    specials = sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()), key=len, reverse=True)
    found = next((token for token in specials if token and tail.startswith(token)), None)
    if found is None:
        raise ConfigError(f"tokenizer {tokenizer.name_or_path}: its chat template ends an assistant turn with "
                          f"{tail[:20]!r}, not a special token, so generation could not stop there")
    return found


def stop_token_ids(tokenizer) -> list[int]:
    """Generation ends at the end-of-turn token, and at eos should a model emit that instead."""
    ids = [tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)), tokenizer.eos_token_id]
    return sorted({i for i in ids if i is not None})


def generation_config(tokenizer, generation: GenerationConfig):
    """The experiment's decoding settings as `transformers.GenerationConfig`, stopping at end of turn."""
    from transformers import GenerationConfig as HFGenerationConfig

    sampling = {"temperature": generation.temperature, "top_p": generation.top_p} if generation.do_sample else {}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return HFGenerationConfig(
        max_new_tokens=generation.max_new_tokens, do_sample=generation.do_sample,
        repetition_penalty=generation.repetition_penalty, eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=pad, bos_token_id=tokenizer.bos_token_id, **sampling,
    )


def write_contract(folder: str | Path, tokenizer, system_prompt: str, generation: GenerationConfig) -> Path:
    """generation_config.json (decoding) and chat_contract.json (system prompt, input budget) into `folder`."""
    folder = Path(folder)
    generation_config(tokenizer, generation).save_pretrained(folder)
    path = folder / CONTRACT_FILE
    write_json_atomic(path, {"format": CONTRACT_FORMAT, "system_prompt": system_prompt,
                             "max_input_tokens": generation.max_input_tokens})
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
    budget = data.get("max_input_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise DataError(f"{path}: 'max_input_tokens' must be a positive integer")
    return ChatContract(data["system_prompt"], budget, read_generation_config(folder))


def read_generation_config(folder: str | Path):
    from transformers import GenerationConfig as HFGenerationConfig

    path = Path(folder) / GENERATION_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing (is {folder} an adapter folder trained by this project?)")
    try:
        return HFGenerationConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable generation config ({first_line(exc)})") from None


def load_tokenizer(name: str | Path, revision: str | None = None):
    """AutoTokenizer for a local folder, or a Hub id at a revision; tolerant of legacy merges.

    Older tokenizer.json files (TinyLlama's included) store merges as "a b" strings, and a few
    Llama merges contain literal spaces ("   " is " " + " "), which `tokenizers` >= 0.23 rejects.
    Such a file is rewritten, in a temporary folder, with each merge as the unique pair of
    vocabulary entries it joins: the same tokenizer, in the current format.
    """
    folder = _local_folder(name, revision)
    tokenizer_json = folder / "tokenizer.json"
    text = tokenizer_json.read_text(encoding="utf-8") if tokenizer_json.exists() else ""
    if _LEGACY_MERGES.search(text):
        tokenizer = _load_with_upgraded_merges(folder, json.loads(text), name)
    else:
        try:
            tokenizer = _tokenizer_class(folder).from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tokenizer {name}: cannot load ({first_line(exc)})") from None
    if not tokenizer.chat_template:
        # Every prompt, label mask and stop token here comes from the template: there is no fallback.
        raise ConfigError(f"tokenizer {name}: no chat template (tokenizer_config.json or chat_template.jinja); "
                          f"use a chat model's tokenizer, or add its template")
    return tokenizer


def _local_folder(name: str | Path, revision: str | None) -> Path:
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        with hub_errors(str(name), revision, "cannot download tokenizer", also=(OSError,)):
            try:
                return Path(snapshot_download(str(name), revision=revision, allow_patterns=_TOKENIZER_FILES))
            except RepositoryNotFoundError as exc:
                if isinstance(exc, GatedRepoError):
                    raise
                raise ConfigError(f"tokenizer {name}: not a local folder, and not found on the Hub") from None
    except HFValidationError:
        raise ConfigError(f"tokenizer {name}: not a local folder, and not found on the Hub") from None


def _tokenizer_class(folder: Path):
    """The class `tokenizer_config.json` names, as AutoTokenizer would pick it.

    Importing it directly matters for `prepare`'s speed: importing AutoTokenizer pulls in the
    model-config machinery and with it torch (about 4 s on two cores); the tokenizer needs neither.
    """
    import transformers

    config = folder / "tokenizer_config.json"
    name = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") if config.exists() else None
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase):
        return cls
    return transformers.AutoTokenizer


def _load_with_upgraded_merges(folder: Path, data: dict[str, Any], name):
    model = data["model"]
    model["merges"] = [_merge_pair(merge, model["vocab"], name) for merge in model["merges"]]
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        for file in folder.iterdir():
            if file.name != "tokenizer.json" and any(fnmatch.fnmatch(file.name, p) for p in _TOKENIZER_FILES):
                shutil.copy(file, tmp)
        Path(tmp, "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return _tokenizer_class(Path(tmp)).from_pretrained(tmp)


def _merge_pair(merge: str | list[str], vocab: dict[str, int], name) -> list[str]:
    if not isinstance(merge, str):
        return merge
    if merge.count(" ") == 1:
        return merge.split(" ")
    pairs = [[merge[:i], merge[i + 1:]] for i, char in enumerate(merge)
             if char == " " and merge[:i] in vocab and merge[i + 1:] in vocab and merge[:i] + merge[i + 1:] in vocab]
    if len(pairs) != 1:
        raise ConfigError(f"tokenizer {name}: cannot read merge {merge!r} in tokenizer.json")
    return pairs[0]

