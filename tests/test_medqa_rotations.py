"""MedQA answer-order robustness: the four cyclic orders of the options, their scoring (one forward pass per
order where each letter is one token, the same numbers as the harness's per-choice scoring), the registry's
metrics on fixed answers, the benchmark script on the CPU, and result files named after the GPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training import medqa
from training import metric_registry as registry

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a careful medical assistant."
QUESTION = {
    "question": "A 25-year-old man has crushing chest pain. Which enzyme rises first?",
    "options": {"A": "Troponin I", "B": "Lactate dehydrogenase", "C": "Alkaline phosphatase", "D": "Amylase"},
    "answer_idx": "B",
}


def test_the_four_orders_put_the_answer_at_every_letter_once():
    orders = [medqa.rotated(QUESTION, shift) for shift in range(medqa.ROTATIONS)]
    assert orders[0] == QUESTION
    assert [order["answer_idx"] for order in orders] == ["B", "C", "D", "A"]
    for order in orders:
        assert order["options"][order["answer_idx"]] == "Lactate dehydrogenase"
        assert sorted(order["options"].values()) == sorted(QUESTION["options"].values())
        assert list(order["options"]) == list(medqa.LETTERS)
    assert orders[1]["options"] == {"A": "Amylase", "B": "Troponin I", "C": "Lactate dehydrogenase",
                                    "D": "Alkaline phosphatase"}


def row_choosing(shown_letters: list[str], answer: str = "B") -> dict:
    """A medqa.jsonl row whose model picks these letters under the four orders."""
    return {"answer_idx": answer, "rotation_loglik": [{letter: -1.0 - 2.0 * (letter != shown) for letter in "ABCD"}
                                                      for shown in shown_letters]}


def test_rotation_metrics_tell_a_letter_preference_from_knowledge():
    always_a = row_choosing(["A", "A", "A", "A"])  # a preference for A and nothing else
    knows = row_choosing(["B", "C", "D", "A"])  # the right option (B's text) wherever it stands
    fooled = row_choosing(["B", "C", "A", "B"])  # right twice, then A and B: C's text and C's text
    assert medqa.rotation_picks(knows) == [("B", "B"), ("C", "B"), ("D", "B"), ("A", "B")]
    assert [medqa.rotation_accuracy(r) for r in (always_a, knows, fooled)] == [0.25, 1.0, 0.5]
    assert [medqa.rotation_consistent(r) for r in (always_a, knows, fooled)] == [0.0, 1.0, 0.0]
    assert [medqa.letter_share(always_a, x) for x in "ABCD"] == [1.0, 0.0, 0.0, 0.0]
    assert [medqa.letter_share(knows, x) for x in "ABCD"] == [0.25] * 4
    assert [medqa.letter_share(fooled, x) for x in "ABCD"] == [0.25, 0.5, 0.25, 0.0]
    # ties go to the first letter, as the harness's argmax
    assert medqa.rotation_picks({"answer_idx": "A", "rotation_loglik": [dict.fromkeys("ABCD", -1.0)] * 4})[1] == \
        ("A", "D")

    rows = registry.Rows([], [always_a, knows, fooled])
    values = {m.key: m.statistic(rows).value() for m in registry.METRICS if m.method is registry.MEDQA_ORDER}
    assert values == pytest.approx({"medqa_rotation_acc": 1.75 / 3, "medqa_rotation_consistency": 1 / 3,
                                    "medqa_letter_A": 1.5 / 3, "medqa_letter_B": 0.75 / 3, "medqa_letter_C": 0.5 / 3,
                                    "medqa_letter_D": 0.25 / 3})
    assert registry.get("medqa_rotation_acc").statistic(registry.Rows([], [{"answer_idx": "A"}])) is None  # older rows


@pytest.fixture(scope="module")
def tiny(tiny_base):
    from training.generation import load_model

    return load_model(str(tiny_base), None, None)


@pytest.mark.slow
def test_one_pass_per_order_gives_the_harness_per_choice_log_likelihoods(tiny):
    """Letters read from one forward pass's next-token logits equal the harness's four continuations scored one
    by one; a prompt whose choices are not one token each (a trailing space moves into the choice) is scored
    the long way, in the same call."""
    from training.generation import completion_log_likelihoods

    model, tokenizer = tiny
    contexts = [medqa.harness_prompt(medqa.rotated(QUESTION, shift)) for shift in range(medqa.ROTATIONS)]
    contexts.append(medqa.harness_prompt(QUESTION) + " ")
    whole, start = medqa.harness_split(tokenizer, contexts[-1], " A")
    assert len(whole) - start > 1  # so the last context takes the continuation path
    ours = medqa.letter_log_likelihoods(model, tokenizer, contexts, batch_size=2)
    for context, logliks in zip(contexts, ours):
        scored = completion_log_likelihoods(model, tokenizer, [context] * 4, [" " + x for x in "ABCD"], 4,
                                            split=medqa.harness_split)
        assert list(logliks) == list(medqa.LETTERS)
        assert list(logliks.values()) == pytest.approx([-nll for nll, _ in scored], rel=1e-5)


@pytest.mark.slow
def test_every_order_is_scored_as_the_harness_scores_its_prompt(tiny):
    model, tokenizer = tiny
    [row] = medqa.score_questions(model, tokenizer, [QUESTION], SYSTEM, batch_size=3)
    assert row["rotation_loglik"][0] == row["harness_loglik"]  # the first order is the question's own
    for shift, logliks in enumerate(row["rotation_loglik"]):
        context = medqa.harness_prompt(medqa.rotated(QUESTION, shift))
        expected = {}
        for letter in medqa.LETTERS:
            ids, start = medqa.harness_split(tokenizer, context, " " + letter)
            with torch.no_grad():
                log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            expected[letter] = sum(log_probs[j - 1, ids[j]].item() for j in range(start, len(ids)))
        assert logliks == pytest.approx(expected, rel=1e-5), shift


@pytest.mark.slow
def test_bench_runs_on_the_cpu(tmp_path, tiny_base, sample_flashcards):
    """bench/bench_medqa_rotations.py with tiny settings (the GPU run has no second try): exp1 trained through
    the CLIs, both models scored, every MedQA metric with its interval and the paired difference."""
    questions = [medqa.rotated(QUESTION, shift) | {"question": f"{QUESTION['question']} ({shift})"}
                 for shift in range(medqa.ROTATIONS)]
    medqa_file = tmp_path / "medqa.jsonl"
    medqa_file.write_text("".join(json.dumps(q) + "\n" for q in questions))
    result = subprocess.run(
        [sys.executable, "bench/bench_medqa_rotations.py", "--smoke", "--base", str(tiny_base), "--flashcards",
         str(sample_flashcards), "--medqa", str(medqa_file), "--work", str(tmp_path / "work"), "--out",
         str(tmp_path / "out"), "--resamples", "200"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [path] = (tmp_path / "out").glob("*-cpu-medqa-rotations.json")
    record = json.loads(path.read_text())
    medqa_keys = {m.key for m in registry.METRICS if m.population is registry.MEDQA}
    assert record["questions"] == len(questions) and record["smoke"] and record["gpu"] is None
    for model in ("base", "exp1"):
        metrics = record["models"][model]
        assert set(metrics) == medqa_keys
        for key, value in metrics.items():
            assert value["ci_low"] <= value["value"] <= value["ci_high"], (model, key)
        assert sum(metrics[f"medqa_letter_{x}"]["value"] for x in medqa.LETTERS) == pytest.approx(1.0)
    assert set(record["paired_exp1_minus_base"]) == medqa_keys
    assert record["exp1"]["trained_here"] and record["exp1"]["steps"] == 2
    assert record["correct_letter_in_the_dataset"] == dict.fromkeys(medqa.LETTERS, 0.25)
    assert record["timing"]["total_s"] > 0 and "meets_target" in record


@pytest.mark.parametrize("device, slug", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"), (None, "cpu"),
])
def test_result_files_are_named_after_the_gpu_torch_reports(monkeypatch, device, slug):
    """No GPU here: torch's answer about the device is what varies (the naming rule is what is tested)."""
    import datetime

    from bench.common import result_path

    monkeypatch.setattr(torch.cuda, "is_available", lambda: device is not None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: device)
    expected = f"{datetime.date.today()}-{slug}-medqa-rotations.json"
    assert result_path(Path("out"), "medqa-rotations") == Path("out") / expected


def test_no_benchmark_names_a_gpu_itself():
    """Every result file is named through bench.common.result_path: no script spells a GPU in a file name."""
    for script in sorted((REPO_ROOT / "bench").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        assert not [line for line in text.splitlines() if "f\"" in line and any(
            gpu in line.lower() for gpu in ("-h100", "-h200", "-a100"))], script.name
