"""The bundled sample flashcards: hand-written, well-established medical facts for the offline demo and tests.

JSON Lines in the medalpaca layout (`instruction`, `input` = question, `output` = answer), so it
goes through the same reader as the real dataset.
"""
from pathlib import Path

SAMPLE_PATH = Path(__file__).resolve().parent / "assets" / "sample_flashcards.jsonl"
