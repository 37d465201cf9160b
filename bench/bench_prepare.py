"""Benchmark `prepare` on the real data: 3,396 flashcards + 5,942 WikiDoc rows, real TinyLlama tokenizer.

Target: under 10 s wall time on a 2-core CPU for the whole pipeline (library imports, read, clean,
split, chat-format, token statistics, save), with `max_examples: all`. Writes
bench/results/prepare-cpu.json with wall and CPU seconds and the load average before the run
(wall time is only meaningful on an otherwise idle machine; CPU seconds are an upper bound on
single-core wall time).

    .venv/bin/python bench/bench_prepare.py [--shared-data ../shared/data]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from common.atomic import write_json_atomic  # noqa: E402
from training.config import DataConfig  # noqa: E402
from training.prepare import prepare  # noqa: E402
from training.provenance import hardware, library_versions  # noqa: E402

TARGET_S = 10.0
RESULT = REPO_ROOT / "bench" / "results" / "prepare-cpu.json"


def cpu_seconds() -> float:
    """User + system time of this process, all threads (the tokenizer encodes on every core)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def import_heavy_libraries() -> None:
    """What `python -m training prepare` pays once: datasets and transformers (the tokenizer
    class itself, and its module imports, are loaded inside `prepare` and timed there)."""
    import datasets
    import transformers  # noqa: F401

    datasets.disable_progress_bars()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    data = args.shared_data
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        config = DataConfig(
            source=str(data / "flashcards" / "medical_flashcards_test_3396.json"),
            extra_sources=[str(data / "medical_meadow_wikidoc_patient_information.json")],
            revision=None,
            tokenizer=str(data / "tokenizer"),
            tokenizer_revision=None,
            max_examples="all",
            output_dir=Path(tmp) / "processed",
        )
        load_before = os.getloadavg()[0]  # other work on the machine inflates wall time
        start, cpu_start = time.perf_counter(), cpu_seconds()
        import_heavy_libraries()
        imported = time.perf_counter()
        report = prepare(config)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    result = {
        "benchmark": "prepare, real flashcards + WikiDoc, real tokenizer, max_examples=all",
        "rows_in": report["rows_in"],
        "rows_out": report["rows_out"],
        "dropped": report["dropped"],
        "splits": report["splits"],
        "counts_add_up": report["rows_in"] == report["rows_out"] + sum(report["dropped"].values())
        and report["rows_out"] == sum(report["splits"].values()),
        "seconds": round(seconds, 2),
        "of_which_imports_s": round(imported - start, 2),
        "cpu_seconds": round(cpu, 2),
        "rows_per_s": round(report["rows_in"] / seconds),
        "target_s": TARGET_S,
        "meets_target": seconds < TARGET_S,
        "cpu_cores_available": len(os.sched_getaffinity(0)),
        "load_average_1min_before": round(load_before, 2),
        "lengths": report["lengths"],
        "fingerprint": report["fingerprint"],
        "hardware": hardware(),
        "versions": library_versions(),
    }
    write_json_atomic(RESULT, result)
    print(f"{result['rows_in']} rows in, {result['rows_out']} out, {seconds:.2f} s "
          f"(target < {TARGET_S:.0f} s: {'met' if result['meets_target'] else 'MISSED'}); counts add up: "
          f"{result['counts_add_up']}; written to {RESULT.relative_to(REPO_ROOT)}")
    return 0 if result["counts_add_up"] else 1


if __name__ == "__main__":
    sys.exit(main())
