"""What `push` publishes, read once through training.layout: the prepared data, the trained runs,
their evaluation and the best one's export. Missing pieces are named with the command that makes them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from common.errors import DataError
from hub.config import HubConfig
from training.config import ExperimentConfig
from training.layout import BASE, DataDir, EvalDir, EvalRoot, RunDir, RunsDir

PREDICTIONS_SAMPLE_LINES = 20


@dataclass(frozen=True)
class Experiment:
    """A trained run and its evaluation (which may be absent)."""

    run: RunDir
    eval: EvalDir
    config: ExperimentConfig  # config.yaml, validated when the inputs are read, before anything is pushed

    @property
    def name(self) -> str:
        return self.run.name

    @cached_property  # read by releases, plots and cards alike: parse each once
    def train_metrics(self) -> dict[str, Any]:
        return self.run.metrics()

    @cached_property
    def provenance(self) -> dict[str, Any]:
        return self.run.provenance()

    @cached_property
    def eval_metrics(self) -> dict[str, Any] | None:
        return self.eval.metrics()

    @property
    def base_model(self) -> tuple[str, str | None]:
        base = self.provenance.get("base_model") or {}
        return base.get("id") or self.config.base_model, base.get("revision", self.config.base_revision)

    def predictions_sample(self) -> bytes | None:
        if not self.eval.predictions_file.exists():
            return None
        with self.eval.predictions_file.open("rb") as fh:
            return b"".join(line for _, line in zip(range(PREDICTIONS_SAMPLE_LINES), fh))


@dataclass(frozen=True)
class Inputs:
    data: DataDir
    report: dict[str, Any]  # data_report.json
    experiments: list[Experiment]
    best: str | None  # runs/best.json "experiment", when it is one of `experiments`
    evaluation: EvalRoot
    export: Path | None = None  # exports/<best>/ when it is published (hub/export_releases.find_export)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.path)

    @cached_property
    def base_eval(self) -> dict[str, Any] | None:
        return self.evaluation.model(BASE).metrics()

    def experiment(self, name: str) -> Experiment:
        return next(exp for exp in self.experiments if exp.name == name)


def load_inputs(config: HubConfig, names: list[str] | None = None) -> Inputs:
    """Everything to publish: the named experiments (default: every trained run), each config validated."""
    data = DataDir(config.data_dir)
    report = data.report()
    runs = RunsDir(config.runs_dir)
    available = {run.name: run for run in runs.trained()}
    wanted = names or sorted(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DataError(
            f"no trained adapter for {', '.join(unknown)} in {config.runs_dir} "
            f"(have: {', '.join(sorted(available)) or 'none'}); run `make train` first"
        )
    if not wanted:
        raise DataError(f"{config.runs_dir}: no trained experiments; run `make train` first")
    evaluation = EvalRoot(config.eval_dir)
    best = runs.best()
    experiments = [Experiment(available[name], evaluation.model(name), available[name].config()) for name in wanted]
    best = best if best in wanted else None
    export = None
    if best and config.publish_exports is not False:
        from hub.export_releases import find_export

        export = find_export(config.exports_dir / best, available[best], config.publish_exports)
    return Inputs(data, report, experiments, best, evaluation, export)
