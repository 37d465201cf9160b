"""Under a T4's constraints, on a bigger GPU: the plan a Colab T4 gets (issue #26), proven where no T4 is.

A constrained part plans for a T4 from its description (`Device.named("T4")`), is capped at its 15 GiB
(`torch.cuda.set_per_process_memory_fraction`, through `Device.hold_to_memory`) and has no flash kernel at all:
the flash and cuDNN SDPA backends are off and torch's variable-length flash entry point raises, so a stray flash
call fails as it would on a T4. fp16 (no bf16 anywhere). Each part is a process of its own, so that parts can
share the GPU (the summary records which did) and the unconstrained ones stay unconstrained.

Real weights (SmolLM2-135M-Instruct, all real flashcards, exp1; fp16 LoRA, QLoRA being measured on TinyLlama):
  prepare       the flashcards with SmolLM2's tokenizer (once, before the parts below)
  reference     the notebook's recipe (batches of 4 x 2 sequences, 3 epochs), constrained; then evaluated
  default       the T4 plan's default (packed steps, the scaled rate), constrained; evaluated; then the Space's
                decode loop (space/decoding.py) in fp16 on its merged adapter
  parity        fp16 against bf16: the first 20 step losses of the T4 plan on the same batches, constrained
  quality-bf16  exp1's default on this GPU as it is (bf16, unconstrained), for time to quality
TinyLlama-1.1B's architecture (random weights, the real tokenizer and flashcards; bench_sft_gpu.py's path):
  tinyllama     QLoRA and fp16 LoRA, constrained: tokens/s and peak memory
  speed-bf16    the default step (8,192 tokens, bf16, eager) on this GPU as it is: tokens/s
  summary       every part's results in OUT/<date>-<gpu>-t4-constraints.json (the GPU's name from torch)

    python3 bench/bench_t4_constraints.py PART --base REAL_BASE --tokenizer TINYLLAMA_TOKENIZER_AND_CONFIG \\
        --flashcards medical_flashcards_test_3396.json --work /tmp/t4 --out bench/results
    python3 bench/bench_t4_constraints.py all --tiny --work /tmp/t4-dry --out /tmp/t4-dry   # every part on the
        # CPU with the tiny base and a few steps (tests/test_bench_t4.py): nothing to constrain there

bench/gpu_shared_session.sh runs it on one H100 or H200, sharing the GPU with the search and MedQA benchmarks.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.quality_runs import FLASHCARDS, paired_difference, time_to_loss  # noqa: E402
from common.atomic import write_json_atomic  # noqa: E402
from training.device import GIB, VARLEN_MODULE, Device  # noqa: E402

CONSTRAINED = ("reference", "default", "parity", "tinyllama")
PARTS = ("prepare", *CONSTRAINED, "quality-bf16", "speed-bf16", "summary")
T4 = "T4"
# fp16 LoRA for exp1 (as the H200 quality benchmarks ran it, and as a T4 without bitsandbytes trains)
COMMON = {"quantization": "none"}
# The notebook's batches (4 sequences x 2 accumulation), validated and checkpointed only at its start and end: its
# final loss is the target, its curve is not needed, and it is the session's longest part (1,011 steps).
RECIPE = {"batch_tokens": None, "eval_steps": 10**4, "save_steps": 10**4}
PARITY_STEPS = 20
TINY = {"max_steps": 6, "eval_steps": 2, "save_steps": 6, "logging_steps": 1}
T4_EVAL_BATCH = 256  # what `evaluate` chooses on a GPU under 32 GiB
QUESTION = "What are the symptoms of iron deficiency anaemia?"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=[*PARTS, "all"], help="all: every part in turn, in this process (--tiny)")
    parser.add_argument("--base", type=Path, default=REPO_ROOT / "artifacts" / "real-base",
                        help="the real base (python -m training build-real-base)")
    parser.add_argument("--tokenizer", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "tokenizer",
                        help="TinyLlama's tokenizer and config.json (the TinyLlama parts)")
    parser.add_argument("--flashcards", type=Path, default=FLASHCARDS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/t4-constraints"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--tiny", action="store_true", help="a CPU dry run: tiny base, sample flashcards, few steps")
    args = parser.parse_args(argv)
    if args.part == "all" and not args.tiny:
        parser.error("`all` runs in one process: only for --tiny (on a GPU each part is a process; "
                     "see bench/gpu_shared_session.sh)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tiny:
        tiny_inputs(args)
    for part in PARTS if args.part == "all" else (args.part,):
        started = time.time()
        print(f"[t4] {part} ...", flush=True)
        result = RUN[part](args)
        if part != "summary":
            save(args, part, {**result, "started": started, "ended": time.time()})
        print(f"[t4] {part} done in {time.time() - started:.0f} s", flush=True)
    return 0


# ---------------------------------------------------------------- the constraints


def constrain(args) -> Device:
    """A T4 for this process: its description to plan for, its memory, no flash kernel. A dry run (--tiny) plans
    for this CPU instead: the same code runs, and there is nothing to constrain."""
    if args.tiny:
        return Device.detect()
    import torch

    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_cudnn_sdp(False)  # cuDNN's fused attention is flash-class (Ampere and newer) too
    varlen = importlib.import_module(VARLEN_MODULE)

    def no_flash(*args, **kwargs):
        raise RuntimeError("FlashAttention only supports Ampere GPUs or newer (T4 constraints: varlen flash off)")

    varlen.varlen_attn = no_flash
    device = Device.named(T4)
    device.hold_to_memory()
    return device


def precision(args) -> str:
    return "fp32" if args.tiny else "fp16"


# ---------------------------------------------------------------- parts on the real weights


def part_prepare(args) -> dict:
    from training.config import DataConfig
    from training.prepare import prepare

    report = prepare(DataConfig(source=str(args.flashcards), revision=None, tokenizer=str(args.base),
                                tokenizer_revision=None, max_examples=64 if args.tiny else "all",
                                output_dir=args.work / "data"))
    return {"splits": report["splits"]}


def experiment(args, name: str, settings: dict):
    from common.yaml_config import validate
    from training.config import ExperimentConfig, dump, load_experiment

    exp1 = dump(load_experiment("exp1", config_dir=REPO_ROOT / "configs"))
    return validate(ExperimentConfig, {**exp1, "name": name, "base_model": str(args.base), "base_revision": None,
                                       "data_dir": str(args.work / "data"), "runs_dir": str(args.work / "runs"),
                                       **COMMON, **(TINY if args.tiny else {}), **settings}, name)


def trained(args, name: str, settings: dict, device: Device) -> dict:
    from training.layout import RunsDir
    from training.train import train_experiment

    metrics = train_experiment(experiment(args, name, settings), device=device)
    plan = RunsDir(args.work / "runs").run(name).plan()
    keep = ("final_eval_loss", "initial_eval_loss", "eval_loss", "steps", "wall_time_s", "tokens_per_s",
            "peak_memory_bytes", "batching", "hardware")
    return {**{key: metrics[key] for key in keep}, "plan": plan}


def evaluated(args, name: str) -> dict:
    """ROUGE-L and friends of one run on the test split, by `python -m training evaluate`, in this process."""
    from training.cli import main as cli

    sets = {"data_dir": args.work / "data", "runs_dir": args.work / "runs", "output_dir": args.work / "eval" / name,
            "models": name, "medqa": "null", "precision": precision(args),
            **({"limit": 8, "max_new_tokens": 8} if args.tiny else {"batch_size": T4_EVAL_BATCH})}
    code = cli(["evaluate", *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]])
    if code:
        raise RuntimeError(f"evaluate {name} exited {code}")
    metrics = json.loads((args.work / "eval" / name / "comparison.json").read_text())["models"][name]
    return {key: metrics[key]["value"] for key in ("rougeL", "bleu", "perplexity")}


def part_reference(args) -> dict:
    run = trained(args, "reference", RECIPE, constrain(args))
    return {**run, "evaluation": evaluated(args, "reference")}


def part_default(args) -> dict:
    run = trained(args, "default", {}, constrain(args))
    return {**run, "evaluation": evaluated(args, "default"), "space": space_decoding(args)}


def space_decoding(args) -> dict:
    """The Space's own streaming (space/decoding.py's loop) on the default's merged adapter, in fp16: first token,
    tokens/s, and whether its greedy tokens equal `model.generate`'s (bench_generate_gpu.py's measurement)."""
    import torch

    from bench.bench_generate_gpu import stream_latency
    from training.generation import load_model

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    adapter = args.work / "runs" / "default" / "adapter"
    model, tokenizer = load_model(str(args.base), None, adapter, precision(args))
    measured = stream_latency(model, tokenizer, adapter, QUESTION, 1 if args.tiny else 5, None, None, True)
    check = measured["fast_decode_check"]
    return {"ttft_ms": measured["ttft_ms"], "tokens_per_s": measured["stream_tokens_per_s"],
            "greedy_equal": check["greedy_equals_generate"], "dtype": str(model.dtype), **measured}


def part_parity(args) -> dict:
    """The first steps of the T4 plan in its precision and in bf16, on the same batches (same seed, data order,
    dropout), all else the plan's."""
    import torch

    from training.plan import TrainingPlan
    from training.trainer import adapter_input_casts_skipped, build_model, build_trainer, load_tokenizer, training_data

    device = constrain(args)
    steps = 4 if args.tiny else PARITY_STEPS
    config = experiment(args, "parity", {"max_steps": steps, "logging_steps": 1, "eval_steps": 10**6,
                                         "save_steps": 10**6})
    tokenizer = load_tokenizer(config)
    data = training_data(config, tokenizer)
    plan = TrainingPlan.resolve(config, device, data.lengths)
    losses = {}
    for name in (plan.precision, "bf16"):
        made = replace(plan, precision=name)
        model = build_model(config, made)
        trainer = build_trainer(config, made, model, tokenizer, data, run_dir=args.work / f"parity-{name}",
                                eval_on_start=False)
        with adapter_input_casts_skipped(model, made):
            trainer.train()
        losses[name] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        del trainer, model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    first, bf16 = losses[plan.precision], losses["bf16"]
    relative = [abs(a - b) / abs(b) for a, b in zip(first, bf16)]
    return {"steps": steps, "losses": losses, "relative": relative, "max_rel": max(relative),
            "plan": plan.as_dict()}


def part_quality_bf16(args) -> dict:
    """exp1's default as this GPU trains it (the plan for this device; no constraints)."""
    return trained(args, "default-bf16", {}, Device.detect())


# ---------------------------------------------------------------- TinyLlama-1.1B's architecture


def sft_args(args, name: str, variants: list[str]):
    from bench import bench_sft_gpu

    device = ["--tiny", "--device", "cpu"] if args.tiny else []
    steps = ["--steps", "2", "--warmup", "1"] if args.tiny else ["--steps", "16", "--warmup", "4"]
    return bench_sft_gpu.parse_args([
        "--tokenizer", str(args.tokenizer), "--model-config", str(args.tokenizer), "--flashcards",
        str(args.flashcards), "--work-dir", str(args.work / "tinyllama"), "--out", str(args.work / f"{name}.json"),
        "--variants", *variants, *device, *steps])


def speed(args, variants: dict[str, dict], plan_for: Device | None) -> dict:
    import torch

    from bench import bench_sft_gpu

    options = sft_args(args, "tinyllama", list(bench_sft_gpu.VARIANTS)[:1])
    _, _, device = bench_sft_gpu.process_device(options.device)
    base, data = options.work_dir / ("tiny-base" if args.tiny else "base"), options.work_dir / "data"
    bench_sft_gpu.prepare_inputs(options, base, data)
    results = {}
    for name, variant in variants.items():
        if variant.get("quantization") == "nf4" and device.type != "cuda":
            results[name] = {"skipped": "QLoRA needs a CUDA GPU"}
            continue
        try:
            results[name] = bench_sft_gpu.run_variant(name, variant, base, data, options, device, plan_for=plan_for)
        except Exception as exc:  # one variant failing (OOM under the cap, say) must not lose the other
            results[name] = {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def part_tinyllama(args) -> dict:
    return speed(args, {"qlora": {"quantization": "nf4"}, "fp16_lora": {"quantization": "none"}}, constrain(args))


def part_speed_bf16(args) -> dict:
    from bench.bench_sft_gpu import VARIANTS

    return speed(args, {"bf16_8k": VARIANTS["bf16_8k"]}, None)


# ---------------------------------------------------------------- the results file


def save(args, part: str, result: dict) -> None:
    write_json_atomic(args.work / "parts" / f"{part}.json", result)


def load(args, part: str) -> dict | None:
    path = args.work / "parts" / f"{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_block(run: dict | None, target: float | None) -> dict:
    """The issue's keys for one exp1 run, read from its metrics."""
    if not run:
        return {"missing": True}
    curve = [e for e in run["eval_loss"] if e.get("train_seconds") is not None]
    return {"final_eval_loss": run["final_eval_loss"], "train_seconds": curve[-1]["train_seconds"] if curve else None,
            "rougeL": (run.get("evaluation") or {}).get("rougeL"),
            "time_to_reference_loss_s": time_to_loss(run, target) if target is not None else None,
            "peak_memory_gb": round(run["peak_memory_bytes"] / 1e9, 2), "steps": run["steps"],
            "tokens_per_s": run["tokens_per_s"], "evaluation": run.get("evaluation"), "plan": run["plan"],
            "curve": [(e["train_seconds"], e["loss"]) for e in curve]}


def variants(part: dict | None) -> dict:
    """A speed part's variants (without its timestamps)."""
    return {name: value for name, value in part.items() if name not in ("started", "ended")} if part \
        else {"missing": True}


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def file_name(gpu: str) -> str:
    """`<date>-<gpu>-t4-constraints.json`, the GPU as torch names it: "NVIDIA H100 80GB HBM3" -> h100-80gb-hbm3."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower().removeprefix("nvidia ")).strip("-")
    return f"{datetime.date.today()}-{slug}-t4-constraints.json"


def overlaps(parts: dict[str, dict]) -> dict[str, list[str]]:
    """Which parts ran at the same time as each (they shared the GPU)."""
    spans = {name: (p["started"], p["ended"]) for name, p in parts.items() if p and "started" in p}
    return {name: sorted(other for other, (s, e) in spans.items() if other != name and s < end and start < e)
            for name, (start, end) in spans.items()}


def part_summary(args) -> dict:
    from bench.common import environment
    from training.provenance import library_versions

    parts = {name: load(args, name) for name in PARTS[:-1]}
    reference, default = parts["reference"], parts["default"]
    target = reference["final_eval_loss"] if reference else None
    record = {
        "benchmark": "the T4 plan under a T4's constraints on a bigger GPU (issue #26): exp1 on SmolLM2-135M-Instruct "
                     "with all real flashcards, and TinyLlama-1.1B's architecture",
        "gpu": gpu_name(),
        "constraints": {"plan_for": "T4 (compute capability 7.5, 15 GiB)", "memory_cap_gib": 15,
                        "flash": "flash and cuDNN SDPA backends off; torch's varlen flash entry point raises",
                        "precision": precision(args), "applies_to": list(CONSTRAINED)},
        "reference": run_block(reference, target),
        "default": run_block(default, target),
        "fp16_loss_parity_max_rel": (parts["parity"] or {}).get("max_rel"),
        "fp16_loss_parity": parts["parity"],
        "tinyllama": variants(parts["tinyllama"]),
        "space_fp16": (default or {}).get("space") or {"missing": True},
        "bf16_default": {"quality": run_block(parts["quality-bf16"], target),
                         "tinyllama": variants(parts["speed-bf16"])},
        "shared_gpu_with": overlaps(parts),
        "environment": environment(),
        "versions": library_versions(),
        "tiny_dry_run": args.tiny,
    }
    if reference and default and default.get("evaluation") and reference.get("evaluation"):
        eval_dirs = (args.work / "eval" / "default", args.work / "eval" / "reference")
        record["default"]["paired_rougeL_vs_reference"] = paired_difference(args.work, "default", "reference",
                                                                            eval_dirs=eval_dirs)
    record["targets"] = targets(record)
    path = args.out / file_name(record["gpu"])
    write_json_atomic(path, record)
    print(json.dumps({key: record[key] for key in ("reference", "default", "fp16_loss_parity_max_rel", "targets")},
                     indent=1, default=str)[:4000])
    print(f"[t4] wrote {path}")
    return {"path": str(path)}


def targets(record: dict) -> dict:
    """The issue's targets, each met or not (None: not measured)."""
    reference, default = record["reference"], record["default"]
    paired = default.get("paired_rougeL_vs_reference")
    cap = 15 * GIB / 1e9
    peaks = [run.get("peak_memory_gb") for run in (reference, default)] + \
        [v.get("peak_memory_gb") for v in record["tinyllama"].values() if isinstance(v, dict)]
    reached = default.get("time_to_reference_loss_s")
    dtypes = [dtype for variant in record["tinyllama"].values() if isinstance(variant, dict)
              for dtype in variant.get("parameter_dtypes", ())]
    return {
        "default_final_loss_at_most_reference": None if "missing" in default or "missing" in reference
        else default["final_eval_loss"] <= reference["final_eval_loss"],
        "rougeL_not_lower_beyond_paired_interval": None if not paired else paired["ci_high"] >= 0,
        # never reaching the reference's loss misses the target; no reference time leaves it unmeasured
        "time_to_reference_loss_at_most_a_quarter": None if not reference.get("train_seconds")
        else reached is not None and reached <= reference["train_seconds"] / 4,
        "peak_memory_within_15_gib": None if not any(peaks) else all(p is None or p <= cap for p in peaks),
        "fp16_loss_parity_within_1_percent": None if record["fp16_loss_parity_max_rel"] is None
        else record["fp16_loss_parity_max_rel"] <= 0.01,
        "space_greedy_equal": record["space_fp16"].get("greedy_equal"),
        "no_bf16_weights_under_the_t4_plan": None if not dtypes else not any("bfloat16" in d for d in dtypes),
    }


# ---------------------------------------------------------------- the dry run's inputs


def tiny_inputs(args) -> None:
    """The tiny base and the bundled sample flashcards in place of the real ones (once)."""
    from training.sample import SAMPLE_PATH
    from training.tiny_base import build_tiny_base

    args.base = args.work / "tiny-base"
    if not (args.base / "config.json").exists():
        build_tiny_base(args.base)
    args.tokenizer, args.flashcards = args.base, SAMPLE_PATH


RUN = {"prepare": part_prepare, "reference": part_reference, "default": part_default, "parity": part_parity,
       "quality-bf16": part_quality_bf16, "tinyllama": part_tinyllama, "speed-bf16": part_speed_bf16,
       "summary": part_summary}

if __name__ == "__main__":
    raise SystemExit(main())
