"""Example answers: the base and an adapter side by side on a fixed set of questions, for the model card.

Two kinds, both read from what `evaluate` wrote (training.layout):
- the example questions (EvalConfig.example_questions: the original README's two), answered by every
  model in phase 1 and kept in eval/<model>/examples.jsonl; they are not in the test split, so they
  have no reference answer;
- test questions chosen by a rule, not by hand: the adapter's best, median and worst per-example
  ROUGE-L (ties broken by id), with their reference answers, from predictions.jsonl.

Phase 2 records the adapter's choice in its metrics.json (`examples`, see `choose`), so anyone holding a
pushed revision's eval/ folder finds the same questions; `side_by_side` pairs the answers for the card.
"""
from __future__ import annotations

from dataclasses import dataclass

from training.layout import EvalDir

SCORE = "rougeL"  # the per-example score (predictions.jsonl `scores`) the test questions are chosen by
SPREAD = ("best", "median", "worst")


def choose(predictions: list[dict]) -> dict:
    """metrics.json's `examples`: the test questions at the best, median and worst SCORE (highest first,
    ties by id; the median is the lower middle of an even count). Fewer when the split is that small."""
    ranked = sorted(predictions, key=lambda row: (-row["scores"][SCORE], row["id"]))
    positions = {"best": 0, "median": (len(ranked) - 1) // 2, "worst": len(ranked) - 1}
    chosen: dict[str, dict] = {}
    for rank in SPREAD if ranked else ():
        row = ranked[positions[rank]]
        chosen.setdefault(row["id"], {"id": row["id"], "rank": rank, SCORE: row["scores"][SCORE]})
    return {"score": SCORE, "test": list(chosen.values())}


@dataclass(frozen=True)
class Example:
    """One question with both models' answers (None where a model has none) and why it is shown."""

    question: str
    answer: str
    base_answer: str | None
    reference: str | None = None  # test questions only
    id: str | None = None
    rank: str | None = None  # best / median / worst, for test questions
    score: float | None = None  # the adapter's SCORE on it
    base_score: float | None = None


def side_by_side(model: EvalDir, base: EvalDir | None, chosen: dict | None) -> list[Example]:
    """The example questions, then the chosen test questions, each with the base's answer beside the model's."""
    base_examples = {row["question"]: row["prediction"] for row in (base.examples() if base else [])}
    examples = [Example(row["question"], row["prediction"], base_examples.get(row["question"]))
                for row in model.examples()]
    if not chosen:
        return examples
    score = chosen["score"]
    rows = {row["id"]: row for row in model.predictions()}
    base_rows = {row["id"]: row for row in (base.predictions() if base and base.predictions_file.exists() else [])}
    for pick in chosen["test"]:
        row, base_row = rows[pick["id"]], base_rows.get(pick["id"])
        examples.append(Example(row["question"], row["prediction"], base_row["prediction"] if base_row else None,
                                row["reference"], row["id"], pick["rank"], row["scores"][score],
                                base_row["scores"][score] if base_row else None))
    return examples
