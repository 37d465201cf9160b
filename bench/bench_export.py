"""Exporting a real fine-tune: seconds and sizes per format, and how close each export answers to the adapter.

The real base SmolLM2-135M-Instruct (`python -m training build-real-base`), real flashcards from
../shared/data, exp1 trained briefly on the CPU, then `python -m training export` (merged float16 weights,
GGUF F16 / Q8_0 / Q4_K_M through llama.cpp) with its verification on 32 test questions. Everything runs
through the project's CLIs (bench/quality_runs.py).

    .venv/bin/python bench/bench_export.py                 # 32 questions
    .venv/bin/python bench/bench_export.py --questions 8   # what a busy 2-core machine managed
    .venv/bin/python bench/bench_export.py --examples 320 --steps 4   # 32 test questions, a shorter training

Writes bench/results/<date>-export-cpu.json: per format the export seconds, file size, logit NMSE
against the merged model, greedy agreement, ROUGE-L with the paired interval against the adapter, and
the targets missed (the export runs with verify=false and is then verified here, so a miss is measured).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.quality_runs import FLASHCARDS, Run, base_record, cli, prepare, run_metrics, sets, train  # noqa: E402
from common.atomic import write_json_atomic  # noqa: E402
from training.export import ExportConfig  # noqa: E402
from training.provenance import hardware, library_versions, sha256_file  # noqa: E402

# exp1 as the CPU quality benchmark trains it (short steps at a high rate), shorter: the export is measured.
RUN = Run("exp1", "exp1", {"max_steps": 12, "learning_rate": 1e-3, "max_seq_length": 256, "eval_steps": 6,
                           "save_steps": 12, "generation.max_new_tokens": 96})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO_ROOT / "artifacts" / "real-base")
    parser.add_argument("--flashcards", type=Path, default=FLASHCARDS)
    parser.add_argument("--examples", type=int, default=600, help="flashcards prepared (test split: a tenth)")
    parser.add_argument("--questions", type=int, default=32, help="test questions the verification answers")
    parser.add_argument("--steps", type=int, default=RUN.settings["max_steps"],
                        help="optimizer steps of the training (evaluated at the start and the end)")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "artifacts" / "bench-export")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<date>-export-cpu.json)")
    args = parser.parse_args(argv)
    out = args.out or REPO_ROOT / "bench" / "results" / f"{datetime.date.today()}-export-cpu.json"
    logs = args.work / "logs"

    data = prepare(args.work, args.base, args.flashcards, args.examples, logs)
    run = Run(RUN.name, RUN.experiment, {**RUN.settings, "max_steps": args.steps, "eval_steps": args.steps,
                                     "save_steps": args.steps})
    if not (args.work / "runs" / RUN.name / "adapter").is_dir():
        train([run], args.base, data, args.work, logs)
    exports = args.work / "exports"
    load_before = os.getloadavg()
    started = time.perf_counter()
    settings = {"runs_dir": str(args.work / "runs"), "output_dir": str(exports), "experiments": RUN.name,
                "questions": args.questions}
    # Exported without the gate, then verified here: the numbers are wanted whether or not a target is met.
    cli(["training", "export", *sets({**settings, "verify": False})], logs / "export.log")
    wall = time.perf_counter() - started
    folder = exports / RUN.name
    manifest = json.loads((folder / "export.json").read_text())
    report = verify(folder, ExportConfig(**settings))
    record = {
        "benchmark": "export of a real fine-tune (merged weights, GGUF through llama.cpp), CPU",
        "summary": summary(manifest, report, wall),
        "verification": report,
        "run": {"settings": run.settings, "final_eval_loss": run_metrics(args.work, RUN.name)["final_eval_loss"]},
        "export": {k: manifest[k] for k in ("merge", "chat", "runtime", "base_model")},
        "inputs": {"flashcards_sha256": sha256_file(args.flashcards), "examples": args.examples,
                   "base": base_record(args.base)},
        "hardware": hardware(), "versions": library_versions(),
        # other work on the machine slows every number here: the 1-minute load average around the export
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    write_json_atomic(out, record)
    print(json.dumps(record["summary"], indent=2))
    return 0


def verify(folder: Path, config) -> dict:
    """export's own checks on the export in `folder` (verification.json written there), failed targets included."""
    from common.errors import VerificationError
    from training.export import VERIFICATION, verify_folder
    from training.export_merge import read_run

    try:
        verify_folder(folder, read_run(config.runs_dir, RUN.name), config)
    except VerificationError as missed:
        print(f"targets missed: {missed}")
    return json.loads((folder / VERIFICATION).read_text())


def summary(manifest: dict, report: dict, wall: float) -> dict:
    """One row per format: export seconds, bytes, fidelity to the merged model, ROUGE-L against the adapter's."""
    def rouge(name):
        entry = report["rougeL"][name]
        paired = entry["vs_adapter"]
        return {"rougeL": round(entry["value"], 4),
                "vs_adapter": None if paired is None else {k: round(v, 4) for k, v in paired.items()}}

    formats = {"merged": {"seconds": manifest["merged"]["seconds"], "bytes": manifest["merged"]["bytes"],
                          "max_abs_logit_diff_vs_adapter": report["merged"]["max_abs_diff"],
                          "greedy_equal": f"{report['merged']['greedy_equal']}/{report['merged']['greedy_questions']}",
                          "near_tie_divergences": report["merged"]["divergences"],
                          **rouge("merged")}}
    for quant_type, entry in manifest["gguf"].items():
        checks = report["gguf"][quant_type]
        formats[quant_type] = {
            "seconds": entry["seconds"], "bytes": entry["bytes"], "nmse_vs_merged": checks["logits"]["nmse"],
            "top1_agreement": round(checks["logits"]["top1_agreement"], 4),
            "greedy_equal_to_merged": f"{checks['greedy']['greedy_equal']}/{checks['greedy']['greedy_questions']}",
            "hit_token_limit": checks["greedy"]["hit_token_limit"], "runaway": checks["greedy"]["runaway"],
            "template_tokens_equal": f"{checks['template']['equal']}/{checks['template']['conversations']}",
            **rouge(quant_type)}
    return {"adapter_rougeL": rouge("adapter")["rougeL"], "formats": formats, "failures": report["failures"],
            "export_wall_s_without_verification": round(wall, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
