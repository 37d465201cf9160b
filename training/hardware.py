"""What this machine runs with: device, precision, quantisation, batching, processes. One rule for
training, evaluation and the benchmarks (the Space keeps a copy of the precision rule, since it is
uploaded alone: `space/loading.py` `device_and_dtype`, checked against this one by
tests/test_hardware.py).

Rank and world size come from accelerate's process state, which `accelerate launch` and torchrun set up,
not from reading environment variables by hand.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from training.config import ExperimentConfig
from common.errors import EnvironmentProblem

PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Hardware:
    """What this machine runs a config with."""

    device: str  # "cuda" or "cpu"
    quantize: bool  # 4-bit NF4 base weights (QLoRA)
    precision: str  # "bf16", "fp16" or "fp32"
    world_size: int  # processes under DDP
    padding_free: bool = False  # micro-batches as one unpadded row (training/packing.py)
    batch_tokens: int | None = None  # packed rows: tokens per device per optimizer step (None: sequences)
    liger: bool = False  # Liger's fused kernels
    compile_layers: bool = False  # training/compiled.py

    @property
    def dtype(self):
        return torch_dtype(self.precision)


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


# ---------------------------------------------------------------- precision


def native_bf16() -> bool:
    """A CUDA GPU that computes in bf16 (Ampere and newer). T4-class GPUs merely emulate it, slowly."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def auto_precision() -> str:
    """bf16 where the GPU has it natively, fp16 on older CUDA GPUs, fp32 on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if native_bf16() else "fp16"


def resolve_precision(requested: str, where: str) -> str:
    """`requested` ("auto" or one of PRECISIONS) as this machine runs it; EnvironmentProblem if it cannot."""
    import torch

    if requested == "auto":
        return auto_precision()
    if requested == "fp16" and not torch.cuda.is_available():
        raise EnvironmentProblem(f"{where}: precision fp16 needs a CUDA GPU; use fp32 or auto")
    if requested == "bf16" and torch.cuda.is_available() and not native_bf16():  # the CPU computes bf16
        raise EnvironmentProblem(f"{where}: this GPU has no bf16; use fp16 or auto")
    return requested


# ---------------------------------------------------------------- processes


def process_state():
    """accelerate's view of this process (one per GPU under `accelerate launch`/torchrun; one on its own).
    The first call joins the process group, and it is the one state the Trainer then shares: without
    CUDA it must say cpu=True, or several CPU processes would each train alone instead of together (gloo)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def world_size() -> int:
    return process_state().num_processes


def local_rank() -> int:
    """This process's GPU on its machine."""
    return process_state().local_process_index


def is_main_process() -> bool:
    """The process that writes the run folder, best.json and the results (rank 0)."""
    return process_state().is_main_process


# ---------------------------------------------------------------- the plan for an experiment


def plan_hardware(config: ExperimentConfig) -> Hardware:
    """Pick quantisation, precision and batching for this machine; refuse what it cannot do."""
    import torch

    cuda = torch.cuda.is_available()
    where = f"experiment '{config.name}'"
    has_bnb = cuda and importlib.util.find_spec("bitsandbytes") is not None  # never imported on CPU
    if config.quantization == "nf4" and not has_bnb:
        missing = "a CUDA GPU" if not cuda else "the bitsandbytes package (pip install bitsandbytes)"
        raise EnvironmentProblem(f"{where}: quantization nf4 needs {missing}; "
                                 "use --set quantization=auto to fall back to full-precision LoRA")
    quantize = config.quantization == "nf4" or (config.quantization == "auto" and has_bnb)
    precision = resolve_precision(config.precision, where)
    padding_free = plan_padding_free(config, cuda, where)
    batch_tokens = config.batch_tokens
    processes = world_size()
    if batch_tokens == "auto":
        batch_tokens = auto_batch_tokens(torch.cuda.get_device_properties(0).total_memory, processes) \
            if cuda and padding_free else None
    liger = config.liger_kernels
    if liger == "auto":
        liger = cuda and importlib.util.find_spec("liger_kernel") is not None
    elif liger and not cuda:
        raise EnvironmentProblem(f"{where}: liger_kernels needs a CUDA GPU; use auto or false")
    elif liger and importlib.util.find_spec("liger_kernel") is None:
        raise EnvironmentProblem(f"{where}: liger_kernels needs the liger-kernel package "
                                 "(pip install liger-kernel); use auto or false")
    compile_layers = plan_compile_layers(config, cuda, bool(batch_tokens), where)
    return Hardware("cuda" if cuda else "cpu", quantize, precision, processes, padding_free, batch_tokens, liger,
                    compile_layers)


def plan_compile_layers(config: ExperimentConfig, cuda: bool, packed: bool, where: str) -> bool:
    """Whether the run may compile its layers (training.compiled.settle_compilation decides once the run's
    length is known). auto: packed steps on CUDA without checkpointing, in bf16/fp16 or QLoRA (what
    bench/README.md measured); true is refused where it cannot work (no CUDA, batches of sequences, checkpointing,
    Liger asked for)."""
    if config.compile_layers == "auto":  # an explicit liger_kernels: true keeps the eager layers Liger needs
        return cuda and packed and not config.gradient_checkpointing and config.liger_kernels is not True
    if not config.compile_layers:
        return False
    if not (cuda and packed):
        raise EnvironmentProblem(f"{where}: compile_layers needs a CUDA GPU and packed steps (batch_tokens); "
                                 "use auto or false")
    if config.gradient_checkpointing:
        raise EnvironmentProblem(f"{where}: compile_layers does not combine with gradient_checkpointing; "
                                 "turn one off")
    if config.liger_kernels is True:
        raise EnvironmentProblem(f"{where}: liger_kernels and compile_layers do not combine (Liger's Triton "
                                 "kernels fail under torch.compile); set one of them to auto or false")
    return True


def plan_padding_free(config: ExperimentConfig, cuda: bool, where: str) -> bool:
    """auto: on with CUDA. There, padding-free rows run torch's variable-length flash attention, which
    older torch releases lack (requirements.txt admits torch>=2.4): auto then falls back to batches of
    sequences, and a run that asked for padding-free rows is refused here, before the model loads."""
    from training.packing import VARLEN_MODULE, has_flash_varlen

    wanted = cuda if config.padding_free == "auto" else config.padding_free
    if not (cuda and wanted) or has_flash_varlen():
        return wanted
    if config.padding_free is True:
        asked, instead = "padding_free true", "padding_free=auto"
    elif isinstance(config.batch_tokens, int):
        asked, instead = f"batch_tokens {config.batch_tokens} (padding-free rows)", "batch_tokens=auto"
    else:
        return False
    import torch

    raise EnvironmentProblem(f"{where}: {asked} needs {VARLEN_MODULE} on CUDA, which torch {torch.__version__} "
                             f"lacks; upgrade torch, or use --set {instead}")


# Tokens in one packed optimizer step, chosen for time to quality, not tokens per second: on an H200
# with real weights, exp1 reached the notebook recipe's final validation loss fastest at this size
# (bench/bench_time_to_quality.py, bench/README.md). Larger steps run faster per token but take
# fewer optimizer steps, and 3 epochs of 32,768-token steps trained a clearly worse adapter.
AUTO_BATCH_TOKENS = 8192


def auto_batch_tokens(gpu_memory_bytes: int, processes: int = 1) -> int:
    """Tokens per device per step: AUTO_BATCH_TOKENS shared by the processes, so a step holds the same
    tokens (and trains the same adapter) on any GPU count; less where a GPU cannot hold its share
    (256 tokens per GiB); at least 1024.

    Memory measured through this trainer on an H200 (bench/README.md): 16384 tokens peak at 29 GB in
    bf16 and 39 GB in QLoRA, so 8192 fits any GPU of 32 GiB or more (a T4's 15 GiB: 3072).
    """
    per_gib = 256
    fits = gpu_memory_bytes // 2**30 * per_gib // 1024 * 1024
    share = -(-AUTO_BATCH_TOKENS // max(processes, 1))
    return int(max(1024, min(share, fits)))
