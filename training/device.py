"""What a run trains on, as a value: the GPU (or CPU) described by kind, name, compute capability, memory and
process count, and the GPU libraries installed beside it. `Device.detect()` reads this machine;
`Device.named("T4")` describes a GPU class without one, so a plan for any GPU can be resolved and tested on a CPU
(training/plan.py). Also the one precision rule (train, evaluate, bench; `space/assistant.py` keeps a copy, which
tests/test_plan.py checks against this one) and the process helpers.

Rank and world size come from accelerate's process state, which `accelerate launch` and torchrun set up, not from
reading environment variables by hand.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
from dataclasses import dataclass

from common.errors import ConfigError, EnvironmentProblem

PRECISIONS = ("bf16", "fp16", "fp32")
GIB = 2**30
# Ampere and newer: native bf16 and the flash attention kernels (torch's varlen flash attention among them).
FLASH_CAPABILITY = (8, 0)
# torch's variable-length flash attention (training/packing.py); newer torch releases only.
VARLEN_MODULE = "torch.nn.attention.varlen"

# The GPU classes users train on: (compute capability, memory in GiB as the vendor states it). A detected GPU
# reports a little less memory than its class (the driver keeps some).
GPU_CLASSES: dict[str, tuple[tuple[int, int], int]] = {
    "T4": ((7, 5), 15),  # Colab's free GPU, the original notebook's
    "V100": ((7, 0), 16),
    "L4": ((8, 9), 24),
    "A10G": ((8, 6), 24),
    "A100-40GB": ((8, 0), 40),
    "A100-80GB": ((8, 0), 80),
    "H100": ((9, 0), 80),
    "H200": ((9, 0), 141),
    "RTX Pro 6000 Blackwell": ((12, 0), 96),  # the Space's ZeroGPU card
}


@dataclass(frozen=True)
class Device:
    """One process's device, and how many processes (one per GPU) train together."""

    kind: str  # "cuda" or "cpu"
    name: str
    capability: tuple[int, int] | None  # CUDA compute capability; None on a CPU
    memory_bytes: int  # what one process may use (a share of the GPU when trials share it)
    count: int = 1  # processes training together (DDP)

    @classmethod
    def detect(cls) -> Device:
        """This process's device: its GPU under CUDA (one per process under DDP), else the CPU."""
        import torch

        processes = world_size()
        if not torch.cuda.is_available():
            return cls.cpu(processes)
        index = local_rank()
        properties = torch.cuda.get_device_properties(index)
        return cls("cuda", properties.name, (properties.major, properties.minor), properties.total_memory, processes)

    @classmethod
    def cpu(cls, count: int = 1) -> Device:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
        return cls("cpu", "CPU", None, pages, count)

    @classmethod
    def named(cls, name: str, count: int = 1) -> Device:
        """A GPU class of GPU_CLASSES (or "CPU"), as a machine with it would be detected."""
        if name.upper() == "CPU":
            return cls.cpu(count)
        match = {key.lower(): key for key in GPU_CLASSES}.get(name.lower())
        if match is None:
            close = [key for key in GPU_CLASSES if key.lower().startswith(name.lower())] \
                or difflib.get_close_matches(name, list(GPU_CLASSES), n=1)
            hint = f"did you mean {' or '.join(repr(key) for key in close)}? " if close else ""
            raise ConfigError(f"unknown GPU class '{name}' ({hint}known: CPU, {', '.join(GPU_CLASSES)})")
        capability, gib = GPU_CLASSES[match]
        return cls("cuda", match, capability, gib * GIB, count)

    def share(self, trials: int) -> Device:
        """This device as one of `trials` runs sharing it (hyperparameter search): each plans for, and is held to,
        1/trials of the memory (`hold_to_memory`)."""
        if trials < 1:
            raise ValueError(f"trials must be at least 1, got {trials}")
        return dataclasses.replace(self, memory_bytes=self.memory_bytes // trials,
                                   name=self.name if trials == 1 else f"{self.name} (1/{trials})")

    @property
    def cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def native_bf16(self) -> bool:
        """bf16 in hardware (Ampere and newer); older GPUs such as the T4 only emulate it, slowly."""
        return self.cuda and self.capability >= FLASH_CAPABILITY

    @property
    def flash_attention(self) -> bool:
        return self.cuda and self.capability >= FLASH_CAPABILITY

    def describe(self) -> str:
        """How errors and docs name it: `the T4 (compute capability 7.5, 15 GiB)`."""
        if not self.cuda:
            return "the CPU"
        return (f"the {self.name} (compute capability {self.capability[0]}.{self.capability[1]}, "
                f"{self.memory_bytes / GIB:.0f} GiB)")

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name,
                "capability": list(self.capability) if self.capability else None,
                "memory_bytes": self.memory_bytes, "count": self.count}

    def hold_to_memory(self) -> None:
        """Cap this process's CUDA allocations at `memory_bytes` where that is less than the GPU has (a share of
        it, or a smaller GPU's description on a larger GPU), so runs sharing a GPU cannot take each other's memory."""
        if not self.cuda:
            return
        import torch

        if not torch.cuda.is_available():
            return
        index = local_rank()
        total = torch.cuda.get_device_properties(index).total_memory
        if self.memory_bytes < total:
            torch.cuda.set_per_process_memory_fraction(self.memory_bytes / total, index)


@dataclass(frozen=True)
class Software:
    """The optional GPU libraries a plan can use."""

    bitsandbytes: bool  # QLoRA's 4-bit NF4 weights
    liger_kernel: bool  # Liger's fused Triton kernels
    flash_varlen: bool  # torch has VARLEN_MODULE

    @classmethod
    def detect(cls) -> Software:
        return cls(bitsandbytes=_installed("bitsandbytes"), liger_kernel=_installed("liger_kernel"),
                   flash_varlen=_installed(VARLEN_MODULE))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None  # found, never imported
    except ModuleNotFoundError:  # a parent package is missing (not even torch.nn.attention)
        return False


# ---------------------------------------------------------------- precision


def resolve_precision(requested: str, device: Device, where: str) -> str:
    """`requested` ("auto" or one of PRECISIONS) as `device` runs it: bf16 where the GPU has it natively, fp16 on
    older GPUs, fp32 on the CPU. EnvironmentProblem (one line naming the device and the fix) if it cannot."""
    if requested == "auto":
        return ("bf16" if device.native_bf16 else "fp16") if device.cuda else "fp32"
    if requested == "fp16" and not device.cuda:
        raise EnvironmentProblem(f"{where}: precision fp16 needs a CUDA GPU; use --set precision=auto (fp32 here)")
    if requested == "bf16" and device.cuda and not device.native_bf16:  # a CPU computes bf16, slowly but exactly
        raise EnvironmentProblem(f"{where}: precision bf16: {device.describe()} has no bf16; "
                                 "use --set precision=auto (fp16 there)")
    return requested


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


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
