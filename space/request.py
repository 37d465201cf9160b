"""Request hygiene: everything the Space does to one chat request before the model sees it.

`check_input` is called once per request (by the chat and by the comparison), outside the GPU
function, so that a rejected request costs no GPU quota; rejections are friendly replies, not
errors. It reads the message and the history in either shape gradio sends them (web UI: content
as a list of parts; API: a string), removes control and bidirectional-override characters, turns
an empty or over-long message into a notice, and templates system prompt + history + message
within the chat contract's input budget, dropping the oldest turns first. The work is bounded
before anything is done per character: a 40 MB history costs no more than a short one.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant import Assistant

MAX_INPUT_CHARS = 4000
# Raw history characters read per token of the input budget, before any cleaning or tokenizing:
# generous (an English token is about 4 characters), so that only what cannot fit is skipped.
HISTORY_CHARS_PER_TOKEN = 8
EMPTY_INPUT = "Please type a medical question, for example: *What causes iron deficiency anaemia?*"
# Bidirectional-override characters can make displayed text differ from what is processed.
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def too_long_chars(length: int) -> str:
    return (
        f"Your message is {length:,} characters long; this demo reads at most {MAX_INPUT_CHARS:,}. "
        "Please shorten it to the question itself."
    )


def too_long_tokens(limit: int) -> str:
    return f"Your message is too long for this model (it reads at most {limit:,} tokens). Please shorten it."


@dataclass(frozen=True)
class Prompt:
    """A request ready for the GPU: token ids of the templated conversation."""

    input_ids: list[int]
    dropped_turns: int


def check_input(assistant: Assistant, message, history: list) -> tuple[str, Prompt | None]:
    """(cleaned question, prompt), or (friendly notice, None) when the request cannot be served."""
    question = clean_text(message_text(message))
    if not question:
        return EMPTY_INPUT, None
    if len(question) > MAX_INPUT_CHARS:
        return too_long_chars(len(question)), None
    prompt = _fit_prompt(assistant, question, history)
    if prompt is None:
        return too_long_tokens(assistant.contract.max_input_tokens), None
    return question, prompt


def _fit_prompt(assistant: Assistant, question: str, history: list) -> Prompt | None:
    """System + history + question within max_input_tokens, dropping the oldest turns first;
    None when the question alone does not fit."""
    limit = assistant.contract.max_input_tokens
    turns = normalise_history(history, max_chars=limit * HISTORY_CHARS_PER_TOKEN)
    dropped = 0
    while True:
        ids = _encode(assistant, turns + [{"role": "user", "content": question}])
        if len(ids) <= limit:
            return Prompt(input_ids=ids, dropped_turns=dropped)
        if not turns:
            return None
        turns, dropped = turns[1:], dropped + 1


def _encode(assistant: Assistant, turns: list[dict]) -> list[int]:
    messages = [{"role": "system", "content": assistant.contract.system_prompt}, *turns]
    text = assistant.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return assistant.tokenizer(text).input_ids


def normalise_history(history: list, max_chars: float = math.inf) -> list[dict]:
    """`{role, content: str}` turns from web UI history (content = list of text parts) or API
    history (content = str), cleaned like the message; files, components and empty turns are
    dropped. Only the newest messages whose raw text totals at most `max_chars` are read, counted
    before any per-character cleaning."""
    turns, size = [], 0
    for message in reversed(history or []):
        if not isinstance(message, dict):
            continue
        text = message_text(message.get("content"))
        size += len(text)
        if size > max_chars:
            break
        if message.get("role") in ("user", "assistant") and (text := clean_text(text)):
            turns.append({"role": message["role"], "content": text})
    return turns[::-1]


def message_text(content) -> str:
    """The text of a message's content: a string, a `{type: text}` part, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content["text"] if content.get("type") == "text" and isinstance(content.get("text"), str) else ""
    if isinstance(content, (list, tuple)):
        return "\n".join(part for part in map(message_text, content) if part)
    return ""


def clean_text(text: str) -> str:
    """Drop control characters (keeping newlines and tabs) and surrounding whitespace."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = (
        ch
        for ch in text
        if ch in "\n\t" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI_CONTROLS)
    )
    return "".join(kept).strip()
