"""bench/bench_t4_constraints.py's dry run: every part on the CPU with the tiny base and a few steps, so that the
one GPU session it is written for does not fail on a typo; and its results file names the GPU torch reports."""
from __future__ import annotations

import json

import pytest

from bench.bench_t4_constraints import file_name, main

ISSUE_KEYS = {"final_eval_loss", "train_seconds", "rougeL", "time_to_reference_loss_s", "peak_memory_gb"}


@pytest.mark.slow
def test_every_part_runs_and_the_summary_has_the_issues_keys(tmp_path):
    assert main(["all", "--tiny", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    [path] = (tmp_path / "out").glob("*-t4-constraints.json")
    assert path.name == file_name("cpu")
    record = json.loads(path.read_text())
    for run in ("reference", "default"):
        assert ISSUE_KEYS <= set(record[run]) and record[run]["final_eval_loss"] > 0, run
    # The reference reaches its own final loss by definition; whether a few tiny-model steps of the default do
    # is the GPU run's finding, not the dry run's (None means it did not, and the target says so).
    assert record["reference"]["time_to_reference_loss_s"] is not None
    reached = record["default"]["time_to_reference_loss_s"]
    assert (reached is None) is (record["targets"]["time_to_reference_loss_at_most_a_quarter"] is False)
    assert record["reference"]["plan"]["packed"] is False  # the notebook's batches of sequences
    assert set(record["default"]["paired_rougeL_vs_reference"]) == {"diff", "ci_low", "ci_high", "n"}
    assert 0 <= record["fp16_loss_parity_max_rel"] < 0.05  # fp32 against bf16 here; fp16 against bf16 on a GPU
    assert len(record["fp16_loss_parity"]["losses"]["bf16"]) == record["fp16_loss_parity"]["steps"]
    assert record["tinyllama"]["qlora"] == {"skipped": "QLoRA needs a CUDA GPU"}
    assert record["tinyllama"]["fp16_lora"]["tokens_per_s"] > 0 and "peak_memory_gb" in record["tinyllama"]["fp16_lora"]
    assert record["bf16_default"]["tinyllama"]["bf16_8k"]["tokens_per_s"] > 0
    assert ISSUE_KEYS <= set(record["bf16_default"]["quality"])
    space = record["space_fp16"]
    assert space["ttft_ms"] > 0 and space["tokens_per_s"] > 0 and space["greedy_equal"] is True
    assert set(record["targets"]) == {
        "default_final_loss_at_most_reference", "rougeL_not_lower_beyond_paired_interval",
        "time_to_reference_loss_at_most_a_quarter", "peak_memory_within_15_gib", "fp16_loss_parity_within_1_percent",
        "space_greedy_equal", "no_bf16_weights_under_the_t4_plan"}
    assert record["tiny_dry_run"] is True and set(record["shared_gpu_with"]) >= {"reference", "default", "parity"}


def test_the_results_file_is_named_after_the_gpu_that_ran_it():
    assert file_name("NVIDIA H100 80GB HBM3").endswith("-h100-80gb-hbm3-t4-constraints.json")
    assert file_name("NVIDIA H200").endswith("-h200-t4-constraints.json")
    assert "h200" not in file_name("NVIDIA H100 80GB HBM3")


def test_all_parts_in_one_process_only_for_the_dry_run(capsys):
    with pytest.raises(SystemExit):
        main(["all", "--work", "/nonexistent"])
    assert "only for --tiny" in capsys.readouterr().err
