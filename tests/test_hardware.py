"""training/hardware.py: one precision rule for train, evaluate and bench, which the Space's copy agrees with."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from space_support import space_importable
from training.config import ExperimentConfig
from training.hardware import auto_precision, plan_hardware, resolve_precision, torch_dtype, world_size

H200_BYTES = 141 * 2**30


def fake_gpu(monkeypatch, capability: tuple[int, int] | None, memory: int = H200_BYTES) -> None:
    """torch.cuda as a machine with this GPU would answer (None: no CUDA)."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    if capability is None:
        return
    major, minor = capability
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(major=major, minor=minor, total_memory=memory))


@pytest.fixture(scope="module")
def space_loading():
    with space_importable():
        import loading

        yield loading


# (case, GPU capability, ZeroGPU env, device, dtype). ZeroGPU attaches its GPU per call, so the Space
# cannot query it at start-up; the hardware behind it is an H200 (capability 9.0).
CASES = [
    ("no CUDA", None, False, "cpu", torch.float32),
    ("T4, capability 7.5", (7, 5), False, "cuda", torch.float16),
    ("A100, capability 8.0", (8, 0), False, "cuda", torch.bfloat16),
    ("ZeroGPU", (9, 0), True, "cuda", torch.bfloat16),
]


@pytest.mark.parametrize("case, capability, zero_gpu, device, dtype", CASES, ids=[c[0] for c in CASES])
def test_space_and_training_pick_the_same_precision(monkeypatch, space_loading, case, capability, zero_gpu,
                                                    device, dtype):
    fake_gpu(monkeypatch, capability)
    if zero_gpu:
        monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    else:
        monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    training_dtype = torch_dtype(auto_precision())
    plan = plan_hardware(ExperimentConfig(name="plan", quantization="none", liger_kernels=False))
    if zero_gpu:  # the Space must not ask the GPU there
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: pytest.fail("queried the GPU"))
    assert space_loading.device_and_dtype() == (device, dtype)
    assert (plan.device, plan.dtype, training_dtype) == (device, dtype, dtype)


def test_evaluation_uses_the_training_rule(monkeypatch):
    """A T4 evaluates in fp16 as it trains, never emulated bf16."""
    fake_gpu(monkeypatch, (7, 5))
    assert resolve_precision("auto", "evaluation") == "fp16"
    from common.errors import EnvironmentProblem

    with pytest.raises(EnvironmentProblem, match="evaluation: this GPU has no bf16; use fp16 or auto"):
        resolve_precision("bf16", "evaluation")
    fake_gpu(monkeypatch, None)
    with pytest.raises(EnvironmentProblem, match="precision fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "evaluation")


def test_packed_steps_are_sized_from_gpu_memory(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), memory=15 * 2**30)
    plan = plan_hardware(ExperimentConfig(name="t4", quantization="none", liger_kernels=False))
    assert (plan.precision, plan.padding_free, plan.batch_tokens) == ("fp16", True, 3072)


def test_one_process_without_a_launcher():
    assert world_size() == 1


def torch_without_varlen(monkeypatch) -> None:
    """An older torch (requirements.txt admits torch>=2.4): no torch.nn.attention.varlen to find."""
    import importlib.util

    from training.packing import VARLEN_MODULE

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args, **kwargs: None if name == VARLEN_MODULE else find_spec(name, *args, **kwargs))


def test_gpu_without_varlen_attention_falls_back_to_padded_batches(monkeypatch):
    fake_gpu(monkeypatch, (9, 0))
    torch_without_varlen(monkeypatch)
    plan = plan_hardware(ExperimentConfig(name="old-torch", quantization="none", liger_kernels=False))
    assert (plan.device, plan.padding_free, plan.batch_tokens) == ("cuda", False, None)


@pytest.mark.parametrize("setting, fix", [({"padding_free": True}, "--set padding_free=auto"),
                                          ({"batch_tokens": 4096}, "--set batch_tokens=auto")])
def test_gpu_without_varlen_attention_refuses_asked_for_padding_free_rows(monkeypatch, setting, fix):
    from common.errors import EXIT_ENV, EnvironmentProblem

    fake_gpu(monkeypatch, (9, 0))
    torch_without_varlen(monkeypatch)
    with pytest.raises(EnvironmentProblem) as raised:
        plan_hardware(ExperimentConfig(name="old-torch", quantization="none", liger_kernels=False, **setting))
    message = str(raised.value)
    assert raised.value.exit_code == EXIT_ENV and "\n" not in message
    assert message.startswith("experiment 'old-torch': ") and "torch.nn.attention.varlen" in message
    assert message.endswith(f"lacks; upgrade torch, or use {fix}")


def test_cpu_padding_free_needs_no_varlen_attention(monkeypatch):
    """The CPU path is the block-diagonal reference, which any torch has."""
    fake_gpu(monkeypatch, None)
    torch_without_varlen(monkeypatch)
    plan = plan_hardware(ExperimentConfig(name="cpu", quantization="none", liger_kernels=False, padding_free=True))
    assert (plan.device, plan.padding_free) == ("cpu", True)


@pytest.mark.parametrize("settings, compiles", [
    ({}, True),  # the default on a GPU: packed bf16 steps
    ({"quantization": "nf4"}, True),  # QLoRA too (bench/README.md)
    ({"gradient_checkpointing": True}, False),
    ({"batch_tokens": None}, False),  # batches of sequences
    ({"liger_kernels": True}, False),  # asked-for Liger needs the eager layers
    ({"compile_layers": False}, False),
])
def test_compile_layers_auto_on_a_gpu(monkeypatch, settings, compiles):
    fake_gpu(monkeypatch, (9, 0))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a, **k: object())  # bitsandbytes, liger present
    config = ExperimentConfig(name="gpu", **{"quantization": "none", **settings})
    assert plan_hardware(config).compile_layers is compiles


@pytest.mark.parametrize("gpu, settings, refusal", [
    (None, {}, "compile_layers needs a CUDA GPU and packed steps"),
    ((9, 0), {"batch_tokens": None}, "compile_layers needs a CUDA GPU and packed steps"),
    ((9, 0), {"gradient_checkpointing": True}, "compile_layers does not combine with gradient_checkpointing"),
    ((9, 0), {"liger_kernels": True}, "liger_kernels and compile_layers do not combine"),
])
def test_compile_layers_true_is_refused_where_it_cannot_work(monkeypatch, gpu, settings, refusal):
    from common.errors import EXIT_ENV, EnvironmentProblem

    fake_gpu(monkeypatch, gpu)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a, **k: object())
    with pytest.raises(EnvironmentProblem) as raised:
        plan_hardware(ExperimentConfig(name="c", quantization="none", compile_layers=True, **settings))
    assert raised.value.exit_code == EXIT_ENV and refusal in str(raised.value) and "\n" not in str(raised.value)
