"""Training throughput on a GPU: the original notebook's recipe against the project's paths, in one run.

TinyLlama-1.1B's architecture with random weights (from the real config.json), the real tokenizer,
the real flashcards formatted with the chat template and completion-only labels, the project's
model builder (`training.trainer.build_model`: LoRA r=16 on q/k/v/o, 4-bit NF4 when asked) and its
padding-free module. Every recipe starts from the same saved weights and the same LoRA init; each
reports real (non-pad) tokens/s over timed optimizer steps after warm-up, MFU (4N FLOPs/token over
the bf16 matmul rate measured in the same run), peak memory, the loss and gradient norm on one
fixed batch before training (the same math must give the same numbers) and the step losses.

A plain torch loop (the GPU image has no trl/datasets); it feeds the model exactly the batches
trl's SFTTrainer builds: padded with an attention mask, or padding-free with `position_ids` and
`cu_seq_lens_q` (`SFTConfig(padding_free=True)`).

    python bench/bench_train_gpu.py --out bench/results/train.json            # one GPU
    accelerate launch --config_file configs/accelerate/ddp.yaml bench/bench_train_gpu.py \
        --recipes bf16_padding_free_16k --out ddp.json                         # DDP, one process a GPU
    python bench/bench_train_gpu.py --tiny --device cpu --steps 2 --warmup 1   # CPU smoke test
"""
from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    TINYLLAMA_MATMUL_PARAMS, environment, load_flashcards, loss_and_grad_norm, matmul_tflops, peak_memory_gb,
    process_device, random_base_model, synchronize, to_device, tokenize_examples,
)
from common.atomic import write_json_atomic  # noqa: E402
from training.packing import padding_free_collator, real_tokens, token_budget_batches  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"

# name -> how the recipe trains. batching: ("padded", sequences, length_grouped) or ("tokens", budget).
RECIPES = {
    "bf16_padding_free_16k": dict(quantization="none", batching=("tokens", 16384)),
    "seed_qlora_b4x2_ckpt": dict(quantization="nf4", batching=("padded", 4, False), accumulation=2,
                                 gradient_checkpointing=True, attention="sdpa"),
    "bf16_padded_b64_grouped": dict(quantization="none", batching=("padded", 64, True), attention="sdpa"),
    "qlora_padding_free_16k": dict(quantization="nf4", batching=("tokens", 16384)),
    "bf16_padding_free_32k": dict(quantization="none", batching=("tokens", 32768)),
    "bf16_packed_sdpa_dense_16k": dict(quantization="none", batching=("tokens", 16384), attention="sdpa"),
    "bf16_padding_free_16k_compile": dict(quantization="none", batching=("tokens", 16384), compile=True),
}
DEFAULTS = dict(accumulation=1, gradient_checkpointing=False, attention="padding_free", compile=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per recipe")
    parser.add_argument("--warmup", type=int, default=4, help="untimed optimizer steps first (compile: x2)")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizer")
    parser.add_argument("--model-config", type=Path, default=SHARED / "tokenizer",
                        help="folder with TinyLlama's config.json")
    parser.add_argument("--flashcards", type=Path, default=SHARED / "flashcards" / "medical_flashcards_test_3396.json")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-train"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="shrink the architecture (CPU smoke test)")
    parser.add_argument("--limit", type=int, help="use only the first N flashcards (smoke test)")
    parser.add_argument("--token-budget", type=int, help="override every recipe's token budget (smoke test)")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world, device = process_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    from training.config import DEFAULT_SYSTEM_PROMPT
    from training.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    examples = tokenize_examples(tokenizer, load_flashcards(args.flashcards, args.limit),
                                 DEFAULT_SYSTEM_PROMPT)
    base_dir = args.work_dir / ("tiny-base" if args.tiny else "tinyllama-random")
    if rank == 0 and not (base_dir / "config.json").exists():
        random_base_model(args.model_config, base_dir, tiny=args.tiny)
    if world > 1:
        torch.distributed.barrier()

    peak = matmul_tflops(device)
    results = {"environment": environment(), "world_size": world, "matmul_tflops_bf16": peak,
               "data": data_summary(examples), "steps": args.steps, "warmup": args.warmup, "recipes": {}}
    for name in args.recipes:
        recipe = {**DEFAULTS, **RECIPES[name]}
        if args.token_budget and recipe["batching"][0] == "tokens":
            recipe["batching"] = ("tokens", args.token_budget)
        try:
            outcome = run_recipe(name, recipe, base_dir, examples, tokenizer.pad_token_id, device, args, rank, world)
        except Exception as exc:  # one recipe failing (a missing package, OOM) must not lose the others
            outcome = {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            gc.collect()
            torch.cuda.empty_cache() if device.type == "cuda" else None
        if peak and "tokens_per_s" in outcome:
            # per GPU: the tokens of all processes over the matmul rate of all GPUs
            outcome["mfu"] = round(outcome["tokens_per_s"] * 4 * TINYLLAMA_MATMUL_PARAMS / (peak * 1e12 * world), 4)
        results["recipes"][name] = {"recipe": recipe, **outcome}
        if rank == 0:
            print(f"{name}: {summarize(results['recipes'][name])}", flush=True)
            write_json_atomic(args.out, results)
    if rank == 0:
        print_table(results)
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


def data_summary(examples) -> dict:
    lengths = sorted(len(e["input_ids"]) for e in examples)
    return {"examples": len(lengths), "tokens": sum(lengths), "mean": round(sum(lengths) / len(lengths), 1),
            "median": lengths[len(lengths) // 2], "p95": lengths[int(0.95 * len(lengths))], "max": lengths[-1]}


# ---------------------------------------------------------------- one recipe


def run_recipe(name, recipe, base_dir, examples, pad_id, device, args, rank, world) -> dict:
    model = build(recipe, base_dir, device)
    fixed = fixed_batch_check(model, examples[:64], recipe, pad_id, device)
    every_batch = make_batches(recipe, examples, pad_id, seed=1)
    batches = every_batch[rank::world]
    optimizer = make_optimizer(model, recipe)
    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    if recipe["compile"]:
        step_model = torch.compile(model)
    warmup = args.warmup * (2 if recipe["compile"] else 1)
    needed = (warmup + args.steps) * recipe["accumulation"]
    batches = (batches * (needed // max(len(batches), 1) + 1))[:needed]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    losses, tokens, started, warm_s = [], 0, time.perf_counter(), None
    for step in range(warmup + args.steps):
        if step == warmup:
            synchronize(device)
            warm_s = time.perf_counter() - started
            started, tokens = time.perf_counter(), 0
        step_loss = 0.0
        for micro in range(recipe["accumulation"]):
            batch = batches[step * recipe["accumulation"] + micro]
            loss = step_model(**to_device(batch, device)).loss / recipe["accumulation"]
            loss.backward()
            step_loss += loss.detach()
            tokens += real_tokens(batch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
    synchronize(device)
    seconds = time.perf_counter() - started
    tokens, seconds = reduce_over_ranks(tokens, seconds, device, world)
    outcome = {
        "tokens_per_s": round(tokens / seconds, 1), "timed_tokens": tokens, "timed_seconds": round(seconds, 3),
        "warmup_seconds": round(warm_s, 2), "peak_memory_gb": peak_memory_gb(device),
        "fixed_batch": fixed, "step_losses": [round(float(x), 4) for x in losses],
        "batches_per_pass": len(every_batch),
    }
    if recipe["compile"]:
        outcome["fixed_batch_compiled"] = fixed_batch_check(step_model, examples[:64], recipe, pad_id, device)
    del model, step_model, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return outcome


def build(recipe, base_dir, device):
    """The project's model builder, with the recipe's attention path (the plan's kernel for padding-free rows)."""
    from training.config import ExperimentConfig
    from training.device import Device
    from training.plan import TrainingPlan
    from training.trainer import build_model

    config = ExperimentConfig(name="bench", base_model=str(base_dir), quantization=recipe["quantization"],
                              gradient_checkpointing=recipe["gradient_checkpointing"], batch_tokens=None,
                              padding_free=recipe["attention"] == "padding_free", compile_layers=False,
                              liger_kernels=False)
    # the plain loop batches by itself: the plan here gives the model's precision, quantization and kernel
    model = build_model(config, TrainingPlan.resolve(config, Device.detect(), [1]))
    if recipe["quantization"] != "nf4":
        model.to(device)
        if recipe["gradient_checkpointing"]:
            model.gradient_checkpointing_enable()
    if recipe["attention"] != "padding_free":
        model.get_base_model().config.use_cache = False  # as SFTTrainer does per batch
    return model


def make_optimizer(model, recipe):
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe["quantization"] == "nf4":  # the project's QLoRA optimizer, as the notebook's
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=2e-4)
    return torch.optim.AdamW(params, lr=2e-4)


# ---------------------------------------------------------------- batches


def make_batches(recipe, examples, pad_id, seed) -> list[dict]:
    kind = recipe["batching"][0]
    if kind == "tokens":
        collate = padding_free_collator()
        order = token_budget_batches([len(e["input_ids"]) for e in examples], recipe["batching"][1], seed)
        return [collate([examples[i] for i in batch]) for batch in order]
    size, grouped = recipe["batching"][1], recipe["batching"][2]
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    if grouped:  # like transformers' LengthGroupedSampler: sort inside random mega-batches
        mega = size * 16
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s:s + mega], key=lambda i: -len(examples[i]["input_ids"]))]
    return [pad_batch([examples[i] for i in order[s:s + size]], pad_id) for s in range(0, len(order), size)]


def pad_batch(rows, pad_id) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def fixed_batch_check(model, rows, recipe, pad_id, device) -> dict:
    """Loss and LoRA gradient norm on the same 64 examples, dropout off: equal math gives equal numbers."""
    batch = padding_free_collator()(rows) if recipe["batching"][0] == "tokens" else pad_batch(rows, pad_id)
    return loss_and_grad_norm(model, batch, device)


def reduce_over_ranks(tokens: int, seconds: float, device, world: int) -> tuple[int, float]:
    """DDP: all ranks' tokens over the slowest rank's time."""
    if world == 1:
        return tokens, seconds
    t = torch.tensor([float(tokens)], device=device)
    s = torch.tensor([seconds], device=device)
    torch.distributed.all_reduce(t)
    torch.distributed.all_reduce(s, op=torch.distributed.ReduceOp.MAX)
    return int(t.item()), float(s.item())


# ---------------------------------------------------------------- output


def summarize(result: dict) -> str:
    if "error" in result:
        return "ERROR " + result["error"]
    return (f"{result['tokens_per_s']:,.0f} tok/s, mfu {result.get('mfu')}, peak {result['peak_memory_gb']} GB, "
            f"fixed loss {result['fixed_batch']['loss']} grad {result['fixed_batch']['grad_norm']}")


def print_table(results: dict) -> None:
    print(f"\nmatmul bf16: {results['matmul_tflops_bf16']} TFLOP/s, world {results['world_size']}")
    print(f"{'recipe':34} {'tok/s':>9} {'MFU':>6} {'peak GB':>8} {'fixed loss':>11} {'grad norm':>10}")
    for name, r in results["recipes"].items():
        if "error" in r:
            print(f"{name:34} ERROR {r['error'][:80]}")
            continue
        print(f"{name:34} {r['tokens_per_s']:>9,.0f} {r.get('mfu') or 0:>6.3f} {r['peak_memory_gb'] or 0:>8} "
              f"{r['fixed_batch']['loss']:>11.5f} {r['fixed_batch']['grad_norm']:>10.5f}")


if __name__ == "__main__":
    raise SystemExit(main())
