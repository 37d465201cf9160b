"""`python -m training train`: LoRA / QLoRA fine-tuning of the base model with trl's SFTTrainer.

One experiment (`--experiment exp1`, or a path to a YAML file) or all of them (`--all`). Every run
writes runs/<experiment>/ as ARCHITECTURE.md describes, and runs/best.json names the run with the
lowest validation loss.

Several GPUs on one machine (DDP; effective_batch_size is then spread over the processes):

    accelerate launch --config_file configs/accelerate/ddp.yaml -m training train --experiment exp1
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import resource
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from common.atomic import replace_dir, write_json_atomic
from common.errors import ConfigError, DataError, EnvironmentProblem, HubError, UserError
from common.hub_errors import hub_error, hub_errors
from common.hub_ids import is_hub_id
from training.compiled import settle_compilation
from training.config import CONFIG_DIR, ExperimentConfig, all_experiments, dump, load_experiment, sft_arguments
from training.hardware import Hardware, is_main_process, local_rank, plan_hardware, world_size
from training.prepare import REPORT_FILE, SPLITS
from training.run_folder import RunLock, check_run_folder, finish_staged_run, start_staged_run
from training.trainer_checks import check_lora_targets, check_scheduler

TRAINING_COLUMNS = ("prompt", "completion")  # prompt + completion is the training text exactly


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="experiment name (configs/experiments/NAME.yaml) or a YAML path")
    which.add_argument("--all", action="store_true", help="every experiment in CONFIG_DIR/experiments")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="folder holding experiments/ (default: configs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set learning_rate=1e-4 --set lora.r=8 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each run from its last checkpoint in runs/<experiment>/checkpoints")


def run(args: argparse.Namespace) -> int:
    configs = select_experiments(args)
    check_all(configs)
    results = [train_experiment(config, resume=args.resume) for config in configs]
    if is_main_process():
        for runs_dir in dict.fromkeys(config.runs_dir for config in configs):
            update_best(runs_dir)
        print(summary_table(results))
    return 0


# ---------------------------------------------------------------- configuration and checks


def select_experiments(args: argparse.Namespace) -> list[ExperimentConfig]:
    names = [str(path) for path in all_experiments(args.config_dir)] if args.all else [args.experiment]
    if not names:
        raise ConfigError(f"no experiments in {args.config_dir / 'experiments'} (expected *.yaml files)")
    return [load_experiment(name, args.overrides, args.config_dir) for name in names]


def accumulation_steps(config: ExperimentConfig, world_size: int) -> int:
    per_step = config.per_device_batch_size * world_size
    if config.effective_batch_size % per_step:
        raise ConfigError(
            f"experiment '{config.name}': effective_batch_size {config.effective_batch_size} is not a multiple of "
            f"per_device_batch_size {config.per_device_batch_size} x {world_size} processes"
        )
    return config.effective_batch_size // per_step


def check_all(configs: list[ExperimentConfig]) -> None:
    """Everything that can be checked before loading weights, for every experiment; all problems at once."""
    problems: list[UserError] = []
    for config in configs:
        problems += check_experiment(config)
    if problems:
        worst = problems[0]
        message = str(worst) if len(problems) == 1 else (
            f"{len(problems)} problems: " + "; ".join(str(p) for p in problems))
        raise type(worst)(message, worst.exit_code)


def check_experiment(config: ExperimentConfig) -> list[UserError]:
    problems: list[UserError] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except UserError as exc:
            problems.append(exc)

    hardware = attempt(plan_hardware, config)
    attempt(check_batch, config, hardware)
    for check in (check_data, check_base_model, check_scheduler, check_runs_dir):
        attempt(check, config)
    attempt(check_lora_targets, config, revision_of(config))
    if is_main_process():  # the folders are the main process's to write (and to lock)
        attempt(check_run_folder, config.run_dir)
    return problems


def check_batch(config: ExperimentConfig, hardware: Hardware | None) -> None:
    """Gradient accumulation must divide over the processes; packed steps take none. `hardware` is None
    when planning failed (reported on its own): then the sequence batches are checked."""
    if hardware is None or not hardware.batch_tokens:
        accumulation_steps(config, hardware.world_size if hardware else world_size())


def check_data(config: ExperimentConfig) -> None:
    data_dir = config.data_dir
    where = f"experiment '{config.name}': data_dir {data_dir}"
    if not (data_dir / "dataset_dict.json").is_file():
        raise DataError(f"{where} is not a prepared dataset (run `python -m training prepare` first)")
    splits = json.loads((data_dir / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataError(f"{where} lacks split(s) {', '.join(missing)} (has: {', '.join(splits) or 'none'})")
    if not (data_dir / REPORT_FILE).is_file():
        raise DataError(f"{where} has no {REPORT_FILE} (run `python -m training prepare` again)")
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


# ---------------------------------------------------------------- model, data, trainer


def load_tokenizer(config: ExperimentConfig):
    from training.chat import load_tokenizer as load

    return load(config.base_model, revision_of(config))


def revision_of(config: ExperimentConfig) -> str | None:
    return config.base_revision if is_hub_id(config.base_model) else None


def load_splits(config: ExperimentConfig, tokenizer):
    """The train and validation splits, reduced to the prompt/completion columns trl trains on."""
    from datasets import load_from_disk

    splits = load_from_disk(str(config.data_dir))
    from training.chat import end_of_turn

    first = splits["train"][0]["completion"] if len(splits["train"]) else ""
    end = end_of_turn(tokenizer)
    if not first.endswith(end):
        raise DataError(
            f"experiment '{config.name}': completions in {config.data_dir} do not end with the base tokenizer's "
            f"end-of-turn token {end!r}; the data was prepared with another tokenizer"
        )
    return {name: splits[name].select_columns(list(TRAINING_COLUMNS)) for name in ("train", "validation")}


def nf4_quantization(compute_dtype):
    """QLoRA's base weights: 4-bit NF4 with double quantisation (export loads the base this way to merge)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def build_model(config: ExperimentConfig, hardware: Hardware):
    """The base model (4-bit when quantising) with fresh LoRA adapters on the target modules."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(config.seed)  # LoRA init draws from the global RNG
    kwargs: dict[str, Any] = {"dtype": hardware.dtype}
    if hardware.quantize:
        kwargs["quantization_config"] = nf4_quantization(hardware.dtype)
        kwargs["device_map"] = {"": local_rank()}  # each DDP process its own GPU
    with hub_errors(config.base_model, revision_of(config), "cannot download base model"):  # the weights, mid-way
        model = AutoModelForCausalLM.from_pretrained(config.base_model, revision=revision_of(config), **kwargs)
    if hardware.quantize:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        modules_to_save=list(config.lora.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)  # adapters stay fp32 under bf16/fp16 base weights
    if hardware.padding_free:
        from training.packing import enable_padding_free

        enable_padding_free(model)
    return model


def training_arguments(config: ExperimentConfig, hardware: Hardware, *, eval_on_start: bool,
                       run_dir: Path | None = None):
    """`run_dir`: the folder being trained into (the staged run; default the run folder itself).

    Settings SFTConfig takes as they are come from the fields marked `sft(...)` in ExperimentConfig;
    here only what the hardware plan decides and what every run shares.
    """
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str((run_dir or config.run_dir) / "checkpoints"),
        **sft_arguments(config),
        **batching_arguments(config, hardware),
        # Fused AdamW on a GPU: one kernel for all the adapter's tensors instead of a few per tensor, same update.
        # QLoRA included: the notebook's paged 8-bit AdamW saves memory only on optimizer state, which for
        # LoRA's ~1% of the weights is ~0.1 GB in fp32, and launched a kernel per tensor from Python.
        optim="adamw_torch_fused" if hardware.device == "cuda" else "adamw_torch",
        bf16=hardware.precision == "bf16",
        fp16=hardware.precision == "fp16",
        dataloader_pin_memory=hardware.device == "cuda",
        use_cpu=hardware.device == "cpu",
        completion_only_loss=True,  # loss on the answer (and its eos), never on the prompt
        eval_strategy="steps",
        eval_on_start=eval_on_start,  # the untrained adapter's validation loss, once per run
        save_strategy="steps",
        # Padding-free rows hold no padding, and counting "non-pad" ids there would drop every eos (pad == eos).
        include_num_input_tokens_seen="all" if hardware.padding_free else "non_padding",
        use_liger_kernel=hardware.liger,
        report_to="none",  # TensorBoard is added as a callback, to write into runs/<exp>/tensorboard
        disable_tqdm=False,
        ddp_find_unused_parameters=False if hardware.world_size > 1 else None,
    )


def batching_arguments(config: ExperimentConfig, hardware: Hardware) -> dict[str, Any]:
    """Batches of sequences (the notebook's recipe), or packed rows up to `batch_tokens` per device.

    Packed: trl packs whole examples (best-fit decreasing) into rows of at most max_seq_length tokens, as
    it would truncate them, and the padding-free collator lays a micro-batch's rows end to end, with
    attention kept inside each example. One micro-batch per optimizer step. Validation keeps unpacked
    batches of sequences, so its loss is averaged the same way on every machine.
    """
    if not hardware.batch_tokens:
        return dict(per_device_train_batch_size=config.per_device_batch_size,
                    per_device_eval_batch_size=config.per_device_batch_size,
                    gradient_accumulation_steps=accumulation_steps(config, hardware.world_size))
    rows = packed_rows(config, hardware)
    return dict(per_device_train_batch_size=rows, per_device_eval_batch_size=rows,
                gradient_accumulation_steps=1, packing=True, packing_strategy="bfd", eval_packing=False)


def packed_rows(config: ExperimentConfig, hardware: Hardware) -> int:
    return max(1, hardware.batch_tokens // config.max_seq_length)


def batching_summary(config: ExperimentConfig, hardware: Hardware, trainer) -> dict[str, Any]:
    """How an optimizer step was formed, for metrics.json and the model card."""
    if not hardware.batch_tokens:
        return {"mode": "sequences", "sequences_per_step": config.effective_batch_size,
                "per_device_batch_size": config.per_device_batch_size,
                "gradient_accumulation_steps": accumulation_steps(config, hardware.world_size),
                "processes": hardware.world_size}
    rows = packed_rows(config, hardware)
    return {"mode": "packed", "tokens_per_step": rows * config.max_seq_length * hardware.world_size,
            "rows_per_device": rows, "row_tokens": config.max_seq_length, "processes": hardware.world_size,
            "mean_examples_per_step": round(packed_examples_per_step(trainer, hardware), 1),
            "learning_rate": trainer.args.learning_rate, "lr_scaling": config.lr_scaling,
            "intervals": {name: getattr(trainer.args, name) for name in ("eval_steps", "save_steps", "logging_steps")}}


def build_trainer(config: ExperimentConfig, hardware: Hardware, model, tokenizer, splits, *,
                  eval_on_start: bool = True, callbacks=(), run_dir: Path | None = None):
    from transformers.integrations import TensorBoardCallback
    from trl import SFTTrainer

    tensorboard = TensorBoardCallback()
    tensorboard.logging_dir = str((run_dir or config.run_dir) / "tensorboard")
    with warnings.catch_warnings():
        # trl points Liger users to Hub kernels, which are downloaded at run time; Liger runs offline.
        warnings.filterwarnings("ignore", message=".*use_liger_kernel=True.* is deprecated", category=FutureWarning)
        trainer = SFTTrainer(
            model=model,
            args=training_arguments(config, hardware, eval_on_start=eval_on_start, run_dir=run_dir),
            # Packing: trl builds the same padding-free collator itself (and refuses one passed in).
            data_collator=padding_free_collator(tokenizer) if hardware.padding_free and not hardware.batch_tokens
            else None,
            train_dataset=splits["train"],
            eval_dataset=splits["validation"],
            processing_class=tokenizer,
            callbacks=[tensorboard, *callbacks],
        )
    if hardware.batch_tokens:
        rescale_intervals(trainer, config, hardware)
        trainer.args.learning_rate = packed_learning_rate(config, packed_examples_per_step(trainer, hardware))
    return trainer


def planned_steps(trainer) -> int:
    """Optimizer steps the run will take (per process: each trains its share of the rows)."""
    args = trainer.args
    if args.max_steps > 0:
        return args.max_steps
    batches = math.ceil(len(trainer.train_dataset) / (args.per_device_train_batch_size * args.world_size))
    return math.ceil(batches / args.gradient_accumulation_steps * args.num_train_epochs)


def packed_learning_rate(config: ExperimentConfig, examples_per_step: float) -> float:
    """The experiment's rate, tuned for effective_batch_size examples a step, scaled for a packed step
    of `examples_per_step` (the optimizer reads trainer.args when training starts)."""
    ratio = max(examples_per_step / config.effective_batch_size, 1.0)
    power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[config.lr_scaling]
    return config.learning_rate * ratio ** power


def packed_examples_per_step(trainer, hardware: Hardware) -> float:
    """Mean examples in one packed optimizer step, over all processes (trl records each row's examples)."""
    rows = trainer.train_dataset
    examples = sum(len(lengths) for lengths in rows["seq_lengths"])
    return examples / max(len(rows), 1) * trainer.args.per_device_train_batch_size * hardware.world_size


def rescale_intervals(trainer, config: ExperimentConfig, hardware: Hardware) -> None:
    """Keep eval/save/logging intervals in examples: the configs count steps of effective_batch_size
    sequences, and a packed step holds far more (eval_steps 50 = every 400 examples at 8 a step)."""
    per_step = packed_examples_per_step(trainer, hardware)
    for name in ("eval_steps", "save_steps", "logging_steps"):
        setattr(trainer.args, name, max(1, round(getattr(config, name) * config.effective_batch_size / per_step)))


def adapter_input_casts_skipped(model, hardware: Hardware):
    """While in this block, LoRA layers take their bf16/fp16 input as it is, for a Trainer that runs them
    under autocast (peft's `disable_input_dtype_casting`; in fp32 there is nothing to skip).

    peft casts each LoRA layer's input to the adapter's fp32 dtype, and autocast then casts it back to
    bf16/fp16 for the matmul: the round trip is exact, so the result is the same, but the copies (forward
    and backward, for each adapted projection) took 17% of a bf16 step's GPU time on an H200 (bench/README.md).
    """
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model, active=hardware.precision != "fp32")


def padding_free_collator(tokenizer):
    """trl's own collator in padding-free mode: each micro-batch as one row with restarting position_ids.

    Passed as a collator rather than SFTConfig(padding_free=True), which refuses max_length (its collator
    does not truncate), whereas trl's dataset preparation already truncates every example to max_length.
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)


# ---------------------------------------------------------------- one run


def train_experiment(config: ExperimentConfig, *, resume: bool = False, callbacks=()) -> dict[str, Any]:
    """Train one experiment into runs/<name>/; returns its metrics.

    The run is staged in runs/.in-progress/<name>/ and swapped in whole when it finishes, under a lock
    (training/run_folder.py): a failure or a signal leaves the previous run as it was.
    """
    hardware = plan_hardware(config)
    main = is_main_process()
    with RunLock(config.run_dir) if main else contextlib.nullcontext():
        work_dir, checkpoint = start_staged_run(config.run_dir, dump(config), resume, main=main)
        tokenizer = load_tokenizer(config)
        splits = load_splits(config, tokenizer)
        model = build_model(config, hardware)
        clock = session_clock()
        trainer = build_trainer(config, hardware, model, tokenizer, splits, eval_on_start=checkpoint is None,
                                callbacks=[clock, *callbacks], run_dir=work_dir)
        hardware = settle_compilation(config, hardware, trainer, planned_steps(trainer))
        with adapter_input_casts_skipped(model, hardware):
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            if not any(e.get("step") == trainer.state.global_step and "eval_loss" in e
                       for e in trainer.state.log_history):
                trainer.evaluate()  # the final loss is measured on the final weights
        metrics = collect_metrics(trainer.state, clock, hardware)
        metrics["batching"] = batching_summary(config, hardware, trainer)
        if trainer.is_world_process_zero():
            write_outputs(config, trainer, tokenizer, metrics, work_dir)
            finish_staged_run(work_dir, config.run_dir)
    return {"name": config.name, "run_dir": str(config.run_dir), **metrics}


def session_clock():
    """A callback timing this training session and counting its tokens (a resume counts only its own part)."""
    from transformers import TrainerCallback

    class SessionClock(TrainerCallback):
        """Also the training seconds (validation excluded) at which each validation loss was reached:
        the x axis of time-to-quality curves, fair between runs that validate more or less often."""

        start = seconds = mark = validating = 0.0
        tokens_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.mark = time.perf_counter()
            self.tokens_at_start = state.num_input_tokens_seen
            self.validating = 0.0
            self.reached_at: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            self.mark = time.perf_counter()

        def on_evaluate(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.reached_at[state.global_step] = round(self.mark - self.start - self.validating, 3)
            self.validating += now - self.mark
            self.mark = now

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.start

    return SessionClock()


def collect_metrics(state, clock, hardware: Hardware) -> dict[str, Any]:
    history = state.log_history
    train_loss = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]} for e in history if "loss" in e]
    reached_at = getattr(clock, "reached_at", {})
    eval_loss = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["eval_loss"],
                  "train_seconds": reached_at.get(e["step"])} for e in history if "eval_loss" in e]
    session_tokens = state.num_input_tokens_seen - clock.tokens_at_start
    return {
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "initial_eval_loss": eval_loss[0]["loss"] if eval_loss and eval_loss[0]["step"] == 0 else None,
        "best_eval_loss": min(e["loss"] for e in eval_loss),
        "final_eval_loss": eval_loss[-1]["loss"],
        "steps": state.global_step,
        "wall_time_s": round(clock.seconds, 3),
        "train_tokens": state.num_input_tokens_seen,
        "tokens_per_s": round(session_tokens / clock.seconds, 1) if clock.seconds else None,
        **peak_memory(hardware),
        "hardware": {"device": hardware.device, "precision": hardware.precision,
                     "quantization": "nf4" if hardware.quantize else "none", "processes": hardware.world_size,
                     "padding_free": hardware.padding_free, "liger_kernels": hardware.liger,
                     "compile_layers": hardware.compile_layers},
    }


def peak_memory(hardware: Hardware) -> dict[str, Any]:
    if hardware.device == "cuda":
        import torch

        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_kind": "cuda_max_allocated"}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_memory_kind": "process_max_rss"}


# ---------------------------------------------------------------- outputs


def write_outputs(config: ExperimentConfig, trainer, tokenizer, metrics: dict[str, Any], run_dir: Path) -> None:
    """adapter/, metrics.json and provenance.json into `run_dir` (the staged run)."""
    from training.chat import write_contract
    from training.provenance import base_model_record, stamp

    report = json.loads((config.data_dir / REPORT_FILE).read_text(encoding="utf-8"))

    def save(folder: Path) -> None:
        trainer.model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))  # carries the chat template
        write_contract(folder, tokenizer, report.get("system_prompt"), config.generation)

    replace_dir(run_dir / "adapter", save)
    write_json_atomic(run_dir / "metrics.json", metrics)
    write_json_atomic(run_dir / "provenance.json", {
        **stamp(),
        "data": {"fingerprint": report.get("fingerprint"), "sources": report.get("sources"),
                 "dir": str(config.data_dir)},
        "base_model": base_model_record(config.base_model, revision_of(config)),
        "hardware_plan": metrics["hardware"],
        "config": dump(config),
    })


def update_best(runs_dir: Path) -> dict[str, Any] | None:
    """runs/best.json: the run with the lowest best validation loss among those present."""
    candidates = {}
    for metrics_file in sorted(Path(runs_dir).glob("*/metrics.json")):
        loss = json.loads(metrics_file.read_text(encoding="utf-8")).get("best_eval_loss")
        if isinstance(loss, (int, float)):
            candidates[metrics_file.parent.name] = loss
    if not candidates:
        return None
    name = min(candidates, key=candidates.get)
    best = {"experiment": name, "eval_loss": candidates[name], "candidates": candidates}
    write_json_atomic(Path(runs_dir) / "best.json", best)
    return best


def summary_table(results: list[dict[str, Any]]) -> str:
    def fmt(value, spec=".4f"):
        return "-" if value is None else format(value, spec)

    header = ("experiment", "steps", "initial", "best", "final", "time s", "tok/s", "adapter")
    rows = [(r["name"], str(r["steps"]), fmt(r["initial_eval_loss"]), fmt(r["best_eval_loss"]),
             fmt(r["final_eval_loss"]), fmt(r["wall_time_s"], ".1f"), fmt(r["tokens_per_s"], ".0f"),
             str(Path(r["run_dir"]) / "adapter")) for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "validation loss\n" + "\n".join(lines)
