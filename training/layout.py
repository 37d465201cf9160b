"""Where every artifact lives, and the one way to read it: data/, runs/<exp>/ and eval/<model>/.

prepare writes `DataDir`, train writes a `RunDir` per experiment under `RunsDir`, evaluate writes an
`EvalDir` per model under `EvalRoot`; evaluate, the hub side and bench read them back through these
classes (ARCHITECTURE.md describes every file). File names are spelled here and nowhere else, so a
new file of a run (a resolved training plan, an export) is one name here and one reader.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import DataError

if TYPE_CHECKING:
    from training.config import ExperimentConfig

# data/processed/ (prepare): the DatasetDict's own files, and beside them
DATA_REPORT = "data_report.json"

# runs/<exp>/ (train)
ADAPTER = "adapter"  # what PeftModel.from_pretrained loads
ADAPTER_CONFIG = "adapter_config.json"  # peft's: a folder holding it is an adapter
RUN_CONFIG = "config.yaml"  # the resolved ExperimentConfig
RUN_METRICS = "metrics.json"  # losses, speed, memory, batching
RUN_PLAN = "plan.json"  # the resolved training plan
RUN_PROVENANCE = "provenance.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
# runs/
BEST = "best.json"  # the experiment with the lowest validation loss
IN_PROGRESS = ".in-progress"  # staged runs and their locks, one level below any finished run

# eval/<model>/ (evaluate): one file per phase, each written once in its own shape
EVAL_RUN = "run.json"  # phase 1: what ran and how (model, decoding, data, timing, provenance)
PREDICTIONS = "predictions.jsonl"  # phase 1: every answer with its per-example scores
MEDQA_ANSWERS = "medqa.jsonl"  # phase 1: every MedQA question with each option's log-likelihood
EXAMPLE_ANSWERS = "examples.jsonl"  # phase 1: the answers to EvalConfig.example_questions (the card shows them)
EVAL_METRICS = "metrics.json"  # phase 2: run.json's record plus metrics, intervals, paired differences
# eval/
BASE = "base"  # the base model's folder
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
PLOTS = "plots"
METRICS_PLOT = "metrics.png"
LOSS_PLOT = "loss_curves.png"


# ---- reading ---------------------------------------------------------------------------------------

def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise DataError(f"{path}: invalid JSON ({where})") from None


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """For a folder that common.atomic.replace_dir swaps in whole (never written in place)."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---- data/ ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataDir:
    """The output of `prepare`: a DatasetDict saved to disk and its report."""

    path: Path

    @property
    def report_file(self) -> Path:
        return Path(self.path) / DATA_REPORT

    def report(self) -> dict[str, Any]:
        if not self.report_file.exists():
            raise DataError(f"{self.report_file}: not found; run `make data` (python -m training prepare) first")
        return read_json(self.report_file)

    def report_if_any(self) -> dict[str, Any]:
        """The report, or {} for a dataset prepared elsewhere (evaluation then records less about it)."""
        return read_json(self.report_file) if self.report_file.exists() else {}


# ---- runs/ ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunDir:
    """runs/<experiment>/: a finished run (a staged one has the same layout under runs/.in-progress/)."""

    path: Path

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def adapter(self) -> Path:
        return Path(self.path) / ADAPTER

    @property
    def config_file(self) -> Path:
        return Path(self.path) / RUN_CONFIG

    @property
    def metrics_file(self) -> Path:
        return Path(self.path) / RUN_METRICS

    @property
    def plan_file(self) -> Path:
        return Path(self.path) / RUN_PLAN

    @property
    def provenance_file(self) -> Path:
        return Path(self.path) / RUN_PROVENANCE

    @property
    def checkpoints(self) -> Path:
        return Path(self.path) / CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return Path(self.path) / TENSORBOARD

    def is_trained(self) -> bool:
        return (self.adapter / ADAPTER_CONFIG).is_file()

    def config(self) -> ExperimentConfig:
        """config.yaml validated again: evaluation, cards and the Space rely on it, and a hand-edited one
        must still be a valid experiment (one line naming the file if not)."""
        from common.yaml_config import read_yaml, validate
        from training.config import ExperimentConfig

        if not self.config_file.is_file():
            raise DataError(f"{self.config_file}: missing (the run is incomplete; train it again)")
        return validate(ExperimentConfig, read_yaml(self.config_file), str(self.config_file))

    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_file)

    def provenance(self) -> dict[str, Any]:
        return read_json(self.provenance_file)

    def plan(self) -> dict[str, Any] | None:
        """The resolved training plan, for runs that recorded one."""
        return read_json(self.plan_file) if self.plan_file.exists() else None

    def records(self) -> dict[str, Path]:
        """The run's records published beside its adapter, by file name."""
        files = (self.config_file, self.metrics_file, self.provenance_file, self.plan_file)
        return {path.name: path for path in files if path.is_file()}


@dataclass(frozen=True)
class RunsDir:
    """runs/: one RunDir per experiment, best.json, and runs/.in-progress/ for the runs being trained."""

    path: Path

    def run(self, name: str) -> RunDir:
        return RunDir(Path(self.path) / name)

    def trained(self) -> list[RunDir]:
        """Every finished run holding an adapter, by name. Staged runs sit under runs/.in-progress/, one
        level deeper, so a run being trained is never found here."""
        folder = Path(self.path)
        found = (RunDir(p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")) \
            if folder.is_dir() else ()
        return [run for run in found if run.is_trained()]

    def finished(self) -> list[RunDir]:
        """Every run that wrote its metrics (the candidates for best.json)."""
        folder = Path(self.path)
        return [RunDir(p.parent) for p in sorted(folder.glob(f"*/{RUN_METRICS}"))] if folder.is_dir() else []

    @property
    def best_file(self) -> Path:
        return Path(self.path) / BEST

    def best(self) -> str | None:
        """The experiment best.json names, if train wrote one."""
        return read_json(self.best_file)["experiment"] if self.best_file.exists() else None


# ---- eval/ ---------------------------------------------------------------------------------------------

# Keys of metrics.json that phase 2 adds to phase 1's record (the metrics themselves aside).
DERIVED_KEYS = ("paired_vs_base", "n_per_metric", "intervals", "references_over_max_new_tokens", "examples")


@dataclass(frozen=True)
class EvalDir:
    """eval/<model>/: phase 1 writes run.json, predictions.jsonl, medqa.jsonl and examples.jsonl once; phase 2
    derives metrics.json from them alone, so it can be rewritten without the model."""

    path: Path

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def run_file(self) -> Path:
        return Path(self.path) / EVAL_RUN

    @property
    def predictions_file(self) -> Path:
        return Path(self.path) / PREDICTIONS

    @property
    def medqa_file(self) -> Path:
        return Path(self.path) / MEDQA_ANSWERS

    @property
    def examples_file(self) -> Path:
        return Path(self.path) / EXAMPLE_ANSWERS

    @property
    def metrics_file(self) -> Path:
        return Path(self.path) / EVAL_METRICS

    def run_info(self, metric_keys=()) -> dict[str, Any]:
        """Phase 1's record. Folders written before run.json existed kept it inside metrics.json, beside
        the metrics (`metric_keys`) and what phase 2 derived, which are left out here."""
        if self.run_file.exists():
            return read_json(self.run_file)
        if self.metrics_file.exists():
            legacy = read_json(self.metrics_file)
            return {k: v for k, v in legacy.items() if k not in metric_keys and k not in DERIVED_KEYS}
        return {"model": self.name}

    def predictions(self) -> list[dict]:
        return read_jsonl(self.predictions_file)

    def medqa(self) -> list[dict]:
        return read_jsonl(self.medqa_file) if self.medqa_file.exists() else []

    def examples(self) -> list[dict]:
        """The example questions' answers ([] for folders written before they were recorded)."""
        return read_jsonl(self.examples_file) if self.examples_file.exists() else []

    def metrics(self) -> dict[str, Any] | None:
        """Phase 2's summary, when the model was evaluated."""
        return read_json(self.metrics_file) if self.metrics_file.exists() else None

    def files(self) -> dict[str, Path]:
        """What evaluate wrote here, by file name: everything a card's numbers are recomputed from."""
        paths = (self.run_file, self.metrics_file, self.predictions_file, self.medqa_file, self.examples_file)
        return {path.name: path for path in paths if path.is_file()}


@dataclass(frozen=True)
class EvalRoot:
    """eval/: a folder per model, the comparison across models and its plots."""

    path: Path

    def model(self, name: str) -> EvalDir:
        return EvalDir(Path(self.path) / name)

    def evaluated(self) -> list[EvalDir]:
        """Every model with predictions, the base first."""
        folders = (p.parent for p in Path(self.path).glob(f"*/{PREDICTIONS}"))
        return [EvalDir(p) for p in sorted(folders, key=lambda p: (p.name != BASE, p.name))]

    @property
    def comparison_json(self) -> Path:
        return Path(self.path) / COMPARISON_JSON

    @property
    def comparison_md(self) -> Path:
        return Path(self.path) / COMPARISON_MD

    @property
    def metrics_plot(self) -> Path:
        return Path(self.path) / PLOTS / METRICS_PLOT

    @property
    def loss_plot(self) -> Path:
        return Path(self.path) / PLOTS / LOSS_PLOT

    def plots(self) -> list[Path]:
        return sorted((Path(self.path) / PLOTS).glob("*.png"))
