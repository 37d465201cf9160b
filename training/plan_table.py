"""The plan for every GPU class, from device descriptions alone: the table README.md ("Precision and speed") and
bench/README.md show between their `plan-table` markers (tests/test_plan.py checks they match this code).

    python -m training.plan_table            # print the table
    python -m training.plan_table --write    # rewrite it in README.md and bench/README.md
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from training.config import REPO_ROOT, ExperimentConfig
from training.device import GIB, GPU_CLASSES, Device, Software
from training.plan import COMPILE_MIN_STEPS, SMOLLM2, TINYLLAMA, TrainingPlan

DOCS = (REPO_ROOT / "README.md", REPO_ROOT / "bench" / "README.md")
BEGIN, END = "<!-- plan-table: python -m training.plan_table --write -->", "<!-- /plan-table -->"
# What the table assumes is installed: what README.md recommends for a GPU (pip install bitsandbytes liger-kernel)
# and a torch with torch.nn.attention.varlen.
SOFTWARE = Software(bitsandbytes=True, liger_kernel=True, flash_varlen=True)
# Stand-in examples for the table (the real flashcards' mean is ~160 tokens); the step size does not depend on them.
LENGTHS = [160] * 600


def plan_for(device: Device, shape, steps: int) -> TrainingPlan:
    """exp1's defaults on `device`, for a run of `steps` optimizer steps."""
    config = ExperimentConfig(name="exp1", max_steps=steps)
    return TrainingPlan.resolve(config, device, LENGTHS, software=SOFTWARE, shape=shape)


def rows() -> list[dict]:
    table = []
    for name in ["CPU", *GPU_CLASSES]:
        device = Device.named(name)
        short, long = (plan_for(device, TINYLLAMA, steps) for steps in (100, COMPILE_MIN_STEPS))
        small = plan_for(device, SMOLLM2, 100)
        table.append({
            "gpu": name, "device": device,
            "capability": f"{device.capability[0]}.{device.capability[1]}" if device.cuda else "–",
            "memory": f"{device.memory_bytes / GIB:.0f} GiB" if device.cuda else "–",
            "attention": short.attention, "precision": short.precision, "quantization": short.quantization,
            "step": [step_size(short), step_size(small)],
            "compile": f"runs of {COMPILE_MIN_STEPS:,}+ steps" if long.compile_layers else "no",
            "liger": ("shorter runs" if long.compile_layers else "yes") if short.liger else "no",
            "plans": (short, long, small),
        })
    return table


def step_size(plan: TrainingPlan) -> str:
    if plan.packed:
        return f"{plan.tokens_per_step:,} tokens"
    return f"{plan.micro_batch * plan.accumulation * plan.device.count} sequences"


def markdown() -> str:
    lines = [BEGIN,
             "| GPU | compute capability | memory | attention kernel | precision | quantization | step: "
             "TinyLlama-1.1B | step: SmolLM2-135M | compiled layers | Liger |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows():
        lines.append(f"| {row['gpu']} | {row['capability']} | {row['memory']} | `{row['attention']}` | "
                     f"{row['precision']} | {row['quantization']} | {row['step'][0]} | {row['step'][1]} | "
                     f"{row['compile']} | {row['liger']} |")
    lines.append(END)
    return "\n".join(lines)


def in_docs(path: Path) -> str | None:
    """The table as `path` shows it, or None when it has no markers."""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), path.read_text(encoding="utf-8"), re.S)
    return match.group(0) if match else None


def write(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8")
    if in_docs(path) is None:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers")
    path.write_text(text.replace(in_docs(path), table), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md and bench/README.md")
    args = parser.parse_args(argv)
    table = markdown()
    if args.write:
        for path in DOCS:
            write(path, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
