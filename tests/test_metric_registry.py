"""A metric is one entry in training/metric_registry.py: a throw-away entry reaches comparison.md,
the plot, the model card's tables and its model-index, with nothing else changed (as
test_settings_flow.py does for config fields)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from training import metric_registry as registry
from training.config import EvalConfig, ExperimentConfig, dump
from training.layout import EvalRoot, RunDir, RunsDir, write_jsonl

REFERENCES = ["It lowers blood glucose.", "A heart rate above 100 per minute.", "The phrenic nerve (C3-C5).",
              "Hemoglobin."]
ANSWERS = {"base": ["Sugar.", "A fast heart.", "The vagus nerve.", "Blood."],
           "exp1": ["It lowers glucose.", "A heart rate above 100.", "The phrenic nerve.", "Hemoglobin."]}
MEDQA = [("A", "A"), ("B", "C"), ("D", "D")]  # (answer, predicted)


def answer_characters(rows: registry.Rows):
    from training import metrics as M

    return M.mean([len(r["prediction"]) for r in rows.predictions])


THROWAWAY = registry.Metric(
    "answer_chars", "Answer length (characters)", registry.TEST,
    registry.Method("answer_chars", "Answer length", lambda: "characters of each generated answer, averaged",
                    note=" (no better or worse).", index_args=lambda settings: {"unit": "characters"}),
    answer_characters, "answer_length", decoded=True, fmt="{:.1f}")


@pytest.fixture
def throwaway():
    registry.METRICS.append(THROWAWAY)
    try:
        yield THROWAWAY
    finally:
        registry.METRICS.remove(THROWAWAY)


def phase_one(root: Path, name: str) -> None:
    """eval/<name>/ as phase 1 writes it: run.json, predictions.jsonl, medqa.jsonl (fixed rows, no model)."""
    from training import metrics as M

    answers = ANSWERS[name]
    rouge = M.rouge_scores(answers, REFERENCES)
    nltk = M.nltk_sentence_bleu(answers, REFERENCES)
    stats = M.bleu_statistics(answers, REFERENCES)
    folder = EvalRoot(root).model(name)
    folder.path.mkdir(parents=True)
    write_jsonl(folder.predictions_file, [
        {"id": f"q{i}", "question": f"question {i}", "reference": ref, "prediction": answers[i],
         "scores": {"bleu": M.sentence_bleu_from_stats(stats[i]), "nltk_sentence_bleu": float(nltk[i]),
                    **{kind: float(values[i]) for kind, values in rouge.items()},
                    "nll": 3.0 + i + (name == "base"), "answer_tokens": 5 + i, "reference_tokens": 6}}
        for i, ref in enumerate(REFERENCES)])
    write_jsonl(folder.medqa_file, [
        {"question": f"medqa {i}", "answer_idx": answer, "predicted": predicted, "correct": answer == predicted,
         "harness_loglik": {letter: -1.0 - (letter != predicted) for letter in "ABCD"}, "harness_predicted": predicted,
         "rotation_loglik": [{letter: -1.0 - (letter != predicted) for letter in "ABCD"}] * 4}
        for i, (answer, predicted) in enumerate(MEDQA)])
    folder.run_file.write_text(json.dumps({
        "model": name, "n": len(REFERENCES), "medqa_n": len(MEDQA),
        "decoding": {"max_new_tokens": 8, "do_sample": False, "temperature": None, "top_p": None,
                     "repetition_penalty": 1.0, "stop_tokens": ["</s>"], "seed": None, "from": "adapter exp1"},
        "medqa_source": {"type": "file", "path": "medqa.jsonl", "sha256": "0" * 64, "limit": None, "n": 3},
        "data": {"split": "test"}, "metric_settings": registry.recorded_settings(),
        "config": {"confidence": 0.95}}))


@pytest.fixture
def evaluated(tmp_path, throwaway):
    """eval/ of base and exp1 summarised by phase 2, and runs/exp1 with its records."""
    from training.eval_report import summarise

    run = RunDir(tmp_path / "runs" / "exp1")
    run.path.mkdir(parents=True)
    curve = [{"step": s, "epoch": s / 4, "loss": 3.0 / s} for s in (1, 2, 3, 4)]
    run.metrics_file.write_text(json.dumps({"train_loss": curve, "eval_loss": curve[1::2], "best_eval_loss": 1.0}))
    run.provenance_file.write_text(json.dumps({"base_model": {"id": "tester/base", "revision": None}}))
    run.config_file.write_text(yaml.safe_dump(dump(ExperimentConfig(name="exp1"))))
    for name in ANSWERS:
        phase_one(tmp_path / "eval", name)
    summary = summarise(tmp_path / "eval", EvalConfig(bootstrap_resamples=50, runs_dir=tmp_path / "runs"))
    return tmp_path, summary


def test_a_new_registry_entry_reaches_comparison_and_metrics_files(evaluated, throwaway):
    root, summary = evaluated
    for name, answers in ANSWERS.items():
        expected = sum(map(len, answers)) / len(answers)
        assert summary["models"][name][throwaway.key]["value"] == pytest.approx(expected)
        on_disk = EvalRoot(root / "eval").model(name).metrics()
        assert on_disk[throwaway.key]["value"] == pytest.approx(expected)
        assert on_disk["n_per_metric"][throwaway.key] == len(REFERENCES)
    assert set(summary["paired_vs_base"]["exp1"]) == set(registry.keys())  # paired like every metric
    table = EvalRoot(root / "eval").comparison_md.read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model | n"))
    assert header.rstrip(" |").endswith(throwaway.key)
    assert "- **Answer length**: characters of each generated answer, averaged (no better or worse)." in table


def test_a_new_registry_entry_reaches_the_plot(evaluated, throwaway):
    from training.plots import metrics_figure

    _, summary = evaluated
    titles = [ax.get_title() for ax in metrics_figure(summary["models"]).axes if ax.get_visible()]
    assert throwaway.label in titles and len(titles) == len(registry.METRICS)
    assert "Perplexity (lower is better)" in titles


def test_a_new_registry_entry_reaches_the_card_tables_and_the_model_index(evaluated, throwaway):
    from hub.artifacts import Experiment, Inputs
    from hub.cards import Where, adapter_card, fmt_metric
    from training.layout import DataDir

    root, summary = evaluated
    runs, evaluation = RunsDir(root / "runs"), EvalRoot(root / "eval")
    exp = Experiment(runs.run("exp1"), evaluation.model("exp1"), runs.run("exp1").config())
    inputs = Inputs(DataDir(root / "data"), {"system_prompt": "Be careful."}, [exp], "exp1", evaluation)
    where = Where("tester/adapter", "tester/data", None, "exp/", "apache-2.0")
    card = adapter_card(exp, inputs, where, branch="exp/exp1", is_main=False, load_revision="exp/exp1", plots=[])

    values = [fmt_metric(summary["models"][name][throwaway.key], throwaway.fmt) for name in ANSWERS]
    assert f"| {throwaway.label} | {len(REFERENCES)} | " + " | ".join(values) + " |" in card.text
    diff = fmt_metric(summary["paired_vs_base"]["exp1"][throwaway.key], throwaway.fmt, "diff", signed=True)
    assert f"| {throwaway.label} | {diff} |" in card.text
    assert "- **Answer length**: characters of each generated answer, averaged (no better or worse)." in card.text
    [entry] = [r for r in card.data.eval_results if r.metric_type == throwaway.index_type]
    assert entry.metric_name == throwaway.label and entry.task_type == "text-generation"
    assert entry.metric_value == round(summary["models"]["exp1"][throwaway.key]["value"], 4)
    assert entry.metric_args == {"unit": "characters", "n": len(REFERENCES)}
    # every metric with a model-index type, MedQA's included (the letter shares are diagnostics, not scores)
    assert len(card.data.eval_results) == len([m for m in registry.METRICS if m.index_type]) < len(registry.METRICS)


def test_every_registered_metric_has_its_own_key_label_and_model_index_type():
    for attribute in ("key", "label", "index_type"):
        values = [getattr(metric, attribute) for metric in registry.METRICS if getattr(metric, attribute)]
        assert len(set(values)) == len(values), attribute
    assert {metric.population.name for metric in registry.METRICS} == {"test", "medqa"}
