"""What a run leaves behind: its clock and metrics, the adapter folder, metrics.json and provenance.json in the
staged run, runs/best.json over the finished runs, and the summary table `train` prints (ARCHITECTURE.md)."""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from common.atomic import replace_dir, write_json_atomic
from training.config import ExperimentConfig, dump
from training.plan import TrainingPlan
from training.layout import DataDir, RunDir, RunsDir


def session_clock():
    """A callback timing this training session and counting its tokens (a resume counts only its own part)."""
    from transformers import TrainerCallback

    class SessionClock(TrainerCallback):
        """Also the training seconds (validation excluded) at which each validation loss was reached:
        the x axis of time-to-quality curves, fair between runs that validate more or less often."""

        start = seconds = mark = validating = 0.0
        tokens_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.mark = time.perf_counter()
            self.tokens_at_start = state.num_input_tokens_seen
            self.validating = 0.0
            self.reached_at: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            self.mark = time.perf_counter()

        def on_evaluate(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.reached_at[state.global_step] = round(self.mark - self.start - self.validating, 3)
            self.validating += now - self.mark
            self.mark = now

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.start

    return SessionClock()


def collect_metrics(state, clock, plan: TrainingPlan) -> dict[str, Any]:
    """metrics.json: the loss curves, speed and memory of the run, and how it was planned."""
    history = state.log_history
    train_loss = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]} for e in history if "loss" in e]
    reached_at = getattr(clock, "reached_at", {})
    eval_loss = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["eval_loss"],
                  "train_seconds": reached_at.get(e["step"])} for e in history if "eval_loss" in e]
    session_tokens = state.num_input_tokens_seen - clock.tokens_at_start
    return {
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "initial_eval_loss": eval_loss[0]["loss"] if eval_loss and eval_loss[0]["step"] == 0 else None,
        "best_eval_loss": min(e["loss"] for e in eval_loss),
        "final_eval_loss": eval_loss[-1]["loss"],
        "steps": state.global_step,
        "wall_time_s": round(clock.seconds, 3),
        "train_tokens": state.num_input_tokens_seen,
        "tokens_per_s": round(session_tokens / clock.seconds, 1) if clock.seconds else None,
        **peak_memory(plan),
        "hardware": {"device": plan.device.kind, "gpu": plan.device.name if plan.device.cuda else None,
                     "precision": plan.precision, "quantization": plan.quantization,
                     "processes": plan.device.count, "attention": plan.attention, "padding_free": plan.padding_free,
                     "liger_kernels": plan.liger, "compile_layers": plan.compile_layers},
        "batching": plan.batching(),
    }


def peak_memory(plan: TrainingPlan) -> dict[str, Any]:
    if plan.device.cuda:
        import torch

        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_kind": "cuda_max_allocated"}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_memory_kind": "process_max_rss"}


def write_outputs(config: ExperimentConfig, plan: TrainingPlan, trainer, tokenizer, metrics: dict[str, Any],
                  run_dir: Path) -> None:
    """adapter/, metrics.json and provenance.json into `run_dir` (the staged run; plan.json is there already)."""
    from training.chat import write_contract
    from training.provenance import base_model_record, stamp

    report = DataDir(config.data_dir).report()
    run = RunDir(run_dir)

    def save(folder: Path) -> None:
        trainer.model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))  # carries the chat template
        write_contract(folder, tokenizer, report.get("system_prompt"), config.generation)

    replace_dir(run.adapter, save)
    write_json_atomic(run.metrics_file, metrics)
    write_json_atomic(run.provenance_file, {
        **stamp(),
        "data": {"fingerprint": report.get("fingerprint"), "sources": report.get("sources"),
                 "dir": str(config.data_dir)},
        "base_model": base_model_record(config.base_model, config.base_model_revision),
        "plan": plan.as_dict(),
        "config": dump(config),
    })


def update_best(runs_dir: Path) -> dict[str, Any] | None:
    """runs/best.json: the run with the lowest best validation loss among those present."""
    candidates = {}
    for run in RunsDir(runs_dir).finished():
        loss = run.metrics().get("best_eval_loss")
        if isinstance(loss, (int, float)):
            candidates[run.name] = loss
    if not candidates:
        return None
    name = min(candidates, key=candidates.get)
    best = {"experiment": name, "eval_loss": candidates[name], "candidates": candidates}
    write_json_atomic(RunsDir(runs_dir).best_file, best)
    return best


def summary_table(results: list[dict[str, Any]]) -> str:
    def fmt(value, spec=".4f"):
        return "-" if value is None else format(value, spec)

    header = ("experiment", "steps", "initial", "best", "final", "time s", "tok/s", "adapter")
    rows = [(r["name"], str(r["steps"]), fmt(r["initial_eval_loss"]), fmt(r["best_eval_loss"]),
             fmt(r["final_eval_loss"]), fmt(r["wall_time_s"], ".1f"), fmt(r["tokens_per_s"], ".0f"),
             str(RunDir(Path(r["run_dir"])).adapter)) for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "validation loss\n" + "\n".join(lines)
