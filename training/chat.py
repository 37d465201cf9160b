"""The chat contract: how a question becomes a prompt, and what travels with an adapter.

Training text is exactly `prompt + completion`, where `prompt` is the tokenizer's chat template
applied to (system, user) with the generation prompt, and `completion` is `answer + eos_token`.
Generation later applies the same template to the same system prompt, so training and serving
agree token for token.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from common.atomic import write_json_atomic
from common.errors import ConfigError, DataError
from common.hub_errors import first_line
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
