"""A hyperparameter search on one GPU with real weights: does it find a better adapter than exp1 at the default?

`python -m training search` exactly as a user runs it: a study of `--trials` trials (24) of exp1 on
SmolLM2-135M-Instruct with all real flashcards, `--workers` trials at a time on the one GPU, pruned on
their validation losses. Beside it, exp1 at the current default is trained the same way, and the best trial and
exp1 are evaluated on the test split: ROUGE-L of each and the paired interval of their difference
(bench/quality_runs.py). Targets (issue #29): the study in <= 15 minutes of one GPU (9 to fit one device
call), its best trial's final validation loss below exp1's, its ROUGE-L not lower beyond the interval.

The space comes from the reference runs on one H100 (real-model.md): LoRA on all linear projections
(fixed: it beat attention only), rank and alpha, the learning rate around the default (x0.5 .. x2),
dropout, 2 to 4 epochs (6 overfit), 4,096 or 8,192 tokens a step.

    python3 bench/bench_search.py --base /tmp/real-base --work /tmp/search --out $OUT        # one GPU
    .venv/bin/python bench/bench_search.py --smoke --base artifacts/tiny-base \\
        --flashcards training/assets/sample_flashcards.jsonl --work /tmp/search-smoke        # CPU check

Writes <out>/<date>-<gpu>-search.json (the GPU's name from torch) and the study's plot beside it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.common import gpu_slug, result_path  # noqa: E402
from bench.quality_runs import FLASHCARDS, Run, base_record, cli, paired_difference, prepare, train  # noqa: E402
from common.atomic import write_json_atomic  # noqa: E402
from training.layout import EvalRoot, RunsDir  # noqa: E402

STUDY = "smollm2"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SPACE = {
    "learning_rate": {"low": 1.0e-4, "high": 4.0e-4, "log": True},
    "lora.r": {"choices": [8, 16, 32]},
    "lora.alpha": {"choices": [16, 32, 64]},
    "lora.dropout": {"low": 0.0, "high": 0.1},
    "batch_tokens": {"choices": [4096, 8192]},
    "epochs": {"low": 2, "high": 4},
}
# bf16 LoRA (bitsandbytes is not on the benchmark machine); a checkpoint every 2,000 examples, not 400:
# a search needs one only to continue a killed trial.
SETTINGS = {"quantization": "none", "lora.target_modules": ALL_LINEAR, "save_steps": 250}
# The CPU check: a few packed steps of the tiny base (padding-free rows run block-diagonal attention on a CPU).
SMOKE = {"max_steps": 4, "eval_steps": 2, "save_steps": 4, "logging_steps": 2, "max_seq_length": 128,
         "padding_free": True, "learning_rate": 1e-2}
SMOKE_SPACE = {**SPACE, "batch_tokens": {"choices": [256, 512]}}
SMOKE_EVALUATE = ["limit=8", "max_new_tokens=16", "bootstrap_resamples=200"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO_ROOT / "artifacts" / "real-base")
    parser.add_argument("--flashcards", type=Path, default=FLASHCARDS)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "artifacts" / "bench-search")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, default=6, help="trials at once on the GPU")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, a CPU check of the script")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate a study trained on another machine (its --work folder, brought here)")
    parser.add_argument("--hand-off", action="store_true",
                        help="the device time is ending: print what --evaluate-only needs elsewhere (paths under "
                             "--work's parent), the study so far recorded first if it is still running")
    args = parser.parse_args(argv)
    work, logs = args.work, args.work / "logs"
    if args.hand_off:
        print("\n".join(str(path.relative_to(work.parent)) for path in hand_off(work)))
        return 0
    start = time.perf_counter()
    data = prepare(work, args.base, args.flashcards, 120 if args.smoke else "all", logs)
    folder, trained = work / "search" / STUDY, work / "study_trained.json"
    exp1_settings = {"quantization": "none", **(SMOKE if args.smoke else {})}
    if not args.evaluate_only:
        write_json_atomic(work / "study_started.json", {"gpu": gpu_slug(), "unix_time": time.time()})
        search_wall = train_study(args, work, data, exp1_settings)
        # what the evaluation needs from the study's machine, when it runs on another (--evaluate-only)
        write_json_atomic(trained, {"gpu": gpu_slug(), "search_wall_s": round(search_wall, 1),
                                    "wall_s": round(time.perf_counter() - start, 1)})
    study = json.loads(trained.read_text())
    summary = json.loads((folder / "study.json").read_text())
    trials = json.loads((folder / "trials.json").read_text())
    best = summary["best"]
    if best is None:  # every trial failed or was pruned: the study's log says why
        raise SystemExit(f"no trial completed: see {logs / 'search.log'} and {folder / 'logs'}")
    best_name = Path(best["run"]).name

    evaluate_settings = [f"data_dir={data}", f"runs_dir={folder / 'runs'}", f"output_dir={folder / 'eval'}",
                         f"models=base,exp1,{best_name}", "medqa=null", f"base_model={args.base}",
                         *(SMOKE_EVALUATE if args.smoke else [])]
    cli(["training", "evaluate", *[a for s in evaluate_settings for a in ("--set", s)]], logs / "evaluate.log")
    comparison = json.loads(EvalRoot(folder / "eval").comparison_json.read_text())
    exp1_metrics = RunsDir(folder / "runs").run("exp1").metrics()

    found = summary["counts"]
    record = {
        "benchmark": "python -m training search: a study of exp1 on SmolLM2-135M-Instruct, all real flashcards, "
                     "several trials at a time on one GPU; best trial vs exp1 at the default",
        "trials": found["done"], "complete": found["complete"], "pruned": found["pruned"], "failed": found["failed"],
        "interrupted": found["interrupted"], "workers": args.workers, "wall_s": study["search_wall_s"],
        "study_cut_short_by_device_time": study.get("cut_short", False),
        "train_seconds_total": summary["train_seconds_total"],
        "best": {"trial": best["number"], "settings": {**SETTINGS, **best["params"]},
                 "final_eval_loss": best["final_eval_loss"], "train_seconds": best["train_seconds"],
                 "rougeL": comparison["models"][best_name]["rougeL"]["value"]},
        "exp1": {"settings": {"experiment": "exp1 (defaults)", **exp1_settings}, "trained_beside_the_study": True,
                 "final_eval_loss": exp1_metrics["final_eval_loss"],
                 "train_seconds": exp1_metrics["eval_loss"][-1].get("train_seconds"),
                 "rougeL": comparison["models"]["exp1"]["rougeL"]["value"]},
        "paired_rougeL_best_minus_exp1": paired_difference(folder, best_name, "exp1"),
        "base_rougeL": comparison["models"]["base"]["rougeL"]["value"],
        "space": summary["space"], "fixed": SETTINGS, "sampler": summary["sampler"], "pruner": summary["pruner"],
        "importances": summary["importances"],
        "table": [{k: t[k] for k in ("number", "state", "params", "final_eval_loss", "last_eval_loss", "steps",
                                     "train_seconds", "wall_s", "error")} for t in trials],
        "study_and_exp1_wall_s": study["wall_s"], "evaluated_on": gpu_slug(),
        "data": json.loads((data / "data_report.json").read_text())["splits"], "base": base_record(args.base),
        "provenance": summary["provenance"], "smoke": args.smoke,
    }
    record["targets"] = targets(record)
    args.out.mkdir(parents=True, exist_ok=True)
    path = result_path(args.out, "search", gpu=study["gpu"])
    write_json_atomic(path, record)
    shutil.copyfile(folder / "loss_vs_train_seconds.png", path.with_suffix(".png"))
    print(json.dumps({k: record[k] for k in ("trials", "pruned", "failed", "wall_s", "best", "exp1",
                                             "paired_rougeL_best_minus_exp1", "targets")}, indent=1))
    print(f"wrote {path}")
    return 0


def train_study(args, work: Path, data: Path, exp1_settings: dict) -> float:
    """The study, and exp1 at the current default trained as `train` does beside it (one more process on the
    GPU for about a minute) into a runs folder of its own (the study owns its runs folder while it runs), then
    copied into the study's runs: one `evaluate` compares base, exp1 and the best trial on the same questions."""
    config = write_search_config(work, args.base, data, args.trials, args.workers, args.smoke)
    with ThreadPoolExecutor(1) as pool:
        exp1_training = pool.submit(train, [Run("exp1", "exp1")], args.base, data, work / "exp1", work / "logs", 1,
                                    exp1_settings)
        search_start = time.perf_counter()
        cli(["training", "search", "--config", str(config)], work / "logs" / "search.log",
            env={"OMP_NUM_THREADS": "2"})
        search_wall = time.perf_counter() - search_start
        exp1_training.result()
    copy_exp1(work)
    return search_wall


def copy_exp1(work: Path) -> None:
    """exp1's finished run into the study's runs (once)."""
    exp1, into = RunsDir(work / "exp1" / "runs").run("exp1"), RunsDir(work / "search" / STUDY / "runs").run("exp1")
    if exp1.is_trained() and not into.path.exists():
        shutil.copytree(exp1.path, into.path)


def hand_off(work: Path) -> list[Path]:
    """What `--evaluate-only` reads: the study's records, exp1's and the best trial's runs (none before a trial
    has finished). A study still running is recorded so far, as study_trained.json says for a finished one (its
    wall time so far; the trials still running are left out)."""
    folder, trained = work / "search" / STUDY, work / "study_trained.json"
    summary = json.loads((folder / "study.json").read_text()) if (folder / "study.json").exists() else {}
    if not summary.get("best"):
        return []
    if not trained.exists():
        started = json.loads((work / "study_started.json").read_text())
        copy_exp1(work)
        elapsed = round(time.time() - started["unix_time"], 1)
        write_json_atomic(trained, {"gpu": started["gpu"], "search_wall_s": elapsed, "wall_s": elapsed,
                                    "cut_short": True})
    runs = RunsDir(folder / "runs")
    return [trained, folder / "study.json", folder / "trials.json", folder / "loss_vs_train_seconds.png",
            runs.run("exp1").path, runs.run(Path(summary["best"]["run"]).name).path]


def write_search_config(work: Path, base: Path, data: Path, trials: int, workers: int, smoke: bool) -> Path:
    """The study as a user writes it (a SearchConfig YAML), its output kept under `work`, its best experiment
    written there too (never into the repo's configs/experiments)."""
    settings = {**SETTINGS, "base_model": str(base), "base_revision": None, "data_dir": str(data),
                **(SMOKE if smoke else {})}
    space = SMOKE_SPACE if smoke else SPACE
    search = {
        "study": STUDY, "experiment": "exp1", "settings": {k: v for k, v in settings.items() if k not in space},
        "space": space, "trials": trials, "workers": workers, "output_dir": str(work / "search"),
        "best_config_dir": str(work / "experiments"),
        # Ten random trials first, then TPE; constant_liar keeps the workers asking together apart.
        "sampler": {"name": "TPESampler", "seed": 0, "n_startup_trials": min(10, trials), "multivariate": True,
                    "constant_liar": True},
        # A trial worse than the median of the finished trials at the same amount of training stops, from
        # step 7 (2,800 examples, just past the first epoch of 2,690): before, a trial of more epochs is
        # still warming up (over 10% of its steps) and looks worse than it is.
        "pruner": {"name": "MedianPruner", "n_startup_trials": min(4, trials), "n_warmup_steps": 1 if smoke else 7},
    }
    path = work / "search.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False))
    return path


def targets(record: dict) -> dict:
    paired = record["paired_rougeL_best_minus_exp1"]
    return {"trials_at_least_24": record["trials"] >= 24, "study_within_15_min": record["wall_s"] <= 900,
            "study_within_9_min": record["wall_s"] <= 540,
            "best_loss_below_exp1": record["best"]["final_eval_loss"] < record["exp1"]["final_eval_loss"],
            "rougeL_not_lower_beyond_interval": paired["ci_high"] >= 0}


if __name__ == "__main__":
    sys.exit(main())
