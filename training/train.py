"""`python -m training train`: LoRA / QLoRA fine-tuning of the base model with trl's SFTTrainer.

One experiment (`--experiment exp1`, or a path to a YAML file) or all of them (`--all`). Every run
writes runs/<experiment>/ as ARCHITECTURE.md describes, and runs/best.json names the run with the
lowest validation loss.

    python -m training train --experiment exp1
    python -m training train --experiment exp1 --set learning_rate=1e-4 --set lora.r=32

Several GPUs on one machine (DDP; effective_batch_size is then spread over the processes):

    accelerate launch --config_file configs/accelerate/ddp.yaml -m training train --experiment exp1

The stages of a run: preflight checks (training/preflight.py) -> the examples, tokenized -> the plan
(training/plan.py) -> model and trainer (training/trainer.py) -> training -> outputs (training/run_outputs.py).
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from training.config import CONFIG_DIR, ExperimentConfig, all_experiments, dump, load_experiment
from training.device import Device, is_main_process
from training.plan import TrainingPlan
from training.preflight import check_all
from training.run_folder import RunLock, finish_staged_run, start_staged_run
from training.run_outputs import collect_metrics, session_clock, summary_table, update_best, write_outputs
from training.trainer import build_model, build_trainer, load_tokenizer, train, training_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="experiment name (configs/experiments/NAME.yaml) or a YAML path")
    which.add_argument("--all", action="store_true", help="every experiment in CONFIG_DIR/experiments")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="folder holding experiments/ (default: configs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set learning_rate=1e-4 --set lora.r=8 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each run from its last checkpoint in runs/<experiment>/checkpoints")


def run(args: argparse.Namespace) -> int:
    configs = select_experiments(args)
    device = Device.detect()
    check_all(configs, device)
    results = [train_experiment(config, resume=args.resume, device=device) for config in configs]
    if is_main_process():
        for runs_dir in dict.fromkeys(config.runs_dir for config in configs):
            update_best(runs_dir)
        print(summary_table(results))
    return 0


def select_experiments(args: argparse.Namespace) -> list[ExperimentConfig]:
    names = [str(path) for path in all_experiments(args.config_dir)] if args.all else [args.experiment]
    if not names:
        raise ConfigError(f"no experiments in {args.config_dir / 'experiments'} (expected *.yaml files)")
    return [load_experiment(name, args.overrides, args.config_dir) for name in names]


def train_experiment(config: ExperimentConfig, *, resume: bool = False, callbacks=(),
                     device: Device | None = None) -> dict[str, Any]:
    """Train one experiment into runs/<name>/; returns its metrics.

    `device`: what to plan for (None: this machine). A share of a GPU (`Device.detect().share(n)`, for several
    trials on one GPU) or a smaller GPU's description is also held to its memory. The run is staged in
    runs/.in-progress/<name>/ and swapped in whole when it finishes, under a lock (training/run_folder.py):
    a failure or a signal leaves the previous run as it was.
    """
    device = device or Device.detect()
    device.hold_to_memory()
    tokenizer = load_tokenizer(config)
    data = training_data(config, tokenizer)
    plan = TrainingPlan.resolve(config, device, data.lengths)  # before any weights load
    main = is_main_process()
    with RunLock(config.run_dir) if main else contextlib.nullcontext():
        work_dir, checkpoint = start_staged_run(config.run_dir, dump(config), plan, resume, main=main)
        model = build_model(config, plan)
        clock = session_clock()
        trainer = build_trainer(config, plan, model, tokenizer, data, run_dir=work_dir,
                                eval_on_start=checkpoint is None, callbacks=[clock, *callbacks])
        train(trainer, plan, checkpoint)
        metrics = collect_metrics(trainer.state, clock, plan)
        if trainer.is_world_process_zero():
            write_outputs(config, plan, trainer, tokenizer, metrics, work_dir)
            finish_staged_run(work_dir, config.run_dir)
    return {"name": config.name, "run_dir": str(config.run_dir), **metrics}
