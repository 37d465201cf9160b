"""Shared pieces of the GPU benchmarks: the real flashcards formatted as the project trains on them,
a randomly initialised TinyLlama-1.1B (throughput and memory do not depend on weight values), the
measured bf16 matmul ceiling, and environment facts for the results file.

The benchmarks run under the GPU image's own python (no trl/datasets there), so they use the
project's modules that need neither: chat formatting, the model builder, the packing module.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import time
from pathlib import Path

import torch

# Matmul parameters of TinyLlama-1.1B (embeddings excluded, lm_head included): FLOPs/token = 4N for LoRA training.
TINYLLAMA_MATMUL_PARAMS = 1.034e9

# A CPU smoke test shrinks the architecture, keeps the tokenizer and data.
TINY_OVERRIDES = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2)


def process_device(name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process: one GPU a process under `accelerate launch`/torchrun.
    accelerate's process state (training.device) also joins the process group (nccl, or gloo on CPU)."""
    from training.device import process_state

    state = process_state()
    rank, world = state.process_index, state.num_processes
    device = torch.device(name, state.local_process_index) if name == "cuda" else torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def loss_and_grad_norm(model, batch: dict, device, autocast_dtype: torch.dtype | None = None) -> dict:
    """Loss and gradient norm of the trainable parameters on one batch, dropout off, gradients cleared
    after: the same math gives the same numbers (to the rounding of the dtype)."""
    training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with autocast:
        loss = model(**to_device(batch, device)).loss
    loss.backward()
    grads = [p.grad.float().norm() ** 2 for p in model.parameters() if p.grad is not None]
    norm = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
    model.zero_grad(set_to_none=True)
    model.train(training)
    return {"loss": round(loss.item(), 6), "grad_norm": round(norm, 6)}


def load_flashcards(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = [{"question": r["input"].strip(), "answer": r["output"].strip()} for r in rows]
    rows = [r for r in rows if r["question"] and r["answer"]]
    return rows[:limit] if limit else rows


def tokenize_examples(tokenizer, rows, system_prompt: str, max_length: int = 512) -> list[dict[str, list[int]]]:
    """input_ids and completion-only labels, split as trl's SFTTrainer splits `prompt` + `completion`."""
    from training.chat import format_example

    examples = []
    for row in rows:
        example = format_example(tokenizer, system_prompt, row["question"], row["answer"])
        prompt_ids = tokenizer(example["prompt"])["input_ids"]
        ids = tokenizer(example["prompt"] + example["completion"])["input_ids"][:max_length]
        start = common_prefix_length(prompt_ids, ids)
        examples.append({"input_ids": ids, "labels": [-100] * start + ids[start:]})
    return examples


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def random_base_model(config_dir: Path, out_dir: Path, *, tiny: bool, seed: int = 0) -> Path:
    """TinyLlama's architecture with random weights, saved once so every recipe loads the same bytes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(config_dir))
    if tiny:
        for key, value in TINY_OVERRIDES.items():
            setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(out_dir))
    return out_dir


def matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float | None:
    """Dense bf16 matmul rate on random data, the MFU denominator (median of timed products)."""
    if device.type != "cuda":
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * size**3 / times[len(times) // 2] / 1e12


def environment() -> dict:
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for name in ("peft", "accelerate", "bitsandbytes"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    info["cpus"] = os.cpu_count()
    return info


def gpu_slug() -> str:
    """The short name of the GPU this process runs on, from torch ("NVIDIA H100 80GB HBM3" -> "h100",
    "NVIDIA H200" -> "h200"); "cpu" without one."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0)
    found = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    return (found.group(1) if found else re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")).lower()


def result_path(folder: Path, what: str, suffix: str = ".json", gpu: str | None = None) -> Path:
    """Where a benchmark writes its result: `<folder>/<date>-<gpu>-<what><suffix>`, the machine named by
    the device torch runs on (never by the script), so a file says which GPU produced it; `gpu`: a gpu_slug()
    recorded on the machine that did the work, when a later step finishes the record elsewhere."""
    return Path(folder) / f"{datetime.date.today()}-{gpu or gpu_slug()}-{what}{suffix}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else None
