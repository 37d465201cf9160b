"""Everything `train` can check before it loads weights or writes a file, for every experiment, all problems
reported at once: the plan's settings on this device (training/plan.py `choose`), the prepared data, the base
model, the scheduler and LoRA targets that transformers, trl or peft would reject only once training starts, the
runs folder (writable, with room) and the run folder (ours to replace, not locked by another run).

Bounds that need no library (seed range, finite numbers, size caps) are pydantic fields in
training/config.py; these need the disk, the Hub, transformers' scheduler list or the base model's layers.
"""
from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, DataError, EnvironmentProblem, HubError, UserError
from common.hub_errors import hub_error, hub_errors
from common.hub_ids import is_hub_id
from training.config import ExperimentConfig
from training.device import Device, is_main_process
from training.layout import DATA_REPORT
from training.plan import ModelShape, choose, meta_model
from training.prepare import SPLITS
from training.run_folder import check_run_folder

TRAINING_COLUMNS = ("prompt", "completion")  # prompt + completion is the training text exactly


def check_all(configs: list[ExperimentConfig], device: Device) -> None:
    """Everything that can be checked before loading weights, for every experiment; all problems at once."""
    problems: list[UserError] = []
    for config in configs:
        problems += check_experiment(config, device)
    if problems:
        worst = problems[0]
        message = str(worst) if len(problems) == 1 else (
            f"{len(problems)} problems: " + "; ".join(str(p) for p in problems))
        raise type(worst)(message, worst.exit_code)


def check_experiment(config: ExperimentConfig, device: Device) -> list[UserError]:
    problems: list[UserError] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except UserError as exc:
            problems.append(exc)

    attempt(choose, config, device, None, ModelShape.of(config.base_model, config.base_model_revision))
    for check in (check_data, check_base_model, check_scheduler, check_runs_dir, check_lora_targets):
        attempt(check, config)
    if is_main_process():  # the folders are the main process's to write (and to lock)
        attempt(check_run_folder, config.run_dir)
    return problems


def check_data(config: ExperimentConfig) -> None:
    data_dir = config.data_dir
    where = f"experiment '{config.name}': data_dir {data_dir}"
    if not (data_dir / "dataset_dict.json").is_file():
        raise DataError(f"{where} is not a prepared dataset (run `python -m training prepare` first)")
    splits = json.loads((data_dir / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataError(f"{where} lacks split(s) {', '.join(missing)} (has: {', '.join(splits) or 'none'})")
    if not (data_dir / DATA_REPORT).is_file():
        raise DataError(f"{where} has no {DATA_REPORT} (run `python -m training prepare` again)")
    for split in ("train", "validation"):
        info = data_dir / split / "dataset_info.json"
        columns = json.loads(info.read_text(encoding="utf-8")).get("features", {}) if info.is_file() else {}
        absent = [c for c in TRAINING_COLUMNS if c not in columns]
        if absent:
            raise DataError(f"{where}: split '{split}' has no column(s) {', '.join(absent)}")


def check_base_model(config: ExperimentConfig) -> None:
    name = config.base_model
    if not is_hub_id(name):
        if not (Path(name).expanduser() / "config.json").is_file():
            raise ConfigError(f"experiment '{config.name}': base_model {name} is not a model folder (no config.json)")
        return
    problem = hub_model_problem(name, config.base_revision)
    if problem:
        raise HubError(f"experiment '{config.name}': {problem}")


@functools.cache  # experiments usually share one base: ask the Hub once
def hub_model_problem(name: str, revision: str | None) -> str | None:
    """Why the model's config.json cannot be had (from the Hub or the local cache), as a line, or None."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry warnings would bury the one-line error
    action = "cannot download base_model"
    try:
        with hub_errors(name, revision, action):
            hf_hub_download(name, "config.json", revision=revision)
    except HFValidationError:
        return f"base_model {name} is neither a local folder nor a valid Hub model id"
    except HubError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:  # not one the mapping knows, but still no config.json to be had
        return str(hub_error(exc, name, revision, action))
    finally:
        hub_logger.setLevel(level)
    return None


# A run writes checkpoints with optimizer state (TinyLlama, LoRA r=16: about 60 MB each, two kept)
# and the adapter: refusing to start beats failing at the first checkpoint, hours in.
MIN_FREE_BYTES = 256 * 2**20


def check_runs_dir(config: ExperimentConfig) -> None:
    """runs_dir (where the run is staged and then swapped in) exists, is writable and has room."""
    runs_dir = config.runs_dir
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"experiment '{config.name}': cannot create {runs_dir} ({exc.strerror})") from None
    if not os.access(runs_dir, os.W_OK):
        raise EnvironmentProblem(f"experiment '{config.name}': {runs_dir} is not writable")
    free = shutil.disk_usage(runs_dir).free
    if free < MIN_FREE_BYTES:
        raise EnvironmentProblem(f"experiment '{config.name}': only {free / 2**20:.1f} MiB free in {runs_dir}; "
                                 f"a run needs at least {MIN_FREE_BYTES >> 20} MiB for checkpoints and the adapter")


# ---------------------------------------------------------------- what the trainer would reject

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


def check_lora_targets(config: ExperimentConfig) -> None:
    """Every target and modules_to_save name matches a layer of the base that LoRA can adapt, and the
    rank is not above every adapted layer's width. Skipped when the base cannot be read (reported on its own)."""
    layers = base_layers(config.base_model, config.base_model_revision)
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


def base_layers(base_model: str, revision: str | None) -> dict[str, Layer] | None:
    """The base's named modules (None when its config cannot be read: check_base_model says why)."""
    model = meta_model(base_model, revision)
    return None if model is None else {name: describe(module) for name, module in model.named_modules() if name}


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
