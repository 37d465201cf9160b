"""Cleaning rules for question/answer text, and the row filters that count what they drop.

Text: Unicode NFC, invisible characters removed, HTML tags and entities and Markdown emphasis
leftovers removed (only real tag names, so "<5 mm" or "a < b" survive), whitespace normalised
(runs of spaces collapsed, line breaks kept, at most one blank line).
Rows: empty question or answer, too short or too long, and exact duplicates of the normalised
(question, answer) pair are dropped; every drop is counted under its reason.
"""
from __future__ import annotations

import functools
import hashlib
import html
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

DROP_REASONS = ("empty_question", "empty_answer", "too_short", "too_long", "duplicate")

# Zero-width and other invisible format characters, and C0/C1 controls other than tab and newline.
_INVISIBLE = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_BLOCK_TAGS = "br|p|div|li|ul|ol|tr|td|th|table|tbody|thead|hr|h[1-6]|blockquote|pre"
_INLINE_TAGS = "b|i|u|s|em|strong|span|sup|sub|a|font|code|small|big|mark|strike|del|ins|abbr|center|img"
# Attributes need a value, so "a <b and c> d" is not taken for a tag.
_ATTRIBUTES = r"""(?:\s+[A-Za-z_:][-\w:.]*\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>]+))*\s*/?"""
_BLOCK_TAG = re.compile(rf"</?(?:{_BLOCK_TAGS}){_ATTRIBUTES}>", re.IGNORECASE)
_INLINE_TAG = re.compile(rf"</?(?:{_INLINE_TAGS}){_ATTRIBUTES}>", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_BOLD_STARS = re.compile(r"\*\*")  # paired or stray, never legitimate in flashcard text
_BOLD_UNDERSCORES = re.compile(r"(?<!\w)__(?=[^\s_])(.+?)(?<=[^\s_])__(?!\w)")  # only pairs: "____" is a cloze blank
_SINGLE_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?![\w*])")  # *word* but not 5 * 3 * 2
_HEADING = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    # Each rule runs only when its marker character is present: most rows have none (speed).
    if "<" in text:
        text = _INLINE_TAG.sub("", _BLOCK_TAG.sub("\n", text))
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)  # after tags: "&lt;b&gt;" stays text
    if "*" in text:
        text = _BOLD_STARS.sub("", _SINGLE_EMPHASIS.sub(r"\1", text))
    if "__" in text:
        text = _BOLD_UNDERSCORES.sub(r"\1", text)
    if "#" in text:
        text = _HEADING.sub("", text)
    # Whitespace runs inside a line become one space; line breaks stay, at most one blank line.
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def normalise(text: str) -> str:
    """Comparison and split key: compatibility forms folded (NFKC: fullwidth letters, ligatures), case-folded,
    whitespace runs as one space, trailing punctuation dropped; near-duplicates such as "What is ＡＣＥ?",
    "what is ace" and "What  is ACE ?" share a key, so they land in one split."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split()).rstrip(_trailing())


def _is_trailing(char: str) -> bool:
    return unicodedata.category(char).startswith("P") or char.isspace()


@functools.cache
def _trailing() -> str:
    """Every punctuation or space character of the Basic Multilingual Plane: what normalise strips at the end.
    Built on first use, not at import: the scan takes ~16 ms, and every CLI command imports this module."""
    return "".join(c for c in map(chr, range(0x10000)) if _is_trailing(c))


def question_id(question: str) -> str:
    """Stable row id shared by every row with the same normalised question."""
    return hashlib.sha256(normalise(question).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Row:
    id: str
    question: str
    answer: str


def clean_rows(questions: list[str], answers: list[str], min_chars: int, max_chars: int) -> tuple[list[Row], Counter]:
    """Clean and filter; returns kept rows (input order) and a count per drop reason."""
    dropped: Counter = Counter({reason: 0 for reason in DROP_REASONS})
    seen: set[tuple[str, str]] = set()
    kept: list[Row] = []
    for raw_question, raw_answer in zip(questions, answers, strict=True):
        question, answer = clean_text(raw_question), clean_text(raw_answer)
        reason = drop_reason(question, answer, min_chars, max_chars)
        if reason is None:
            key = (normalise(question), normalise(answer))
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(Row(question_id(question), question, answer))
    return kept, dropped


def drop_reason(question: str, answer: str, min_chars: int, max_chars: int) -> str | None:
    if not question:
        return "empty_question"
    if not answer:
        return "empty_answer"
    if min(len(question), len(answer)) < min_chars:
        return "too_short"
    if max(len(question), len(answer)) > max_chars:
        return "too_long"
    return None
