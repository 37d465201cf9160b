"""The local outputs that `push` publishes: data/processed, runs/<exp>/ and eval/ (ARCHITECTURE.md)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from common.errors import DataError
from hub.config import HubConfig
from training.config import ExperimentConfig, read_yaml, validate
from training.prepare import REPORT_FILE

PREDICTIONS_SAMPLE_LINES = 20


@dataclass(frozen=True)
class Experiment:
    name: str
    run_dir: Path
    config: ExperimentConfig  # runs/<exp>/config.yaml, validated again
    train_metrics: dict[str, Any]  # runs/<exp>/metrics.json
    provenance: dict[str, Any]  # runs/<exp>/provenance.json
    eval_dir: Path  # eval/<exp>/ (may be absent)

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"

    @cached_property  # read by staging, plots and cards alike: parse it once
    def eval_metrics(self) -> dict[str, Any] | None:
        path = self.eval_dir / "metrics.json"
        return read_json(path) if path.exists() else None

    @property
    def base_model(self) -> tuple[str, str | None]:
        base = self.provenance.get("base_model") or {}
        return base.get("id") or self.config.base_model, base.get("revision", self.config.base_revision)

    def predictions_sample(self) -> str | None:
        path = self.eval_dir / "predictions.jsonl"
        if not path.exists():
            return None
        with path.open(encoding="utf-8") as fh:
            return "".join(line for _, line in zip(range(PREDICTIONS_SAMPLE_LINES), fh))


@dataclass(frozen=True)
class Inputs:
    data_dir: Path
    report: dict[str, Any]  # data_report.json
    experiments: list[Experiment]
    best: str | None  # runs/best.json "experiment"
    eval_dir: Path

    @cached_property
    def base_eval(self) -> dict[str, Any] | None:
        path = self.eval_dir / "base" / "metrics.json"
        return read_json(path) if path.exists() else None

    @property
    def plots(self) -> list[Path]:
        return sorted((self.eval_dir / "plots").glob("*.png"))

    def experiment(self, name: str) -> Experiment:
        return next(exp for exp in self.experiments if exp.name == name)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON (line {exc.lineno}: {exc.msg})") from None


def load_inputs(config: HubConfig, names: list[str] | None = None) -> Inputs:
    """Everything to publish; missing pieces are named with the command that makes them."""
    report_path = config.data_dir / REPORT_FILE
    if not report_path.exists():
        raise DataError(f"{report_path}: not found; run `make data` (python -m training prepare) first")
    run_dirs = sorted(p.parent.parent for p in config.runs_dir.glob("*/adapter/adapter_config.json"))
    available = {p.name: p for p in run_dirs}
    wanted = names or sorted(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DataError(
            f"no trained adapter for {', '.join(unknown)} in {config.runs_dir} "
            f"(have: {', '.join(sorted(available)) or 'none'}); run `make train` first"
        )
    if not wanted:
        raise DataError(f"{config.runs_dir}: no trained experiments; run `make train` first")
    best_path = config.runs_dir / "best.json"
    best = read_json(best_path)["experiment"] if best_path.exists() else None
    return Inputs(
        data_dir=config.data_dir,
        report=read_json(report_path),
        experiments=[load_experiment(available[name], config.eval_dir / name) for name in wanted],
        best=best if best in wanted else None,
        eval_dir=config.eval_dir,
    )


def load_experiment(run_dir: Path, eval_dir: Path) -> Experiment:
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{config_path}: missing (the run is incomplete; train it again)")
    # Cards and the Space read it; a hand-edited one must still be a valid experiment (one line if not).
    config = validate(ExperimentConfig, read_yaml(config_path), str(config_path))
    return Experiment(
        name=run_dir.name,
        run_dir=run_dir,
        config=config,
        train_metrics=read_json(run_dir / "metrics.json"),
        provenance=read_json(run_dir / "provenance.json"),
        eval_dir=eval_dir,
    )
