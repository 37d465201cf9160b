"""Shared driver of the quality benchmarks: the project's own CLIs on real weights and real data.

`prepare`, `train` and `evaluate` run as `python -m training ...` subprocesses, exactly as a user runs
them, with `--set` overrides only. A run is named (`--set name=...`), so every variant lives in one
runs folder and one evaluation compares them all, each paired against the base. Several trainings can
share one GPU (`concurrency`); each records the training seconds at which every validation loss was
reached (metrics.json, `train_seconds`), which is what time-to-quality is read from.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from training.layout import DataDir, EvalRoot, RunsDir, read_json

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data"
FLASHCARDS = SHARED / "flashcards" / "medical_flashcards_test_3396.json"
MEDQA = SHARED / "eval" / "medqa_usmle_4options_test.jsonl"


@dataclass(frozen=True)
class Run:
    name: str
    experiment: str  # configs/experiments/<experiment>.yaml
    settings: dict = field(default_factory=dict)


def cli(args: list[str], log: Path, env: dict | None = None) -> float:
    """Run `python -m <args>` from the repo root, output to `log`; wall seconds. Fails loudly."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})}).returncode
    if code:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"`python -m {' '.join(args)}` exited {code}; log {log}:\n{tail}")
    return time.perf_counter() - start


def sets(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        out += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return out


def prepare(work: Path, base: Path, flashcards: Path, max_examples, logs: Path) -> Path:
    data = work / "data"
    if not DataDir(data).report_file.exists():
        cli(["training", "prepare", "--config", "configs/data.yaml", *sets({
            "source": str(flashcards), "revision": None, "tokenizer": str(base), "tokenizer_revision": None,
            "max_examples": max_examples, "output_dir": str(data)})], logs / "prepare.log")
    return data


def train(runs: list[Run], base: Path, data: Path, work: Path, logs: Path, concurrency: int = 1,
          common: dict | None = None) -> dict[str, float]:
    """Train every run (up to `concurrency` at once, in list order); wall seconds per run."""
    def one(run: Run) -> tuple[str, float]:
        settings = {"name": run.name, "base_model": str(base), "base_revision": None, "data_dir": str(data),
                    "runs_dir": str(work / "runs"), **(common or {}), **run.settings}
        print(f"train {run.name} ({run.experiment}) {run.settings}", flush=True)
        seconds = cli(["training", "train", "--experiment", run.experiment, *sets(settings)],
                      logs / f"train-{run.name}.log", env={"OMP_NUM_THREADS": "2"})
        print(f"trained {run.name} in {seconds:.0f} s", flush=True)
        return run.name, seconds

    with ThreadPoolExecutor(concurrency) as pool:
        return dict(pool.map(one, runs))


def evaluate(names: list[str], base: Path, data: Path, work: Path, logs: Path, medqa: Path | None) -> dict:
    settings = [f"data_dir={data}", f"runs_dir={work / 'runs'}", f"output_dir={work / 'eval'}",
                f"models={','.join(['base', *names])}", f"medqa={medqa if medqa else 'null'}", f"base_model={base}"]
    cli(["training", "evaluate", *[arg for setting in settings for arg in ("--set", setting)]],
        logs / f"evaluate-{'-'.join(names) or 'base'}.log")
    return read_json(EvalRoot(work / "eval").comparison_json)


def base_record(base: Path) -> dict:
    """The real base's provenance (real_base.json), or its path when it has none."""
    path = base / "real_base.json"
    return json.loads(path.read_text()) if path.exists() else {"path": str(base)}


def run_metrics(work: Path, name: str) -> dict:
    return RunsDir(work / "runs").run(name).metrics()


def time_to_loss(metrics: dict, target: float) -> float | None:
    """Training seconds (validation excluded) at the first validation loss at or below `target`."""
    for entry in metrics["eval_loss"]:
        if entry["loss"] <= target and entry.get("train_seconds") is not None:
            return entry["train_seconds"]
    return None


def per_example(eval_dir: Path, name: str, score: str = "rougeL") -> dict[str, float]:
    rows = EvalRoot(eval_dir).model(name).predictions()
    return {row["id"]: row["scores"][score] for row in rows}


def paired_difference(work: Path, model: str, against: str, score: str = "rougeL", resamples: int = 2000,
                      seed: int = 0, confidence: float = 0.95, eval_dirs: tuple[Path, Path] | None = None
                      ) -> dict[str, float]:
    """Mean per-example difference model - against over the same test questions, with training.metrics'
    paired BCa interval, for comparisons `evaluate` does not make (it pairs every model with the base).
    `eval_dirs`: where each one's evaluation is (default: both in work/eval)."""
    from training import metrics as M

    model_dir, against_dir = eval_dirs or (work / "eval", work / "eval")
    a, b = per_example(model_dir, model, score), per_example(against_dir, against, score)
    ids = sorted(set(a) & set(b))
    paired = M.paired_bootstrap(M.mean([a[i] for i in ids]), M.mean([b[i] for i in ids]),
                                M.resample_counts(len(ids), resamples, seed), confidence)
    return {key: round(float(value), 5) for key, value in paired.items()} | {"n": len(ids)}


def summary_block(comparison: dict, work: Path, adapter: str) -> dict:
    """The issue's `summary`: base vs one adapter, with the paired ROUGE-L interval."""
    def pick(name: str, loss: float) -> dict:
        metrics = comparison["models"][name]
        return {"eval_loss": loss, **{m: metrics[m]["value"] for m in ("rougeL", "bleu", "perplexity") if m in metrics}}

    run = run_metrics(work, adapter)
    paired = comparison["paired_vs_base"][adapter]["rougeL"]  # evaluate's own paired BCa interval
    # A fresh LoRA adapter is the identity (B = 0): its validation loss before training is the base's.
    return {"base": pick("base", run["initial_eval_loss"]),
            "adapter": {"name": adapter, **pick(adapter, run["final_eval_loss"])},
            "paired_rougeL": {key: paired[key] for key in ("diff", "ci_low", "ci_high")}}

