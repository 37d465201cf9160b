"""MedQA-USMLE 4-option accuracy by log-likelihood, two ways, on the same questions.

- chat (`medqa_accuracy`): each question is put to the model in its chat format with the four options
  listed; each option's text is then scored as the assistant's answer, and the option with the highest
  mean log-probability per token wins (length-normalised, so long options are not penalised).
- harness (`medqa_harness_acc`, `medqa_harness_acc_norm`): lm-evaluation-harness's zero-shot
  `medqa_4options` task exactly (lm_eval/tasks/medqa/medqa.yaml and preprocess_medqa.py at
  HARNESS_COMMIT), so the number sits beside published ones: the plain prompt
  "Question: {question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:", the choices are the letters,
  each scored as the continuation " " + letter; its tokens are those of tokenizer(prompt +
  continuation) after the first len(tokenizer(prompt)) (the harness's `_encode_pair`). acc is the
  argmax of the summed log-likelihood, acc_norm of log-likelihood / len(choice) in characters; with
  one-letter choices the two coincide.
- answer order (`medqa_rotation_*`, `medqa_letter_*`): the harness's prompt and letter choice, under the four
  cyclic rotations of the options (`rotated`: the correct answer stands once at each of A-D), so that a
  preference for a letter cannot pass for knowledge: accuracy averaged over the four orders, the share of
  questions answered with the same option text in all four, and how often each letter is chosen. Rotation 0
  is the harness's own prompt. Where each letter is one token after the prompt (the harness split), one
  forward pass per prompt gives all four letters' log-likelihoods from its next-token logits.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from common.errors import DataError, HubError
from common.hub_errors import hub_errors
from common.hub_ids import is_hub_id

LETTERS = ("A", "B", "C", "D")
HARNESS_TASK = "medqa_4options"
HARNESS_REPO = "EleutherAI/lm-evaluation-harness"
HARNESS_COMMIT = "4e7e0d47f33bc71070c1d38394bafbb52b117163"  # where the prompt and scoring below were read
HARNESS_CHOICES = LETTERS  # doc_to_choice: ['A', 'B', 'C', 'D']
HARNESS_DELIMITER = " "  # the task config's target_delimiter default
ROTATIONS = len(LETTERS)  # cyclic shifts 0-3 of the options: the answer visits every letter once
# A CPU default for medqa_limit "auto": 8 forward passes per question make all 1,273 slow there.
CPU_LIMIT = 200
MEDQA_FILE_SUFFIXES = (".jsonl",)  # a local MedQA source is a JSONL file


def load_questions(source: str, limit: int | None = None, split: str = "test", revision: str | None = None) -> list[dict]:
    """Questions from a local JSONL file or a Hub dataset, each {question, options{A-D}, answer_idx}."""
    rows = _read_hub(source, split, revision) if is_hub_id(source, MEDQA_FILE_SUFFIXES) else _read_jsonl(Path(source))
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


def source_record(source: str, split: str = "test", revision: str | None = None) -> dict[str, Any]:
    """What was scored, for metrics.json and the card: a file's sha256, or the Hub commit a revision resolves to."""
    if not is_hub_id(source, MEDQA_FILE_SUFFIXES):
        from training.provenance import sha256_file

        path = Path(source)
        return {"type": "file", "path": str(path), "sha256": sha256_file(path) if path.is_file() else None}
    from huggingface_hub import HfApi

    try:
        with hub_errors(source, revision, "cannot resolve MedQA dataset"):
            # From the Hub, or from the local cache when offline or the Hub is down.
            commit = HfApi().resolve_revision(source, repo_type="dataset", revision=revision).resolved
    except HubError as exc:
        raise HubError(f"{exc} (or use a local copy: --set medqa=path/to/medqa.jsonl, or skip it: --set medqa=null)") from None
    return {"type": "hub", "id": source, "split": split, "requested_revision": revision, "revision": commit}


def _read_hub(dataset_id: str, split: str, revision: str | None) -> list[dict]:
    from datasets import load_dataset
    from huggingface_hub import HfApi

    action = f"cannot load MedQA dataset split {split!r} of"
    # `also`: datasets raises many types for "not found" (no such split, no data files)
    with hub_errors(dataset_id, revision, action, also=(Exception,)):
        # Resolved first (from the Hub, or the cache when offline): its errors say why, datasets' do not.
        commit = HfApi().resolve_revision(dataset_id, repo_type="dataset", revision=revision).resolved
        return list(load_dataset(dataset_id, split=split, revision=commit))


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


def harness_prompt(question: dict) -> str:
    """preprocess_medqa.doc_to_text, with our field names (sent1 = question, ending0-3 = options A-D)."""
    answers = "".join(f"{letter}. {question['options'][letter]}\n" for letter in LETTERS)
    return f"Question: {question['question']}\n{answers}Answer:"


def harness_split(tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """The harness's `_encode_pair` for a causal model: whole = tok(context + continuation), the
    continuation is whole[len(tok(context)):] (context trailing spaces moved to the continuation)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    return whole, len(tokenizer(context)["input_ids"])


def harness_pick(logliks: Sequence[float], choices: Sequence[str] = HARNESS_CHOICES, normalise: bool = False) -> int:
    """The harness's multiple-choice pick: argmax of the summed log-likelihoods (acc), or of
    log-likelihood / len(choice) (acc_norm); ties go to the first, as np.argmax."""
    import numpy as np

    scores = np.asarray(logliks, dtype=np.float64)
    if normalise:
        scores = scores / np.array([float(len(choice)) for choice in choices])
    return int(np.argmax(scores))


def rotated(question: dict, shift: int) -> dict:
    """The question with every option moved `shift` letters on, cyclically (the option at letter i is shown
    at letter (i + shift) mod 4), and its answer letter moved with it."""
    options = {LETTERS[(i + shift) % ROTATIONS]: question["options"][letter] for i, letter in enumerate(LETTERS)}
    answer = LETTERS[(LETTERS.index(question["answer_idx"]) + shift) % ROTATIONS]
    return {**question, "options": {letter: options[letter] for letter in LETTERS}, "answer_idx": answer}


def score_questions(model, tokenizer, questions: Sequence[dict], system_prompt: str, batch_size: int) -> list[dict]:
    """Per question, every method: the chat method's chosen letter, whether it is right and each option's
    mean log-prob per token; the harness method's summed log-likelihood of each choice and its pick; and
    the harness's log-likelihoods under each rotation of the options (the first is the harness's own)."""
    from training.generation import completion_log_likelihoods

    prompts, completions = [], []
    for question in questions:
        prompt = build_prompt(tokenizer, system_prompt, question)
        for letter in LETTERS:
            prompts.append(prompt)
            completions.append(question["options"][letter])
    scored = completion_log_likelihoods(model, tokenizer, prompts, completions, batch_size)
    contexts = [harness_prompt(rotated(question, shift)) for question in questions for shift in range(ROTATIONS)]
    orders = letter_log_likelihoods(model, tokenizer, contexts, batch_size)
    results = []
    for q, question in enumerate(questions):
        options = scored[q * len(LETTERS):(q + 1) * len(LETTERS)]
        mean_log_probs = {letter: -nll / max(n, 1) for letter, (nll, n) in zip(LETTERS, options)}
        rotations = orders[q * ROTATIONS:(q + 1) * ROTATIONS]
        logliks = rotations[0]  # shift 0: the options in their own order, the harness's prompt
        chosen = pick_option(mean_log_probs)
        results.append({
            "question": question["question"], "answer_idx": question["answer_idx"], "predicted": chosen,
            "correct": chosen == question["answer_idx"], "option_mean_log_prob": mean_log_probs,
            "harness_loglik": logliks, "harness_predicted": LETTERS[harness_pick(list(logliks.values()))],
            "rotation_loglik": rotations,
        })
    return results


def letter_log_likelihoods(model, tokenizer, contexts: Sequence[str], batch_size: int) -> list[dict[str, float]]:
    """Per harness prompt, the summed log-likelihood of each choice (" A" .. " D") as the harness splits it.

    Where each choice is one token after the context's own tokens (harness_split's encoding: tok(context +
    choice) is tok(context) and one more token; so for every question with the tokenizers here), the four come
    from one forward pass's next-token log-probabilities; any other prompt (one ending in spaces, which the
    harness moves into the choice, or a choice of several tokens) has each choice scored as a continuation,
    four passes (training.generation.completion_log_likelihoods).
    """
    from training.generation import completion_log_likelihoods, next_token_log_probs

    continuations = [HARNESS_DELIMITER + choice for choice in HARNESS_CHOICES]
    one_pass, rows, candidates, others = [], [], [], []
    for i, context in enumerate(contexts):
        context_ids = tokenizer(context)["input_ids"]
        wholes = [tokenizer(context + continuation)["input_ids"] for continuation in continuations]
        if context == context.rstrip() and all(whole[:-1] == context_ids for whole in wholes):
            one_pass.append(i)
            rows.append(context_ids)
            candidates.append([whole[-1] for whole in wholes])
        else:
            others.append(i)
    results: list[dict[str, float]] = [{}] * len(contexts)
    for i, log_probs in zip(one_pass, next_token_log_probs(model, tokenizer, rows, candidates, batch_size)):
        results[i] = dict(zip(LETTERS, log_probs))
    scored = completion_log_likelihoods(model, tokenizer, [contexts[i] for i in others for _ in continuations],
                                        continuations * len(others), batch_size, split=harness_split)
    for k, i in enumerate(others):
        choices = scored[k * len(LETTERS):(k + 1) * len(LETTERS)]
        results[i] = {letter: -nll for letter, (nll, _) in zip(LETTERS, choices)}
    return results


def harness_correct(rows: Sequence[dict], normalise: bool) -> list[float]:
    """1.0 where the harness pick (acc, or acc_norm when normalise) is the answer, from medqa.jsonl rows."""
    return [float(LETTERS[harness_pick([row["harness_loglik"][k] for k in LETTERS], normalise=normalise)]
                  == row["answer_idx"]) for row in rows]


def rotation_picks(row: dict) -> list[tuple[str, str]]:
    """(letter chosen, the option it stood for in the question's own order) under each rotation."""
    picks = []
    for shift, logliks in enumerate(row["rotation_loglik"]):
        shown = harness_pick([logliks[letter] for letter in LETTERS])
        picks.append((LETTERS[shown], LETTERS[(shown - shift) % ROTATIONS]))
    return picks


def rotation_accuracy(row: dict) -> float:
    """The share of the four orders in which the right option was chosen."""
    return sum(option == row["answer_idx"] for _, option in rotation_picks(row)) / ROTATIONS


def rotation_consistent(row: dict) -> float:
    """1.0 when the same option (the same text) was chosen in all four orders."""
    return float(len({option for _, option in rotation_picks(row)}) == 1)


def letter_share(row: dict, letter: str) -> float:
    """The share of the four orders in which `letter` was chosen."""
    return sum(shown == letter for shown, _ in rotation_picks(row)) / ROTATIONS
