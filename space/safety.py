"""Medical safety and input hygiene: the disclaimer, emergency guidance, cleaning user text.

Emergency guidance is *prepended* to the model's answer, never substituted for it: keyword
matching cannot tell "my chest hurts and my arm is numb" from "what causes chest pain?", so
a false positive must cost nothing but a banner, while a true positive always puts
"call emergency services" before anything the small model says.
"""
from __future__ import annotations

import re
import unicodedata

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

# (pattern, guidance) in priority order; every matching category adds its line.
_EMERGENCIES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), guidance)
    for pattern, guidance in (
        (
            r"suicid|kill (my|him|her)self|end (my|his|her) (own )?life|take (my|his|her) (own )?life"
            r"|want(s)? to die|self[- ]?harm|hurt(ing)? (my|him|her)self",
            "If you are thinking about suicide or harming yourself, you are not alone: call or text "
            "**988** (US Suicide & Crisis Lifeline), **116 123** (Samaritans, UK/IE), or your local "
            "crisis line, and tell someone near you now.",
        ),
        (
            r"chest (pain|pressure|tightness)|crushing (chest )?pain|heart attack|pain (in|down) (my|his|her|the) left arm",
            "Chest pain can be a heart attack: stop what you are doing, sit down, and call emergency "
            "services. Chew an aspirin only if you are not allergic and a professional agrees.",
        ),
        (
            r"can'?t breathe|cannot breathe|unable to breathe|struggling to breathe|(trouble|difficulty) breathing"
            r"|short(ness)? of breath|not breathing|stopped breathing|chok(e|ing)|throat (is )?(closing|swelling)|anaphyla",
            "Severe trouble breathing, choking or throat swelling needs emergency help now; use an "
            "adrenaline auto-injector if one has been prescribed.",
        ),
        (
            r"overdos|took too many|taken too many|swallowed (bleach|poison|batteries|a battery)|poisoning|poisoned",
            "For an overdose or poisoning, call emergency services or your poison control centre "
            "(1-800-222-1222 in the US) now; do not make the person vomit unless told to.",
        ),
        (
            r"\bstroke\b|face (is )?droop|drooping face|slurred speech|can'?t (speak|talk) properly"
            r"|sudden (numbness|weakness|confusion|severe headache|vision loss)|one side of (my|his|her|the) (body|face)",
            "Stroke signs (face drooping, arm weakness, slurred speech): note the time they started "
            "and call emergency services immediately; every minute counts.",
        ),
        (
            r"(severe|heavy|uncontrolled|profuse)(ly)? bleed|bleeding (heavily|badly|a lot|won'?t stop|that won'?t stop|out)"
            r"|won'?t stop bleeding|can'?t stop (the )?bleeding|(vomiting|coughing up|throwing up) blood",
            "For severe bleeding, press firmly on the wound with a clean cloth without letting go "
            "and call emergency services.",
        ),
        (
            r"unconscious|unresponsive|passed out and|won'?t wake up|seizure|convuls",
            "If someone is unresponsive or having a seizure, call emergency services, keep them "
            "safe from injury and, once it stops, place them on their side.",
        ),
    )
)

# Bidirectional-override characters can make displayed text differ from what is processed.
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def clean_text(text: str) -> str:
    """Drop control characters (keeping newlines and tabs) and surrounding whitespace."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = (
        ch
        for ch in text
        if ch in "\n\t" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI_CONTROLS)
    )
    return "".join(kept).strip()


def emergency_guidance(text: str) -> str:
    """Guidance to show before the answer when `text` describes an emergency, else ""."""
    lines = [guidance for pattern, guidance in _EMERGENCIES if pattern.search(text)]
    if not lines:
        return ""
    return "\n\n".join([_CALL_NOW, *lines])
