"""Does fine-tuning make answers better? Base vs adapter on held-out real flashcards, real weights.

The real base is SmolLM2-135M-Instruct (`python -m training build-real-base`); the data are the real
flashcards in ../shared/data. Everything runs through the project's CLIs (bench/quality_runs.py).

    .venv/bin/python bench/bench_quality.py --setting cpu      # 600 flashcards, exp1 40 steps: ~15 min on 2 cores
    python3 bench/bench_quality.py --setting gpu --base DIR    # all 3,362 flashcards, exp1-3, MedQA on all 1,273

Writes <out>/<date>-<gpu>-quality.json (the GPU's name from torch, "cpu" without one): the per-model
comparison, each run's loss curve and a `summary` block (base vs the best adapter, paired ROUGE-L
interval, wall seconds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.common import result_path  # noqa: E402
from bench.quality_runs import (  # noqa: E402
    FLASHCARDS, MEDQA, Run, base_record, evaluate, prepare, run_metrics, summary_block, train,
)
from common.atomic import write_json_atomic  # noqa: E402
from training.layout import DataDir  # noqa: E402
from training.provenance import hardware, library_versions, sha256_file  # noqa: E402

SETTINGS = {
    # The CPU reference run of ../shared/notes/real-model.md: short steps at a high rate, shorter answers.
    "cpu": dict(max_examples=600, runs=[Run("exp1", "exp1", {
        "max_steps": 40, "learning_rate": 1e-3, "max_seq_length": 256, "eval_steps": 10, "save_steps": 40,
        "generation.max_new_tokens": 96})], medqa=False, concurrency=1),
    # The seed experiments as shipped (bf16 LoRA: bitsandbytes is not on the benchmark machine).
    "gpu": dict(max_examples="all", runs=[Run(n, n, {"quantization": "none"}) for n in ("exp1", "exp2", "exp3")],
                 medqa=True, concurrency=3),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--base", type=Path, default=REPO_ROOT / "artifacts" / "real-base")
    parser.add_argument("--flashcards", type=Path, default=FLASHCARDS)
    parser.add_argument("--medqa", type=Path, default=MEDQA)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "artifacts" / "bench-quality")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results",
                        help="folder of the results file, <date>-<gpu>-quality.json")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    work, logs = args.work / args.setting, args.work / args.setting / "logs"

    start = time.perf_counter()
    data = prepare(work, args.base, args.flashcards, setting["max_examples"], logs)
    train_s = train(setting["runs"], args.base, data, work, logs, setting["concurrency"])
    names = [run.name for run in setting["runs"]]
    comparison = evaluate(names, args.base, data, work, logs, args.medqa if setting["medqa"] else None)
    metrics = {name: run_metrics(work, name) for name in names}
    best = min(names, key=lambda n: metrics[n]["final_eval_loss"])
    record = {
        "benchmark": f"quality of fine-tuning on real weights ({args.setting})",
        "summary": {**summary_block(comparison, work, best), "wall_s": round(time.perf_counter() - start, 1)},
        "models": comparison["models"],
        "paired_vs_base": comparison.get("paired_vs_base"),
        "runs": {n: {"settings": r.settings, "train_wall_s": round(train_s[n], 1),
                     "final_eval_loss": metrics[n]["final_eval_loss"],
                     "eval_loss": metrics[n]["eval_loss"], "batching": metrics[n].get("batching")}
                 for n, r in zip(names, setting["runs"])},
        "data": DataDir(data).report()["splits"],
        "inputs": {"flashcards_sha256": sha256_file(args.flashcards),
                   "base": base_record(args.base)},
        "hardware": hardware(), "versions": library_versions(),
    }
    write_json_atomic(result_path(args.out, "quality"), record)
    print(json.dumps(record["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
