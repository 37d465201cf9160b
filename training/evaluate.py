"""`python -m training evaluate`: the base model and every trained adapter on the test split.

Two phases, each in its own module. Phase 1 (training/eval_run.py) runs each model once (answers
decoded with the adapter's saved generation settings, answer perplexity, MedQA two ways and in four
answer orders) and writes eval/<model>/run.json, predictions.jsonl, medqa.jsonl and examples.jsonl (the
answers to the example questions the model card shows). Phase 2 (training/eval_report.py) derives
everything else from those files alone: metrics with BCa bootstrap intervals, paired differences
against the base, comparison.md/json and the plots. So a rerun of one model refreshes every
comparison, and anyone holding those files can recompute every number.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.config import CONFIG_DIR, EvalConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="reads CONFIG_DIR/eval.yaml when present")
    parser.add_argument("--config", type=Path, help="an eval YAML file (default: CONFIG_DIR/eval.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an EvalConfig setting, e.g. --set limit=20 --set models=base,exp1 "
                        "--set medqa=null (repeatable)")


def run(args: argparse.Namespace) -> int:
    from training.metric_registry import present

    config = resolve_config(args)
    summary = evaluate(config)
    for name, metrics in summary["models"].items():
        print(f"{name}: " + ", ".join(f"{m.key}={metrics[m.key]['value']:.4g}" for m in present(metrics)))
    print(f"wrote {config.output_dir}/comparison.md and {config.output_dir}/plots/")
    return 0


def resolve_config(args: argparse.Namespace) -> EvalConfig:
    """eval.yaml (when present) < --set."""
    from common.yaml_config import load_config

    path = args.config or (args.config_dir / "eval.yaml")
    if args.config is None and not path.exists():
        path = None
    return load_config(EvalConfig, path, args.set)


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Both phases: run the selected models, then summarise every model in the output folder."""
    from training.eval_report import summarise
    from training.eval_run import run_models

    run_models(config)
    return summarise(config.output_dir, config)
