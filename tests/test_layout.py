"""training/layout.py: the one place that names the artifacts' files, finds the trained runs (the
same ones for evaluate and for push) and reads them back."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from common.errors import ConfigError, DataError
from training.config import EvalConfig, ExperimentConfig, dump
from training.layout import BASE, DERIVED_KEYS, EvalRoot, RunDir, RunsDir

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("common", "training", "hub", "offline", "bench", "space")


def trained_run(runs: Path, name: str, base: str = "tester/base", **files) -> RunDir:
    """A run folder as train leaves it, as far as discovery and its readers look."""
    run = RunDir(runs / name)
    (run.adapter).mkdir(parents=True)
    (run.adapter / "adapter_config.json").write_text("{}")
    run.config_file.write_text(yaml.safe_dump(dump(ExperimentConfig(name=name, base_model=base, base_revision=None))))
    run.metrics_file.write_text(json.dumps({"best_eval_loss": 1.0}))
    run.provenance_file.write_text(json.dumps({"base_model": {"id": base, "revision": None}}))
    for file, text in files.items():
        (run.path / file).write_text(text)
    return run


@pytest.fixture
def runs(tmp_path) -> Path:
    """Two finished runs, one without an adapter, and a staged run under runs/.in-progress/."""
    runs = tmp_path / "runs"
    trained_run(runs, "alpha")
    trained_run(runs, "beta", **{"plan.json": json.dumps({"batch_tokens": 8192})})
    (runs / "notes").mkdir()  # a folder of the user's, no adapter
    staged = trained_run(runs / ".in-progress", "gamma")
    assert staged.is_trained()
    return runs


def hub_config(runs: Path):
    from hub.config import HubConfig

    data = runs.parent / "data"
    data.mkdir(exist_ok=True)
    (data / "data_report.json").write_text(json.dumps({"splits": {}}))
    return HubConfig(runs_dir=runs, data_dir=data, eval_dir=runs.parent / "eval")


def test_file_names_are_spelled_in_the_layout_module_only():
    """"metrics.json" and "config.yaml" as string literals: only training/layout.py (tests aside)."""
    found = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in ("metrics.json", "config.yaml"):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert found and all(place.startswith("training/layout.py:") for place in found), found


def test_evaluate_and_push_find_the_same_runs(runs):
    from hub.artifacts import load_inputs
    from training.eval_run import discover_models

    evaluated = [spec.name for spec in discover_models(EvalConfig(runs_dir=runs))]
    pushed = [exp.name for exp in load_inputs(hub_config(runs)).experiments]
    assert evaluated == [BASE, "alpha", "beta"] and pushed == ["alpha", "beta"]
    assert discover_models(EvalConfig(runs_dir=runs))[1].base_model == "tester/base"


def test_a_run_without_config_or_with_a_bad_one_is_one_line_for_both(runs):
    from hub.artifacts import load_inputs
    from training.eval_run import discover_models

    (runs / "alpha" / "config.yaml").write_text("lora:\n  r: -3\n")
    with pytest.raises(ConfigError, match=r"alpha/config.yaml.*'lora.r'"):
        discover_models(EvalConfig(runs_dir=runs))
    (runs / "alpha" / "config.yaml").unlink()
    with pytest.raises(DataError, match=r"alpha/config.yaml: missing \(the run is incomplete"):
        discover_models(EvalConfig(runs_dir=runs))
    with pytest.raises(DataError, match=r"alpha/config.yaml: missing"):
        load_inputs(hub_config(runs), ["alpha"])
    assert [e.name for e in load_inputs(hub_config(runs), ["beta"]).experiments] == ["beta"]  # only what is pushed


def test_run_readers_and_records(runs):
    alpha, beta = RunsDir(runs).run("alpha"), RunsDir(runs).run("beta")
    assert alpha.config().name == "alpha" and alpha.metrics() == {"best_eval_loss": 1.0}
    assert alpha.plan() is None and beta.plan() == {"batch_tokens": 8192}
    assert set(alpha.records()) == {"config.yaml", "metrics.json", "provenance.json"}
    assert set(beta.records()) == {"config.yaml", "metrics.json", "provenance.json", "plan.json"}
    assert [run.name for run in RunsDir(runs).finished()] == ["alpha", "beta"]
    (runs / "alpha" / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match=r"alpha/metrics.json: invalid JSON \(line 1"):
        alpha.metrics()


def test_best_json_is_read_where_train_writes_it(runs):
    from training.train import update_best

    assert RunsDir(runs).best() is None
    (runs / "beta" / "metrics.json").write_text(json.dumps({"best_eval_loss": 0.5}))
    assert update_best(runs)["experiment"] == "beta" == RunsDir(runs).best()


def test_an_eval_folder_from_before_run_json_is_still_read(tmp_path):
    """Older folders kept phase 1's record inside metrics.json, beside the metrics phase 2 added."""
    from training import metric_registry as registry

    folder = EvalRoot(tmp_path).model("exp1")
    folder.path.mkdir()
    record = {"model": "exp1", "n": 4, "decoding": {"max_new_tokens": 8}}
    folder.metrics_file.write_text(json.dumps({**record, "bleu": {"value": 3.0}, "nltk_bleu": {"value": 0.03},
                                               **{key: None for key in DERIVED_KEYS}}))
    assert folder.run_info(registry.keys() + list(registry.RETIRED)) == record
    folder.run_file.write_text(json.dumps({**record, "n": 5}))
    assert folder.run_info()["n"] == 5  # run.json, when there is one, is the record
