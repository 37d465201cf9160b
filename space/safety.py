"""Medical safety: the disclaimer, and emergency triage that puts call-now guidance before an answer.

Emergency guidance is *prepended* to the model's answer, never substituted for it: pattern
matching still misreads some messages, so a false alarm must cost nothing but a banner, while a
true positive always puts "call emergency services" before anything the small model says.

Triage tells a person's situation ("my chest hurts and my arm is numb", "she drank bleach") from a
textbook question that names the same thing ("What causes chest pain in pericarditis?"): the
message is folded first (Unicode tricks, case, punctuation, common misspellings), then matched
against call-now categories. This module is the engine; the patterns, word lists and guidance
lines are data in triage_rules.py. Recall and banner rate are measured in tests/test_triage.py.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import triage_rules as rules

DISCLAIMER = (
    "**Not medical advice.** This is a research demo of a small language model fine-tuned on "
    "medical flashcards. It can be wrong or out of date and does not know your situation. "
    "Ask a doctor, nurse or pharmacist about your health. **In an emergency, call your local "
    "emergency number (911 in the US, 112 in the EU, 999 in the UK) now.**"
)

_CALL_NOW = (
    "⚠️ **This may be an emergency. Call your local emergency number now** (911 in the US, "
    "112 in the EU, 999 in the UK) or go to the nearest emergency department. "
    "Do not wait for an answer from this demo."
)


# ---- normalising ---------------------------------------------------------------------------
# Matching runs on a folded copy of the message (the answer and the model see the original):
# NFKC folds fullwidth and other compatibility forms; format characters (category Cf: zero-width
# spaces and joiners, soft hyphens, direction marks) are dropped; accents and stacked combining
# marks are stripped; Cyrillic and Greek look-alikes become the Latin letters they imitate;
# apostrophes are removed ("can't" -> "cant") and other punctuation becomes a space, so that
# "chest-pain!!", "chest  pain" and "ｃｈｅｓｔ　ｐａｉｎ" all read "chest pain".
_LOOKALIKES = str.maketrans(*rules.LOOKALIKES)
_APOSTROPHES = str.maketrans("", "", rules.APOSTROPHES)
_NOT_WORD = re.compile(r"[^a-z0-9.]+|(?<![0-9])\.|\.(?![0-9])")
_REPEATED_LETTER = re.compile(r"([a-z])\1{2,}")  # "pleeease" -> "pleease", "helppp" -> "helpp"


def normalise(text: str, format_chars: str = "") -> str:
    """The message folded for matching (see above); format characters become `format_chars`."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(format_chars if unicodedata.category(ch) == "Cf" else ch
                   for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch) not in ("Mn", "Me"))
    text = text.translate(_LOOKALIKES).casefold().translate(_APOSTROPHES)
    text = _REPEATED_LETTER.sub(r"\1\1", text)
    words = _NOT_WORD.sub(" ", text).split()
    return " ".join(rules.SPELLING.get(word, word) for word in words)


# ---- what is a person's situation ----------------------------------------------------------
# Topic words ("chest pain", "bleeding", "seizure") also fill textbook questions, so on their own
# they raise the banner only in a message about someone now: first or third person, a time word,
# a plea for help, or a plain statement rather than a question. Phrasings that only describe an
# event ("my chest hurts", "took 40 tablets", "is not breathing") need no such marker.


def _rx(pattern: str) -> re.Pattern[str]:
    for name, fragment in rules.FRAGMENTS.items():
        pattern = pattern.replace(f"<{name}>", fragment)
    return re.compile(pattern)


_FIRST_PERSON = _rx(rules.FIRST_PERSON)
_SITUATION = _rx(rules.SITUATION)
_VIGNETTE = _rx(rules.VIGNETTE)
_HYPOTHETICAL = _rx(rules.HYPOTHETICAL)
_QUESTION_START = _rx(rules.QUESTION_START)
_QUERY_WORDS = _rx(rules.QUERY_WORDS)


def describes_a_situation(text: str) -> bool:
    """Whether the (normalised) message is about a person now rather than a topic."""
    if _HYPOTHETICAL.search(text):
        return False
    if _FIRST_PERSON.search(text) or _SITUATION.search(text):
        return True
    # a statement that is not a search query: "chest pain and sweating", "dad collapsed"
    return not _QUESTION_START.search(text) and not _QUERY_WORDS.search(text)


def is_textbook(text: str) -> bool:
    """A vignette or a generic question, not a message from someone in trouble."""
    return bool(_VIGNETTE.search(text)) and not _FIRST_PERSON.search(text)


# ---- the call-now categories ---------------------------------------------------------------

Groups = tuple[tuple[re.Pattern[str], ...], ...]


@dataclass(frozen=True)
class Emergency:
    """A call-now category, compiled. It matches when any `alone` group matches, or when any
    `in_situation` group matches a message that describes a situation; a group matches when all
    its patterns do."""

    name: str
    guidance: str
    alone: Groups
    in_situation: Groups

    @classmethod
    def compile(cls, category: rules.Category) -> Emergency:
        return cls(category.name, category.guidance, _groups(category.alone), _groups(category.in_situation))

    def matches(self, text: str, situation: bool) -> bool:
        groups = self.alone + (self.in_situation if situation else ())
        return any(all(p.search(text) for p in group) for group in groups)


def _groups(alternatives: list[str | tuple[str, ...]]) -> Groups:
    """Each alternative (a pattern, or a tuple of patterns that must all match) as compiled patterns."""
    return tuple(tuple(_rx(p) for p in ((a,) if isinstance(a, str) else a)) for a in alternatives)


_EMERGENCIES: tuple[Emergency, ...] = tuple(map(Emergency.compile, rules.CATEGORIES))


def emergency_categories(text: str) -> list[str]:
    """The call-now categories the message describes, most urgent first; [] for a textbook question.

    An invisible character may hide inside a word ("ble\u200bach") or stand between two words
    ("chest\u200bpain"): both readings are tried.
    """
    found: set[str] = set()
    for folded in {normalise(text), normalise(text, format_chars=" ")}:
        if folded and not is_textbook(folded):
            situation = describes_a_situation(folded)
            found.update(e.name for e in _EMERGENCIES if e.matches(folded, situation))
    return [e.name for e in _EMERGENCIES if e.name in found]


def emergency_guidance(text: str) -> str:
    """Guidance to show before the answer when `text` describes an emergency, else ""."""
    names = set(emergency_categories(text))
    if not names:
        return ""
    return "\n\n".join([_CALL_NOW, *(e.guidance for e in _EMERGENCIES if e.name in names)])
