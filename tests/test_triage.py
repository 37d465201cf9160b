"""Emergency triage (space/safety.py) on a labelled set and on real flashcard questions.

tests/data/triage_cases.jsonl holds emergency messages in everyday phrasing (typos, no
punctuation, third person, past tense, invisible and look-alike characters, written as
\\u escapes) and ordinary medical questions, many naming an emergency as a topic. Recall is
the share of emergencies that get the banner; banner rate the share of ordinary questions
that get it. The measured numbers are in space/README.md.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from space_support import space_importable

CASES = Path(__file__).resolve().parent / "data" / "triage_cases.jsonl"
MIN_RECALL = 0.98
MAX_BANNER_RATE = 0.10


@pytest.fixture(scope="module")
def safety():
    with space_importable():
        import safety

        yield safety


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labelled_set_is_large_and_covers_every_category(safety, cases):
    emergencies = [c for c in cases if c["emergency"]]
    assert len(emergencies) >= 150 and len(cases) - len(emergencies) >= 150
    named = {c["category"] for c in emergencies}
    assert {e.name for e in safety._EMERGENCIES} <= named


def test_recall_and_banner_rate_on_the_labelled_set(safety, cases):
    emergencies = [c for c in cases if c["emergency"]]
    ordinary = [c for c in cases if not c["emergency"]]
    missed = [c["text"] for c in emergencies if not safety.emergency_guidance(c["text"])]
    bannered = [c["text"] for c in ordinary if safety.emergency_guidance(c["text"])]
    recall = 1 - len(missed) / len(emergencies)
    banner_rate = len(bannered) / len(ordinary)
    print(f"\ntriage: recall {recall:.3f} ({len(emergencies) - len(missed)}/{len(emergencies)} emergencies), "
          f"banner rate {banner_rate:.3f} ({len(bannered)}/{len(ordinary)} ordinary questions)")
    assert recall >= MIN_RECALL, f"missed: {missed}"
    assert banner_rate <= MAX_BANNER_RATE, f"bannered: {bannered}"


def test_most_emergencies_are_put_in_their_own_category(safety, cases):
    """The guidance line should fit the emergency: the labelled category is among those found."""
    emergencies = [c for c in cases if c["emergency"]]
    wrong = Counter(c["category"] for c in emergencies
                    if c["category"] not in safety.emergency_categories(c["text"]))
    share = 1 - sum(wrong.values()) / len(emergencies)
    print(f"\ntriage: own category found for {share:.3f} of emergencies; others by category: {dict(wrong)}")
    assert share >= 0.9


def test_banner_rate_on_real_flashcard_questions(safety, real_flashcards):
    rows = json.loads(real_flashcards.read_text(encoding="utf-8"))
    questions = [row["input"] for row in rows if row["input"].strip()]
    bannered = [q for q in questions if safety.emergency_guidance(q)]
    rate = len(bannered) / len(questions)
    print(f"\ntriage: banner rate {rate:.4f} on {len(questions)} real flashcard questions")
    assert rate <= MAX_BANNER_RATE / 10, bannered[:20]


@pytest.mark.parametrize("message", [
    "I have chest  pain",  # two spaces
    "I have chest\u200bpain",  # a zero-width space between the words
    "my ch\u200best hurts",  # ... or inside one
    "I have \uff43\uff48\uff45\uff53\uff54 \uff50\uff41\uff49\uff4e",  # fullwidth letters
    "my \u0441h\u0435st hurts",  # Cyrillic look-alikes
    "MY CHEST HURTS!!!",
    "my chest hurts and my arm is numb",  # the example safety.py's first docstring could not match
])
def test_unicode_and_typing_tricks_do_not_hide_chest_pain(safety, message):
    assert "cardiac" in safety.emergency_categories(message)


def test_normalise_folds_what_the_patterns_must_not_see(safety):
    assert safety.normalise("Ｃａｎ’t\u00a0 BREATHE\u200b!!  ") == "cant breathe"
    assert safety.normalise("s\u0301he\u00ad  dr\u0430nk") == "she drank"


@pytest.mark.parametrize("question", [
    "What causes chest pain in pericarditis?",
    "What is the mechanism of bleeding in hemophilia A?",
    "A 60-year-old man presents with crushing chest pain. What is the most likely diagnosis?",
    "When to seek urgent medical care when I have Chest pain ?",
])
def test_textbook_questions_about_emergencies_get_no_banner(safety, question):
    assert safety.emergency_categories(question) == []


def test_guidance_starts_with_call_now_and_adds_each_category_line(safety):
    guidance = safety.emergency_guidance("my son swallowed a button battery and now he can't breathe")
    assert guidance.startswith(safety._CALL_NOW)
    lines = {e.name: e.guidance for e in safety._EMERGENCIES}
    assert lines["poisoning"] in guidance and lines["breathing"] in guidance
