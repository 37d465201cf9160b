"""Time to quality on one GPU: which packed-step size and learning-rate rule trains exp1 best per second?

The reference is exp1 with the notebook's batches (8 sequences a step) for its full 3 epochs. Every
other run is exp1 on the fast path (packed rows, `batch_tokens` tokens a step) under one learning-rate
rule: `none` (the notebook's rate), `sqrt` or `linear` (scaled by the step's examples / 8). Each run
records the training seconds (validation excluded) at which each validation loss was reached, so the
result is validation loss against seconds, and the time each run needed to reach the reference's
final validation loss. The reference and the best runs are then evaluated on the test split (ROUGE-L
paired against the reference). Real weights (SmolLM2-135M-Instruct) and all real flashcards.

Runs share the GPU `--concurrency` at a time, so wall-clock figures are under that load; `--solo`
re-times the chosen default and the reference's first steps alone, for the headline numbers.

    python3 bench/bench_time_to_quality.py --base /tmp/real-base --work /tmp/ttq --out $OUT
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.common import gpu_slug, result_path  # noqa: E402
from bench.quality_runs import (  # noqa: E402
    FLASHCARDS, MEDQA, Run, base_record, evaluate, paired_difference, prepare, run_metrics, time_to_loss, train,
)
from common.atomic import write_json_atomic  # noqa: E402
from training.layout import DataDir  # noqa: E402
from training.provenance import hardware, library_versions  # noqa: E402

REFERENCE = Run("reference", "exp1", {"batch_tokens": None})
GRID = [Run(f"t{tokens // 1024}k_{rule}", "exp1", {"batch_tokens": tokens, "lr_scaling": rule})
        for tokens, rule in ((4096, "sqrt"), (8192, "sqrt"), (2048, "sqrt"), (16384, "sqrt"), (4096, "linear"),
                             (8192, "linear"), (4096, "none"), (32768, "sqrt"), (32768, "none"), (16384, "linear"))]
COMMON = {"quantization": "none"}  # bf16 LoRA: bitsandbytes is not on the benchmark machine
SMOKE = {"max_steps": 4, "eval_steps": 2, "save_steps": 4, "padding_free": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO_ROOT / "artifacts" / "real-base")
    parser.add_argument("--flashcards", type=Path, default=FLASHCARDS)
    parser.add_argument("--medqa", type=Path, default=MEDQA)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "artifacts" / "bench-ttq")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--grid", nargs="*", help="run only these grid names")
    parser.add_argument("--evaluate", type=int, default=2, help="evaluate the N runs fastest to the reference loss")
    parser.add_argument("--smoke", action="store_true", help="a few steps on 200 flashcards (a CPU check of the script)")
    args = parser.parse_args(argv)
    common = {**COMMON, **(SMOKE if args.smoke else {})}
    work, logs = args.work, args.work / "logs"
    grid = [run for run in GRID if not args.grid or run.name in args.grid]

    start = time.perf_counter()
    data = prepare(work, args.base, args.flashcards, 200 if args.smoke else "all", logs)
    # The reference first: it is the longest, and the grid fills the other slots around it.
    wall = train([REFERENCE, *grid], args.base, data, work, logs, args.concurrency, common)
    reference = run_metrics(work, REFERENCE.name)
    target = reference["final_eval_loss"]
    runs = {run.name: summarise_run(work, run, target, wall[run.name]) for run in [REFERENCE, *grid]}
    ranked = sorted((n for n in runs if n != REFERENCE.name and runs[n]["time_to_reference_loss_s"] is not None),
                    key=lambda n: runs[n]["time_to_reference_loss_s"])
    evaluated = [REFERENCE.name, *ranked[:args.evaluate]]
    comparison = evaluate(evaluated, args.base, data, work, logs, None)
    for name in evaluated:
        runs[name]["rougeL"] = comparison["models"][name]["rougeL"]["value"]
        runs[name]["bleu"] = comparison["models"][name]["bleu"]["value"]
        runs[name]["perplexity"] = comparison["models"][name]["perplexity"]["value"]
        if name != REFERENCE.name:
            runs[name]["paired_rougeL_vs_reference"] = paired_difference(work, name, REFERENCE.name)
    record = {
        "benchmark": "exp1 time to the notebook recipe's final validation loss, real weights, one GPU",
        "reference_final_eval_loss": target,
        "ranked_by_time_to_reference_loss": ranked,
        "runs": runs,
        "concurrency": args.concurrency,
        "base_model": comparison["models"]["base"],
        "wall_s": round(time.perf_counter() - start, 1),
        "data": DataDir(data).report()["splits"],
        "base": base_record(args.base),
        "hardware": hardware(), "versions": library_versions(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = result_path(args.out, "time-to-quality-grid")
    write_json_atomic(path, record)
    plot(runs, target, path.with_suffix(".png"))
    print(json.dumps({n: {k: r.get(k) for k in ("final_eval_loss", "time_to_reference_loss_s", "train_seconds",
                                                 "rougeL")} for n, r in runs.items()}, indent=1))
    return 0


def summarise_run(work: Path, run: Run, target: float, wall_s: float) -> dict:
    metrics = run_metrics(work, run.name)
    curve = [(e["train_seconds"], e["loss"]) for e in metrics["eval_loss"] if e.get("train_seconds") is not None]
    return {"settings": run.settings, "final_eval_loss": metrics["final_eval_loss"],
            "best_eval_loss": metrics["best_eval_loss"], "steps": metrics["steps"],
            "train_seconds": curve[-1][0] if curve else None, "process_wall_s": round(wall_s, 1),
            "tokens_per_s": metrics["tokens_per_s"], "time_to_reference_loss_s": time_to_loss(metrics, target),
            "batching": metrics.get("batching"), "curve": curve}


def plot(runs: dict, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, run in runs.items():
        seconds, losses = zip(*run["curve"]) if run["curve"] else ((), ())
        ax.plot(seconds, losses, marker=".", label=name, linewidth=2.5 if name == "reference" else 1.2)
    ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label="reference final loss")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_xlabel("training seconds (validation excluded)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"exp1 on SmolLM2-135M-Instruct, one {gpu_slug().upper()}: validation loss against time")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
