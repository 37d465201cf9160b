"""What transformers, trl or peft would reject only once training starts, checked before anything is
written (train.check_experiment reports these with every other problem, all at once).

Bounds that need no library (seed range, finite numbers, size caps) are pydantic fields in
training/config.py; these need transformers' scheduler list or the base model's layers.
"""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

from common.errors import ConfigError
from training.config import ExperimentConfig

# Schedulers that need lr_scheduler_kwargs (min_lr), a setting these configs do not have.
NEEDS_SCHEDULER_KWARGS = ("cosine_with_min_lr", "cosine_warmup_with_min_lr")


def scheduler_names() -> list[str]:
    from transformers.trainer_utils import SchedulerType

    return [kind.value for kind in SchedulerType if kind.value not in NEEDS_SCHEDULER_KWARGS]


def check_scheduler(config: ExperimentConfig) -> None:
    names = scheduler_names()
    if config.lr_scheduler in names:
        return
    where = f"experiment '{config.name}': lr_scheduler '{config.lr_scheduler}'"
    if config.lr_scheduler in NEEDS_SCHEDULER_KWARGS:
        raise ConfigError(f"{where} needs a min_lr setting these configs do not have; use one of {', '.join(names)}")
    close = difflib.get_close_matches(config.lr_scheduler, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"{where} is not a transformers scheduler ({hint}valid: {', '.join(names)})")


@dataclass(frozen=True)
class Layer:
    kind: str  # class name
    adaptable: bool  # a layer type LoRA can wrap
    width: int  # min(in, out): the highest rank a LoRA update of it can have (0 when not adaptable)


def check_lora_targets(config: ExperimentConfig, revision: str | None) -> None:
    """Every target and modules_to_save name matches a layer of the base that LoRA can adapt, and the
    rank is not above every adapted layer's width. Skipped when the base cannot be read (reported on its own)."""
    layers = base_layers(config.base_model, revision)
    if layers is None:
        return
    problems = [problem for target in config.lora.target_modules if (problem := target_problem(target, layers))]
    problems += [f"modules_to_save '{name}' {missing_hint(name, layers)}" for name in config.lora.modules_to_save
                 if not matching(name, layers)]
    widths = [layers[n].width for t in config.lora.target_modules for n in matching(t, layers) if layers[n].adaptable]
    if widths and config.lora.r > max(widths):
        problems.append(f"lora.r {config.lora.r} is above the width of every adapted layer (at most {max(widths)}): "
                        "a higher rank adds memory, not capacity")
    if problems:
        raise ConfigError(f"experiment '{config.name}': " + "; ".join(problems))


def target_problem(target: str, layers: dict[str, Layer]) -> str | None:
    matched = matching(target, layers)
    if not matched:
        return f"lora target module '{target}' {missing_hint(target, layers)}"
    unfit = [name for name in matched if not layers[name].adaptable]
    if unfit:
        return (f"lora target module '{target}' matches {unfit[0]}, a {layers[unfit[0]].kind}, which LoRA cannot "
                "adapt (it adapts Linear, Embedding and Conv layers)")
    return None


def matching(target: str, layers: dict[str, Layer]) -> list[str]:
    """The layers peft would adapt for `target` (its own rule: the full name, or a name ending in '.<target>')."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=[target])
    return [name for name in layers if check_target_module_exists(config, name)]


def missing_hint(target: str, layers: dict[str, Layer]) -> str:
    leaves = sorted({name.rsplit(".", 1)[-1] for name, layer in layers.items() if layer.adaptable})
    close = difflib.get_close_matches(target, leaves, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"is not a layer of the base model ({hint}its layers: {', '.join(leaves)})"


@functools.cache  # experiments usually share one base
def base_layers(base_model: str, revision: str | None) -> dict[str, Layer] | None:
    """The base's named modules, built from its config on the meta device: no weights read, no memory used."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        model_config = AutoConfig.from_pretrained(base_model, revision=revision)
    except (OSError, ValueError):
        return None  # check_base_model says why
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return {name: describe(module) for name, module in model.named_modules() if name}


def describe(module) -> Layer:
    from torch import nn

    kind = type(module).__name__
    if isinstance(module, nn.Linear):
        return Layer(kind, True, min(module.in_features, module.out_features))
    if isinstance(module, nn.Embedding):
        return Layer(kind, True, min(module.num_embeddings, module.embedding_dim))
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return Layer(kind, True, min(module.in_channels, module.out_channels))
    if kind == "Conv1D":  # transformers' GPT-2 style linear layer
        return Layer(kind, True, min(module.weight.shape))
    return Layer(kind, False, 0)
