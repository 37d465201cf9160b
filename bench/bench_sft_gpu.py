"""Training throughput of `python -m training train` itself: trl's SFTTrainer as train.py builds it.

bench_train_gpu.py compares recipes in a plain loop on the model alone; this one runs the project's
whole training path (prepare -> tokenize -> TrainingPlan.resolve -> build_model -> build_trainer -> train) on the
real flashcards and tokenizer with TinyLlama-1.1B's architecture (random weights), one variant of the
experiment config at a time, and times optimizer steps after warm-up with a callback. "Real tokens"
are the Trainer's own count (`num_input_tokens_seen`: every token of the padding-free rows; the sum
over processes under DDP). MFU = tokens/s x 4N (N = 1.034e9) / (measured bf16 matmul rate x GPUs).

    python bench/bench_sft_gpu.py --out sft_1gpu.json                                    # one GPU
    accelerate launch --config_file configs/accelerate/ddp.yaml bench/bench_sft_gpu.py \\
        --variants bf16 --out sft_2gpu.json                                              # DDP
    python bench/bench_sft_gpu.py --tiny --device cpu --variants cpu_packed --steps 2 --warmup 1 --out /tmp/s.json
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from bench.common import (  # noqa: E402
    TINYLLAMA_MATMUL_PARAMS, environment, loss_and_grad_norm, matmul_tflops, peak_memory_gb, process_device,
    random_base_model, synchronize,
)
from common.atomic import write_json_atomic  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"

ADAPTER_CASTS = "adapter_input_casts"  # a bench-only setting: train without train.adapter_input_casts_skipped

# name -> experiment settings over exp1's (configs/experiments/exp1.yaml). "default" is exp1 as shipped:
# QLoRA when bitsandbytes is installed, packed batches sized from GPU memory, Liger when installed.
# Liger patches transformers' Llama classes for the whole process: run a *_no_liger variant in a
# process of its own, before any variant with Liger.
VARIANTS = {
    "default": {},
    "default_no_liger": {"liger_kernels": False},
    "bf16": {"quantization": "none"},
    "bf16_no_liger": {"quantization": "none", "liger_kernels": False},
    "bf16_16k": {"quantization": "none", "batch_tokens": 16384},
    "bf16_no_liger_adapter_casts": {"quantization": "none", "liger_kernels": False, ADAPTER_CASTS: True},
    "bf16_sequences_b4x2": {"quantization": "none", "batch_tokens": None},  # the notebook's batches, padding-free
    "cpu_packed": {"quantization": "none", "batch_tokens": 1024, "padding_free": True},  # smoke test
    # the default step size (AUTO_BATCH_TOKENS on one GPU), eager and with compiled decoder layers (which go
    # without Liger: training/plan.py)
    "bf16_8k": {"quantization": "none", "batch_tokens": 8192, "compile_layers": False},
    "bf16_8k_compiled": {"quantization": "none", "batch_tokens": 8192, "compile_layers": True},
    "qlora_8k": {"quantization": "nf4", "batch_tokens": 8192, "compile_layers": False},
    "qlora_8k_compiled": {"quantization": "nf4", "batch_tokens": 8192, "compile_layers": True},
}

PROFILED_STEPS = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+",
                        default=["default", "bf16", "bf16_16k", "bf16_sequences_b4x2"],
                        choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=16, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=4, help="untimed optimizer steps first")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizer")
    parser.add_argument("--model-config", type=Path, default=SHARED / "tokenizer", help="folder with config.json")
    parser.add_argument("--flashcards", type=Path, default=SHARED / "flashcards" / "medical_flashcards_test_3396.json")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-sft"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="shrink the architecture (CPU smoke test)")
    parser.add_argument("--profile", nargs="*", default=[], choices=list(VARIANTS),
                        help="variants to profile after their timed steps (profile_<variant>.txt beside --out)")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world, device = process_device(args.device)
    base_dir, data_dir = args.work_dir / ("tiny-base" if args.tiny else "base"), args.work_dir / "data"
    if rank == 0:
        prepare_inputs(args, base_dir, data_dir)
    if world > 1:
        torch.distributed.barrier()
    peak = matmul_tflops(device)
    results = {"environment": environment(), "world_size": world, "matmul_tflops_bf16": peak,
               "steps": args.steps, "warmup": args.warmup, "variants": {}}
    for name in args.variants:
        try:
            outcome = run_variant(name, VARIANTS[name], base_dir, data_dir, args, device)
        except Exception as exc:  # one variant failing (a missing package, OOM) must not lose the others
            outcome = {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if peak and "tokens_per_s" in outcome:
            outcome["mfu"] = round(outcome["tokens_per_s"] * 4 * TINYLLAMA_MATMUL_PARAMS / (peak * 1e12 * world), 4)
        results["variants"][name] = outcome
        if rank == 0:
            print(f"{name}: {summarize(outcome)}", flush=True)
            write_json_atomic(args.out, results)
    return 0


def prepare_inputs(args, base_dir: Path, data_dir: Path) -> None:
    """The random base (with the real tokenizer beside it, as a Hub checkpoint has) and the prepared splits."""
    from training.config import DataConfig
    from training.prepare import prepare
    from training.tokenizer import load_tokenizer

    if not (base_dir / "config.json").exists():
        random_base_model(args.model_config, base_dir, tiny=args.tiny)
        load_tokenizer(args.tokenizer).save_pretrained(str(base_dir))
    if not data_dir.exists():
        prepare(DataConfig(source=str(args.flashcards), revision=None, tokenizer=str(base_dir), tokenizer_revision=None,
                           max_examples="all", output_dir=data_dir))


def run_variant(name: str, variant: dict, base_dir: Path, data_dir: Path, args, device, plan_for=None) -> dict:
    """exp1 with `variant`'s settings through train.py's own stages; `plan_for`: the Device to plan for (None:
    this machine; bench_t4_constraints.py plans for a T4)."""
    from common.yaml_config import validate
    from training.config import ExperimentConfig, dump, load_experiment
    from training.device import Device
    from training.plan import TrainingPlan
    from training.trainer import adapter_input_casts_skipped, build_model, build_trainer, load_tokenizer, training_data

    settings = {"base_model": str(base_dir), "base_revision": None, "data_dir": str(data_dir),
                "runs_dir": str(args.work_dir / "runs"), "epochs": 1000,
                "max_steps": args.warmup + args.steps + (PROFILED_STEPS if name in args.profile else 0),
                "logging_steps": 1, "eval_steps": 10**6, "save_steps": 10**6,
                **{k: v for k, v in variant.items() if k != ADAPTER_CASTS}}
    exp1 = dump(load_experiment("exp1", config_dir=REPO_ROOT / "configs"))
    config = validate(ExperimentConfig, {**exp1, "name": name, **settings}, f"bench variant {name}")
    tokenizer = load_tokenizer(config)
    data = training_data(config, tokenizer)
    plan = TrainingPlan.resolve(config, plan_for or Device.detect(), data.lengths)
    model = build_model(config, plan)
    profile_to = args.out.with_name(f"profile_{name}.txt") if name in args.profile else None
    timer = StepTimer(args.warmup, args.steps, device, profile_to)
    trainer = build_trainer(config, plan, model, tokenizer, data, eval_on_start=False, callbacks=[timer])
    casts_skipped = nullcontext() if variant.get(ADAPTER_CASTS) else adapter_input_casts_skipped(model, plan)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with casts_skipped:
        trainer.train()
    losses = [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e]
    outcome = {
        "settings": variant, "batching": plan.batching(), "plan": plan.as_dict(),
        "hardware": {"quantization": plan.quantization, "precision": plan.precision, "attention": plan.attention,
                     "padding_free": plan.padding_free, "liger_kernels": plan.liger,
                     "compile_layers": plan.compile_layers},
        "tokens_per_s": round(timer.tokens / timer.seconds, 1), "timed_tokens": timer.tokens,
        "timed_seconds": round(timer.seconds, 3), "warmup_seconds": round(timer.start - started, 2),
        "steps_per_epoch": plan.steps_per_epoch,
        "peak_memory_gb": peak_memory_gb(device),
        "step_losses": losses, "fixed_batch": timer.fixed_batch,
        # what the weights are held in (a GPU without bf16 must show none): trainable, and all
        "trainable_dtypes": sorted({str(p.dtype) for p in model.parameters() if p.requires_grad}),
        "parameter_dtypes": sorted({str(p.dtype) for p in model.parameters()}),
    }
    if plan.compile_layers:  # dynamo's counters: all layers and step lengths share one compilation
        outcome["compile"] = {key: int(value) for key, value in torch._dynamo.utils.counters["stats"].items()}
    del trainer, model
    shutil.rmtree(config.run_dir, ignore_errors=True)
    return outcome


class StepTimer(TrainerCallback):
    """Times optimizer steps warmup+1 .. warmup+steps and counts the Trainer's tokens over them; checks the
    first batch's loss and gradient norm with every kernel the Trainer applies (Liger), under its autocast;
    then, when `profile_to` is given, profiles `PROFILED_STEPS` more steps (tables by GPU and by host time)."""

    def __init__(self, warmup: int, steps: int, device, profile_to: Path | None = None):
        self.warmup, self.steps, self.device, self.profile_to = warmup, steps, device, profile_to
        self.start = self.seconds = self.profiler = self.fixed_batch = None
        self.tokens_at_start = self.tokens = 0

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        autocast = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        self.fixed_batch = loss_and_grad_norm(model, next(iter(train_dataloader)), self.device, autocast)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:  # tokens are counted after this call, per micro-batch
            synchronize(self.device)
            self.start, self.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen
        if state.global_step == self.warmup + self.steps and self.profile_to:
            self.profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
            self.profiler.start()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup + self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            self.tokens = state.num_input_tokens_seen - self.tokens_at_start
        if state.global_step == state.max_steps:
            control.should_evaluate = control.should_save = False  # the Trainer's end-of-run extras
            if self.profiler:
                synchronize(self.device)
                self.profiler.stop()
                averages = self.profiler.key_averages()
                by_gpu = averages.table(sort_by="cuda_time_total", row_limit=40)
                by_cpu = averages.table(sort_by="self_cpu_time_total", row_limit=25)  # where the host's time goes
                self.profile_to.write_text(f"{PROFILED_STEPS} optimizer steps, by GPU time\n{by_gpu}\n\n"
                                           f"by host (self CPU) time\n{by_cpu}\n", encoding="utf-8")


def summarize(result: dict) -> str:
    if "error" in result:
        return "ERROR " + result["error"]
    return (f"{result['tokens_per_s']:,.0f} tok/s, mfu {result.get('mfu')}, peak {result['peak_memory_gb']} GB, "
            f"{result['steps_per_epoch']} steps/epoch, warm-up {result['warmup_seconds']} s, "
            f"losses {result['step_losses'][:3]}...{result['step_losses'][-2:]}, fixed batch {result['fixed_batch']}")


if __name__ == "__main__":
    raise SystemExit(main())
