"""Several processes (DDP, gloo on CPU) train the same optimizer steps as one: the batching rule.

On a GPU, `batch_tokens: auto` gives each of N processes 1/N of AUTO_BATCH_TOKENS, so an optimizer step
holds the same tokens on any GPU count; the learning rate follows the examples the whole step holds.
Here two CPU processes of 1,024 tokens each are set against one process of 2,048."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from space_support import free_port

pytestmark = [pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parent.parent


def train(processes: int, batch_tokens: int, data: Path, runs: Path, base: Path) -> dict:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", str(free_port())] if processes > 1 else [sys.executable]
    result = subprocess.run(
        [*launcher, "-m", "training", "train", "--experiment", "configs/demo/experiments/demo-a.yaml",
         *[arg for kv in {"base_model": base, "data_dir": data, "runs_dir": runs, "padding_free": "true",
                          "batch_tokens": batch_tokens, "max_steps": 4, "eval_steps": 4, "save_steps": 4,
                          "lora.dropout": 0.0}.items() for arg in ("--set", f"{kv[0]}={kv[1]}")]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((runs / "demo-a" / "metrics.json").read_text())


def test_two_processes_take_the_one_process_step(tiny_base, tmp_path):
    from training.config import DataConfig
    from training.prepare import prepare

    data = tmp_path / "data"
    prepare(DataConfig(source=str(REPO_ROOT / "training/assets/sample_flashcards.jsonl"), revision=None,
                       tokenizer=str(tiny_base), tokenizer_revision=None, max_examples="all", output_dir=data))
    one = train(1, 2048, data, tmp_path / "one", tiny_base)
    two = train(2, 1024, data, tmp_path / "two", tiny_base)
    assert (one["batching"]["processes"], two["batching"]["processes"]) == (1, 2)
    assert one["batching"]["tokens_per_step"] == two["batching"]["tokens_per_step"] == 2048
    # The same examples a step (packing per process differs a little), so the same scaled learning rate.
    examples = one["batching"]["mean_examples_per_step"], two["batching"]["mean_examples_per_step"]
    assert examples[1] == pytest.approx(examples[0], rel=0.1)
    assert two["batching"]["learning_rate"] == pytest.approx(one["batching"]["learning_rate"], rel=0.1)
    assert two["steps"] == one["steps"] == 4
    assert abs(two["final_eval_loss"] - one["final_eval_loss"]) < 0.02
    assert two["final_eval_loss"] < two["initial_eval_loss"]
