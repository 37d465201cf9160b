"""MedQA-USMLE 4-option accuracy by option log-likelihood.

Each question is put to the model in its chat format with the four options listed; each option's
text is then scored as the assistant's answer, and the option with the highest mean log-probability
per token wins (length-normalised, so long options are not penalised for their length).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from training.errors import DataError, HubError

LETTERS = ("A", "B", "C", "D")


def load_questions(source: str, limit: int | None = None, split: str = "test", revision: str | None = None) -> list[dict]:
    """Questions from a local JSONL file or a Hub dataset, each {question, options{A-D}, answer_idx}."""
    path = Path(source)
    rows = _read_jsonl(path) if path.suffix == ".jsonl" or path.exists() else _read_hub(source, split, revision)
    rows = rows[:limit] if limit else rows
    for number, row in enumerate(rows, 1):
        _check(row, f"{source} row {number}")
    if not rows:
        raise DataError(f"{source}: no MedQA questions")
    return [{"question": r["question"], "options": {k: r["options"][k] for k in LETTERS}, "answer_idx": r["answer_idx"]} for r in rows]


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: MedQA file not found") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    return rows


def _read_hub(dataset_id: str, split: str, revision: str | None) -> list[dict]:
    from datasets import load_dataset

    try:
        return list(load_dataset(dataset_id, split=split, revision=revision))
    except Exception as exc:  # datasets raises many types for "not reachable / not found"
        raise HubError(f"cannot load MedQA dataset {dataset_id!r} split {split!r}: {exc.__class__.__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def _check(row: Any, where: str) -> None:
    if not isinstance(row, dict) or not isinstance(row.get("question"), str):
        raise DataError(f"{where}: expected an object with a 'question' string")
    options = row.get("options")
    if not isinstance(options, dict) or any(not isinstance(options.get(k), str) for k in LETTERS):
        raise DataError(f"{where}: 'options' must map each of A, B, C, D to a string")
    if row.get("answer_idx") not in LETTERS:
        raise DataError(f"{where}: 'answer_idx' must be one of A, B, C, D (got {row.get('answer_idx')!r})")


def build_prompt(tokenizer, system_prompt: str, question: dict) -> str:
    """The question with its lettered options, in the same chat format as the flashcard prompts."""
    from training.chat import format_prompt

    options = "\n".join(f"{letter}. {question['options'][letter]}" for letter in LETTERS)
    return format_prompt(tokenizer, system_prompt, f"{question['question']}\n\n{options}")


def pick_option(mean_log_probs: dict[str, float]) -> str:
    return max(LETTERS, key=lambda letter: mean_log_probs[letter])


def score_questions(model, tokenizer, questions: Sequence[dict], system_prompt: str, batch_size: int) -> list[dict]:
    """Per question: the chosen letter, whether it is right, and each option's mean log-prob per token."""
    from training.generation import completion_log_likelihoods

    prompts, completions = [], []
    for question in questions:
        prompt = build_prompt(tokenizer, system_prompt, question)
        for letter in LETTERS:
            prompts.append(prompt)
            completions.append(question["options"][letter])
    scored = completion_log_likelihoods(model, tokenizer, prompts, completions, batch_size)
    results = []
    for q, question in enumerate(questions):
        options = scored[q * len(LETTERS):(q + 1) * len(LETTERS)]
        mean_log_probs = {letter: -nll / max(n, 1) for letter, (nll, n) in zip(LETTERS, options)}
        chosen = pick_option(mean_log_probs)
        results.append({
            "question": question["question"], "answer_idx": question["answer_idx"], "predicted": chosen,
            "correct": chosen == question["answer_idx"], "option_mean_log_prob": mean_log_probs,
        })
    return results
