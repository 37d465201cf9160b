"""torch.compile of each decoder layer, for training steps only (regional compilation).

Why: with packed steps of the default size (training.plan.AUTO_BATCH_TOKENS) a GPU step is host-bound.
Eager PyTorch launches every small kernel of every LoRA projection (dropout, two matmuls, scaling,
add, dtype casts) from Python, forward and backward; on an H200 that CPU work takes longer than the GPU's
arithmetic (bench/README.md). A compiled layer runs as a few fused kernels launched from generated code.

Why per layer and not the whole model: every decoder layer has the same code, so one compilation (with a
symbolic token count: packed steps vary in length) serves them all, and the embedding, the loss and the
Trainer stay eager. Validation and generation take the eager path (`module.training` is false there):
their padded batches would need graphs of their own, compiled for a few calls each.

When a run compiles is the plan's to say (training/plan.py `COMPILE_MIN_STEPS`); training/trainer.py applies it.
"""
from __future__ import annotations

import functools


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
