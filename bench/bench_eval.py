"""Evaluation speed on CPU: 200 real flashcard questions through `training evaluate` with the tiny base.

The whole command path (load, greedy generation with length-sorted left-padded batches, answer
perplexity, every metric with 1,000-resample bootstrap intervals, comparison and plots), timed per
phase. Target: under 60 s on a CPU. The tiny model is random, so it rarely stops early: nearly
every answer runs to max_new_tokens, the worst case for generation time.

    .venv/bin/python bench/bench_eval.py --out bench/results/eval-cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.common import environment, load_flashcards  # noqa: E402
from common.atomic import write_json_atomic  # noqa: E402

SHARED_FLASHCARDS = REPO_ROOT.parent / "shared" / "data" / "flashcards" / "medical_flashcards_test_3396.json"
TARGET_S = 60.0


def prepared_dataset(folder: Path, tokenizer, questions: int) -> Path:
    """`prepare`'s output contract for `questions` real flashcards (all three splits the same rows)."""
    from datasets import Dataset, DatasetDict

    from training.chat import format_example
    from training.config import DEFAULT_SYSTEM_PROMPT

    rows = load_flashcards(SHARED_FLASHCARDS, limit=questions)
    split = Dataset.from_list([
        {"id": f"{i:016x}", **row, **format_example(tokenizer, DEFAULT_SYSTEM_PROMPT, row["question"], row["answer"])}
        for i, row in enumerate(rows)
    ])
    DatasetDict(train=split, validation=split, test=split).save_to_disk(str(folder))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, help="default: EvalConfig's")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); 1 avoids "
                        "spin-waiting threads when other processes share the cores")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "eval-cpu.json")
    args = parser.parse_args()
    if not SHARED_FLASHCARDS.exists():
        print(f"skipped: {SHARED_FLASHCARDS} is absent", file=sys.stderr)
        return 1

    import torch
    from training.config import EvalConfig
    from training.evaluate import evaluate
    from training.layout import BASE, EvalRoot
    from training.tiny_base import build_tiny_base
    from training.tokenizer import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        tmp = Path(tmp)
        base = build_tiny_base(tmp / "tiny-base")
        data = prepared_dataset(tmp / "data", load_tokenizer(base), args.questions)
        config = EvalConfig(
            base_model=str(base), data_dir=data, runs_dir=tmp / "runs", output_dir=tmp / "eval", medqa=None,
            batch_size=args.batch_size, **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}),
        )
        started = time.perf_counter()
        evaluate(config)
        wall_s = time.perf_counter() - started
        base_eval = EvalRoot(tmp / "eval").model(BASE)
        details, predictions = base_eval.run_info(), base_eval.predictions()

    result = {
        "benchmark": "evaluate the tiny base on real flashcard questions (CPU)",
        "questions": len(predictions),
        "batch_size": args.batch_size,
        "max_new_tokens": config.max_new_tokens,
        "bootstrap_resamples": config.bootstrap_resamples,
        "wall_s": round(wall_s, 2),
        "generation_s": details["timing"]["generation_s"],
        "model_total_s": details["timing"]["total_s"],
        "target_s": TARGET_S,
        "meets_target": wall_s < TARGET_S,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m_before": round(load_before[0], 2),
        "environment": environment(),
    }
    write_json_atomic(args.out, result)
    print(json.dumps({k: result[k] for k in ("questions", "wall_s", "generation_s", "meets_target")}))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
