"""torch.compile of each decoder layer, for training steps only (regional compilation).

Why: with packed steps of the default size (training.hardware.AUTO_BATCH_TOKENS) a GPU step is host-bound.
Eager PyTorch launches every small kernel of every LoRA projection (dropout, two matmuls, scaling,
add, dtype casts) from Python, forward and backward; on an H200 that CPU work takes longer than the GPU's
arithmetic (bench/README.md). A compiled layer runs as a few fused kernels launched from generated code.

Why per layer and not the whole model: every decoder layer has the same code, so one compilation (with a
symbolic token count: packed steps vary in length) serves them all, and the embedding, the loss and the
Trainer stay eager. Validation and generation take the eager path (`module.training` is false there):
their padded batches would need graphs of their own, compiled for a few calls each.
"""
from __future__ import annotations

import dataclasses
import functools

# Compiling the layers costs about 63 s once (H200, TinyLlama-1.1B, a cold cache; ~42 s warm) and saves
# 0.05 s a step in bf16 at the default step size, 0.09 in QLoRA (bench/README.md): auto compiles only runs
# long enough to earn it back from a cold cache (3 epochs of all 33,955 flashcards: ~1,850 steps).
COMPILE_MIN_STEPS = 1250


def settle_compilation(config, hardware, trainer, steps: int):
    """The plan's compile_layers made final for this run, applied to the trainer's model; returns the
    Hardware the run used. auto compiles only a run of at least COMPILE_MIN_STEPS steps; true always.
    Liger's Triton kernels do not trace under torch.compile, and the compiled layers fuse the same
    operations, so a compiled run goes without them (the Trainer applies Liger when training starts)."""
    compile_now = hardware.compile_layers and (config.compile_layers is True or steps >= COMPILE_MIN_STEPS)
    if not compile_now:
        return dataclasses.replace(hardware, compile_layers=False)
    compile_decoder_layers(trainer.model)
    trainer.args.use_liger_kernel = False
    return dataclasses.replace(hardware, compile_layers=True, liger=False)


def decoder_layers(model) -> list:
    """The repeated blocks of a transformers model (or a peft wrapper): the classes it names in
    `_no_split_modules`, the unit accelerate also treats as one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [module for module in base.modules() if type(module).__name__ in names]


def compile_decoder_layers(model) -> int:
    """Make each decoder layer run compiled while training; returns how many layers were wrapped."""
    import torch

    layers = decoder_layers(model)
    for layer in layers:
        eager = layer.forward
        compiled = torch.compile(eager, dynamic=True)
        layer.forward = functools.partial(_training_compiled_forward, layer, eager, compiled)
    return len(layers)


def _training_compiled_forward(layer, eager, compiled, *args, **kwargs):
    import torch

    run = compiled if layer.training and torch.is_grad_enabled() else eager
    return run(*args, **kwargs)
