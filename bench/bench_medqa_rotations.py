"""MedQA answer-order robustness on one GPU: the base and exp1 on all 1,273 questions, options in four orders.

Is MedQA accuracy knowledge or a preference for a letter? Each question is asked four times with its options
rotated cyclically (the correct answer stands once at each of A-D). The base is SmolLM2-135M-Instruct (real
weights); exp1 is trained here at the default on all real flashcards through `python -m training prepare` /
`train` (bench/quality_runs.py), or given as an adapter folder (`--adapter`). Both are scored by evaluate's
own MedQA code (training.medqa.score_questions: the chat method, the harness method and the four orders),
and every MedQA metric of the registry is summarised as phase 2 does (BCa intervals over questions, exp1
minus base paired on the same resamples). Target: at most ~2 minutes on one H100 or H200, training included.

    python3 bench/bench_medqa_rotations.py --base /tmp/real-base --work /tmp/rotations --out $OUT     # one GPU
    python3 bench/bench_medqa_rotations.py --base /tmp/real-base --adapter runs/exp1/adapter --out $OUT
    .venv/bin/python bench/bench_medqa_rotations.py --smoke --base artifacts/tiny-base \\
        --flashcards training/assets/sample_flashcards.jsonl --medqa medqa.jsonl --work /tmp/rot --out /tmp/rot

Writes <out>/<date>-<gpu>-medqa-rotations.json (the GPU's name from torch; "cpu" without one).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.common import environment, peak_memory_gb, result_path  # noqa: E402
from bench.quality_runs import FLASHCARDS, MEDQA, Run, base_record, prepare, run_metrics, train  # noqa: E402
from common.atomic import write_json_atomic  # noqa: E402
from training import metric_registry as registry  # noqa: E402
from training.provenance import sha256_file  # noqa: E402

TARGET_S = 120.0
EXP1 = Run("exp1", "exp1", {"quantization": "none"})  # bf16 LoRA: bitsandbytes is not on the benchmark machine
# The CPU check: two steps of the tiny base on a few flashcards, a handful of questions.
SMOKE = {"max_steps": 2, "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "max_seq_length": 128,
         "precision": "fp32"}
SMOKE_FLASHCARDS, SMOKE_QUESTIONS = 40, 6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO_ROOT / "artifacts" / "real-base")
    parser.add_argument("--adapter", type=Path, help="an exp1 adapter folder to score (default: train exp1 here)")
    parser.add_argument("--flashcards", type=Path, default=FLASHCARDS)
    parser.add_argument("--medqa", type=Path, default=MEDQA)
    parser.add_argument("--limit", type=int, help="the first N MedQA questions (default: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (evaluate's default)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (evaluate's default)")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "artifacts" / "bench-medqa-rotations")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, a CPU check of the script")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    exp1, seconds = adapter_for(args)
    from training import medqa

    limit = SMOKE_QUESTIONS if args.smoke else args.limit
    questions = medqa.load_questions(str(args.medqa), limit)
    rows, timing = {}, {}
    for name, adapter in (("base", None), ("exp1", exp1)):
        rows[name], timing[name] = score(args.base, adapter, questions, exp1, args.batch_size)
        print(f"{name}: {len(questions)} questions in {timing[name]['score_s']:.1f} s", flush=True)
    models, paired = summarise(rows, args.resamples)
    total_s = time.perf_counter() - start
    machine = environment()
    record = {
        "benchmark": "MedQA answer-order robustness: base and exp1, options in four cyclic orders, one GPU",
        "gpu": machine.get("gpu"),
        "questions": len(questions),
        "models": models,
        "paired_exp1_minus_base": paired,
        "correct_letter_in_the_dataset": {letter: sum(q["answer_idx"] == letter for q in questions) / len(questions)
                                          for letter in medqa.LETTERS},
        "exp1": {"adapter": str(exp1), "trained_here": args.adapter is None, **seconds},
        "timing": {**{f"{name}_{key}": value for name, t in timing.items() for key, value in t.items()},
                   "total_s": round(total_s, 1)},
        "target_s": TARGET_S,
        "meets_target": total_s <= TARGET_S,
        "settings": {"batch_size": args.batch_size, "bootstrap_resamples": args.resamples, "confidence": 0.95,
                     "seed": 42, "how": registry.MEDQA_ORDER.describe()},
        "inputs": {"medqa": str(args.medqa), "medqa_sha256": sha256_file(args.medqa),
                   "flashcards_sha256": sha256_file(args.flashcards) if args.adapter is None else None,
                   "base": base_record(args.base)},
        "environment": machine,
        "smoke": args.smoke,
    }
    path = result_path(args.out, "medqa-rotations")
    write_json_atomic(path, record)
    shown = ("medqa_harness_acc", "medqa_rotation_acc", "medqa_rotation_consistency")
    print(json.dumps({name: {key: round(values[key]["value"], 4) for key in shown} for name, values in models.items()}))
    print(f"total {total_s:.1f} s (target {TARGET_S:.0f} s); wrote {path}")
    return 0


def adapter_for(args) -> tuple[Path, dict]:
    """The exp1 adapter to score: the one given, or exp1 trained here with the CLIs (and what that took)."""
    if args.adapter is not None:
        return args.adapter, {}
    logs = args.work / "logs"
    started = time.perf_counter()
    data = prepare(args.work, args.base, args.flashcards, SMOKE_FLASHCARDS if args.smoke else "all", logs)
    prepared = time.perf_counter()
    run = Run(EXP1.name, EXP1.experiment, {**EXP1.settings, **(SMOKE if args.smoke else {})})
    train([run], args.base, data, args.work, logs)
    metrics = run_metrics(args.work, run.name)
    return args.work / "runs" / run.name / "adapter", {
        "prepare_s": round(prepared - started, 1), "train_process_s": round(time.perf_counter() - prepared, 1),
        "train_seconds": metrics["eval_loss"][-1].get("train_seconds") if metrics["eval_loss"] else None,
        "steps": metrics["steps"], "final_eval_loss": metrics["final_eval_loss"],
        "initial_eval_loss": metrics["initial_eval_loss"], "batching": metrics.get("batching")}


def score(base: Path, adapter: Path | None, questions: list[dict], exp1: Path, batch_size: int):
    """One model's medqa.jsonl rows, as `evaluate` writes them, and how long loading and scoring took. Both
    models are asked with the system prompt exp1 was trained with (its chat contract)."""
    import torch

    from training.chat import read_contract
    from training.generation import load_model
    from training.medqa import score_questions

    started = time.perf_counter()
    model, tokenizer = load_model(str(base), None, adapter)
    loaded = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rows = score_questions(model, tokenizer, questions, read_contract(exp1).system_prompt, batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    timing = {"load_s": round(loaded - started, 2), "score_s": round(time.perf_counter() - loaded, 2),
              "peak_gb": peak_memory_gb(model.device)}
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows, timing


def summarise(rows: dict[str, list[dict]], resamples: int, confidence: float = 0.95, seed: int = 42):
    """Every MedQA metric of the registry per model with phase 2's intervals, and exp1 minus base paired."""
    from training.eval_report import intervals, paired_against
    from training.metrics import resample_counts

    medqa_metrics = [metric for metric in registry.METRICS if metric.population is registry.MEDQA]
    models, built = {}, {}
    for name, model_rows in rows.items():
        data = registry.Rows([], model_rows)
        stats = {metric.key: metric.statistic(data) for metric in medqa_metrics}
        built[name] = ({registry.MEDQA.name: registry.MEDQA.ids(data)}, stats)
    counts = {registry.MEDQA.name: resample_counts(len(rows["base"]), resamples, seed)}
    for name, (_, stats) in built.items():
        models[name] = intervals(stats, counts, confidence)
    return models, paired_against(built["base"], built["exp1"], counts, confidence)


if __name__ == "__main__":
    sys.exit(main())
