"""The training plan: everything a run will do, resolved once, before any weights load.

`TrainingPlan.resolve(config, device, lengths)` takes the experiment config, a `Device` (training/device.py: this
machine, a named GPU class, or a share of a GPU) and the training examples' token lengths, and returns a frozen
value: attention kernel, precision, quantization, step size, the *effective* learning rate and the rule that
scaled it, eval/save/log intervals in optimizer steps, planned steps, compiled layers, Liger, optimizer. SFTConfig
is built from it once (training/trainer.py) and nothing edits the trainer afterwards; the plan is written to
plan.json beside config.yaml, recorded in provenance.json, and the model card's hyperparameter table shows it.

Packed steps are counted with trl's own packing function (`trl.pack_dataset`, best-fit decreasing) over the same
lengths, in the same order, that the trainer packs (training/trainer.py hands trl the tokenized examples), so the
plan's examples per step, rate and steps are the run's exactly.

Why each rule: the kernels a GPU has (flash attention from compute capability 8.0, in half precision), precision
(bf16 where native, else fp16 with a gradient scaler), step size from GPU memory (a model of the bytes per token,
calibrated on bench/README.md's measurements), rate and intervals from the step's examples (bench/README.md, time
to quality).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from common.errors import ConfigError, EnvironmentProblem
from training.config import ExperimentConfig
from training.device import GIB, Device, Software, resolve_precision, torch_dtype

# Tokens in one packed optimizer step, chosen for time to quality, not tokens per second: on an H200 with real
# weights, exp1 reached the notebook recipe's final validation loss fastest at this size with the rate scaled
# linearly (bench/bench_time_to_quality.py, bench/README.md). Larger steps run faster per token but take fewer
# optimizer steps, and 3 epochs of 32,768-token steps trained a clearly worse adapter.
AUTO_BATCH_TOKENS = 8192
# Compiling the layers costs about 63 s once (H200, TinyLlama-1.1B, a cold cache; ~42 s warm) and saves 0.05 s a
# step in bf16 at the default step size, 0.09 in QLoRA (bench/README.md): auto compiles only runs long enough to
# earn it back from a cold cache (3 epochs of all 33,955 flashcards: ~1,850 steps).
COMPILE_MIN_STEPS = 1250

# The attention kernels of padding-free rows (training/packing.py). "sdpa" is plain batches of padded sequences.
FLASH_VARLEN = "flash_varlen"  # torch's variable-length flash attention: compute capability 8.0+, half precision
SDPA_PADDED = "sdpa_padded"  # each example padded within length buckets, SDPA's memory-efficient kernel: any GPU
SDPA = "sdpa"
LR_POWERS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


# ---------------------------------------------------------------- the model's size, for memory


@dataclass(frozen=True)
class ModelShape:
    """What a step's memory depends on: the weights and the per-token activations of the base model."""

    name: str
    parameters: int
    hidden_size: int
    layers: int
    vocab_size: int
    tied_embeddings: bool

    @classmethod
    def of(cls, base_model: str, revision: str | None) -> ModelShape | None:
        """Read from the base's config.json (no weights); None when it cannot be read (preflight says why)."""
        model = meta_model(base_model, revision)
        if model is None:
            return None
        text = model.config.get_text_config()
        return cls(base_model, sum(p.numel() for p in model.parameters()), text.hidden_size, text.num_hidden_layers,
                   text.vocab_size, bool(getattr(text, "tie_word_embeddings", False)))


@functools.cache  # experiments usually share one base
def meta_model(base_model: str, revision: str | None):
    """The base built from its config.json on the meta device (no weights read, no memory used), or None when
    its config cannot be read (preflight's check_base_model says why)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_model, revision=revision)
    except (OSError, ValueError):
        return None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


# The two bases this project trains (their config.json files): the plan table in the docs uses these.
TINYLLAMA = ModelShape("TinyLlama-1.1B", 1_100_048_384, 2048, 22, 32000, False)
SMOLLM2 = ModelShape("SmolLM2-135M", 134_515_008, 576, 30, 49152, True)

# Activations a LoRA step keeps per token, per hidden unit and layer, in half precision: 34 bytes (Korthikanti et
# al., 2022, with flash-style attention: no term for the attention matrix). Logits: fp32 values and gradient.
# Checked against bench/README.md (TinyLlama-1.1B, H200): this model says 1.79 MB a token in bf16 where 1.64 was
# measured (8,192 and 16,384-token steps), so it errs on the safe side.
ACTIVATION_BYTES = 34
LOGIT_BYTES = 8
# QLoRA: peft's prepare_model_for_kbit_training keeps embeddings and norms in fp32, so the residual stream is fp32:
# measured 2.2-2.4 MB a token against bf16's 1.64.
NF4_ACTIVATION_FACTOR = 1.45
NF4_BYTES_PER_PARAMETER = 0.5
# The fallback kernel keeps its inputs padded within length buckets (~1.4x) and grouped key/value heads repeated:
# the attention's share of the 34 bytes (queries, keys, values, output: 8) grows by about half.
SDPA_PADDED_ACTIVATION_FACTOR = 1.15
# What a step may use of the GPU: the CUDA context, the allocator's fragmentation and kernels' workspace take the rest.
MEMORY_SHARE = 0.85
RESERVED_BYTES = 1 * GIB


def weight_bytes(shape: ModelShape, precision: str, quantized: bool) -> float:
    if not quantized:
        return shape.parameters * torch_dtype(precision).itemsize
    embeddings = shape.vocab_size * shape.hidden_size * (1 if shape.tied_embeddings else 2)
    return (shape.parameters - embeddings) * NF4_BYTES_PER_PARAMETER + embeddings * 4


def token_bytes(shape: ModelShape, precision: str, quantized: bool, attention: str = FLASH_VARLEN) -> float:
    activations = shape.layers * shape.hidden_size * ACTIVATION_BYTES * (2 if precision == "fp32" else 1)
    activations *= (NF4_ACTIVATION_FACTOR if quantized else 1.0) * \
        (SDPA_PADDED_ACTIVATION_FACTOR if attention == SDPA_PADDED else 1.0)
    return activations + shape.vocab_size * LOGIT_BYTES


def step_memory_bytes(shape: ModelShape, precision: str, quantized: bool, tokens: int,
                      attention: str = FLASH_VARLEN) -> float:
    """Estimated peak of a packed training step of `tokens` tokens on one device."""
    return weight_bytes(shape, precision, quantized) + RESERVED_BYTES + \
        tokens * token_bytes(shape, precision, quantized, attention)


def auto_batch_tokens(shape: ModelShape, device: Device, precision: str, quantized: bool, row_tokens: int,
                      attention: str = FLASH_VARLEN) -> int:
    """Tokens per device per step, in whole rows of `row_tokens`: AUTO_BATCH_TOKENS shared by the processes (so a
    step, and the adapter, is the same on any GPU count), less where the device cannot hold its share; one row
    at least."""
    usable = device.memory_bytes * MEMORY_SHARE - RESERVED_BYTES - weight_bytes(shape, precision, quantized)
    fits = int(max(usable, 0) // token_bytes(shape, precision, quantized, attention))
    share = -(-AUTO_BATCH_TOKENS // device.count)
    return max(row_tokens, min(share, fits) // row_tokens * row_tokens)


# ---------------------------------------------------------------- what the device runs (no data needed)


@dataclass(frozen=True)
class Choices:
    """The settings the config and the device decide before any data is read (preflight checks these)."""

    precision: str
    quantization: str
    padding_free: bool
    attention: str
    batch_tokens: int | None  # per device, whole rows; None: batches of sequences
    compile_possible: bool  # compiled layers can run here (auto still waits for the run's length)
    estimated_step_gb: float | None


def choose(config: ExperimentConfig, device: Device, software: Software | None = None,
           shape: ModelShape | None = None) -> Choices:
    """Kernels, precision, quantization and step size for `config` on `device`; EnvironmentProblem (one line,
    naming the device and the fix) for a requested setting it cannot run."""
    software = software or Software.detect()
    where = f"experiment '{config.name}'"
    precision = resolve_precision(config.precision, device, where)
    quantized = _quantize(config, device, software, where)
    padding_free = device.cuda if config.padding_free == "auto" else config.padding_free
    flash = device.flash_attention and software.flash_varlen and precision != "fp32"
    attention = (FLASH_VARLEN if flash else SDPA_PADDED) if padding_free else SDPA
    rows = config.max_seq_length
    batch_tokens = config.batch_tokens
    if batch_tokens == "auto" and device.cuda and padding_free:
        # without the base's shape (preflight reports why) the size is the memory-blind share
        batch_tokens = auto_batch_tokens(shape, device, precision, quantized, rows, attention) if shape \
            else max(rows, -(-AUTO_BATCH_TOKENS // device.count) // rows * rows)
    elif batch_tokens == "auto":
        batch_tokens = None
    elif isinstance(batch_tokens, int):
        batch_tokens = max(1, batch_tokens // rows) * rows
        _check_fits(config, device, shape, precision, quantized, attention, batch_tokens, where)
    estimate = step_memory_bytes(shape, precision, quantized, batch_tokens, attention) / 1e9 \
        if device.cuda and shape and batch_tokens else None
    compile_possible = _compile_possible(config, device, attention, batch_tokens, where)
    _check_liger(config, device, software, where)
    if not batch_tokens:
        _accumulation(config, device.count)  # raises when it does not divide over the processes
    return Choices(precision, "nf4" if quantized else "none", padding_free, attention, batch_tokens,
                   compile_possible, round(estimate, 1) if estimate else None)


def _quantize(config: ExperimentConfig, device: Device, software: Software, where: str) -> bool:
    available = device.cuda and software.bitsandbytes
    if config.quantization == "nf4" and not available:
        missing = "a CUDA GPU" if not device.cuda else "the bitsandbytes package (pip install bitsandbytes)"
        raise EnvironmentProblem(f"{where}: quantization nf4 needs {missing}; "
                                 "use --set quantization=auto to fall back to full-precision LoRA")
    return config.quantization == "nf4" or (config.quantization == "auto" and available)


def _check_fits(config, device: Device, shape: ModelShape | None, precision: str, quantized: bool, attention: str,
                tokens: int, where: str) -> None:
    if not (device.cuda and shape):
        return
    needed = step_memory_bytes(shape, precision, quantized, tokens, attention)
    if needed > device.memory_bytes:
        fits = auto_batch_tokens(shape, replace(device, count=1), precision, quantized, config.max_seq_length,
                                 attention)
        raise EnvironmentProblem(
            f"{where}: batch_tokens {config.batch_tokens} needs about {needed / GIB:.0f} GiB a step on "
            f"{device.describe()}; use --set batch_tokens=auto ({fits:,} tokens there)")


def _compile_possible(config: ExperimentConfig, device: Device, attention: str, batch_tokens: int | None,
                      where: str) -> bool:
    """Compiled layers need CUDA, packed steps and the flash kernel (the path bench/README.md measured), no
    checkpointing, and no Liger asked for (its Triton kernels do not trace). `compile_layers: true` where they
    cannot run is refused; auto just stays eager."""
    problem = None
    if not (device.cuda and batch_tokens):
        problem = "compile_layers needs a CUDA GPU and packed steps (batch_tokens); use auto or false"
    elif config.gradient_checkpointing:
        problem = "compile_layers does not combine with gradient_checkpointing; turn one off"
    elif config.liger_kernels is True:
        problem = ("liger_kernels and compile_layers do not combine (Liger's Triton kernels fail under "
                   "torch.compile); set one of them to auto or false")
    elif attention != FLASH_VARLEN:
        problem = (f"compile_layers needs flash attention, which {device.describe()} lacks in this setup (compute "
                   "capability 8.0 and half precision); use --set compile_layers=auto")
    if problem and config.compile_layers is True:
        raise EnvironmentProblem(f"{where}: {problem}")
    return problem is None and config.compile_layers is not False


def _check_liger(config: ExperimentConfig, device: Device, software: Software, where: str) -> None:
    if config.liger_kernels is not True:
        return
    if not device.cuda:
        raise EnvironmentProblem(f"{where}: liger_kernels needs a CUDA GPU; use auto or false")
    if not software.liger_kernel:
        raise EnvironmentProblem(f"{where}: liger_kernels needs the liger-kernel package "
                                 "(pip install liger-kernel); use auto or false")


def _accumulation(config: ExperimentConfig, processes: int) -> int:
    per_step = config.per_device_batch_size * processes
    if config.effective_batch_size % per_step:
        raise ConfigError(
            f"experiment '{config.name}': effective_batch_size {config.effective_batch_size} is not a multiple of "
            f"per_device_batch_size {config.per_device_batch_size} x {processes} processes")
    return config.effective_batch_size // per_step


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a run does, as plan.json records it."""

    device: Device
    attention: str  # FLASH_VARLEN, SDPA_PADDED or SDPA
    precision: str  # bf16, fp16 (autocast with a gradient scaler) or fp32
    quantization: str  # nf4 (QLoRA) or none
    adapter_dtype: str  # the LoRA weights': fp32 (always under fp16), or bf16 where trl keeps QLoRA adapters in bf16
    padding_free: bool
    packed: bool  # steps of whole examples packed into rows (batch_tokens), else batches of sequences
    micro_batch: int  # per device: packed rows of row_tokens, or sequences
    row_tokens: int | None  # packed: tokens per row (max_seq_length)
    accumulation: int  # micro-batches per optimizer step
    examples_per_step: float  # mean training examples in one optimizer step, all processes
    base_learning_rate: float  # the config's, tuned for effective_batch_size examples a step
    learning_rate: float  # the rate the optimizer uses
    lr_scaling: str  # none | sqrt | linear
    lr_factor: float  # learning_rate / base_learning_rate
    eval_steps: int  # optimizer steps
    save_steps: int
    logging_steps: int
    steps_per_epoch: int
    planned_steps: int
    training_examples: int
    packed_rows: int | None  # packed: the rows of row_tokens the training examples fill
    compile_layers: bool
    liger: bool
    optimizer: str
    estimated_step_gb: float | None = None  # packed steps on a GPU: the memory model above

    @classmethod
    def resolve(cls, config: ExperimentConfig, device: Device, lengths: Sequence[int], *,
                software: Software | None = None, shape: ModelShape | None = None) -> TrainingPlan:
        """The plan for `config` on `device` over training examples of these token lengths (in dataset order)."""
        shape = shape or ModelShape.of(config.base_model, config.base_model_revision)
        if shape is None:
            raise ConfigError(f"experiment '{config.name}': cannot read the config of base_model {config.base_model}")
        software = software or Software.detect()
        choices = choose(config, device, software, shape)
        micro_batch, accumulation, per_step, items = _batching(config, choices, lengths, device.count)
        packed = bool(choices.batch_tokens)
        factor = max(per_step / config.effective_batch_size, 1.0) ** LR_POWERS[config.lr_scaling] if packed else 1.0
        per_epoch = max(math.ceil(math.ceil(items / (micro_batch * device.count)) / accumulation), 1)
        steps = config.max_steps if config.max_steps > 0 else math.ceil(config.epochs * per_epoch)
        compiled = choices.compile_possible and (config.compile_layers is True or steps >= COMPILE_MIN_STEPS)
        liger = config.liger_kernels is True or (
            config.liger_kernels == "auto" and device.flash_attention and software.liger_kernel and not compiled)
        intervals = {name: _interval(getattr(config, name), config.effective_batch_size, per_step) if packed
                     else getattr(config, name) for name in ("eval_steps", "save_steps", "logging_steps")}
        return cls(
            device=device, attention=choices.attention, precision=choices.precision,
            quantization=choices.quantization,
            # trl casts QLoRA adapters to bf16 (the QLoRA paper's choice); a GPU without bf16 keeps them in fp32
            adapter_dtype="bf16" if choices.quantization == "nf4" and choices.precision == "bf16" else "fp32",
            padding_free=choices.padding_free, packed=packed, micro_batch=micro_batch,
            row_tokens=config.max_seq_length if packed else None, accumulation=accumulation,
            examples_per_step=round(per_step, 3), base_learning_rate=config.learning_rate,
            learning_rate=config.learning_rate * factor, lr_scaling=config.lr_scaling if packed else "none",
            lr_factor=round(factor, 6), **intervals, steps_per_epoch=per_epoch, planned_steps=steps,
            training_examples=len(lengths), packed_rows=items if packed else None, compile_layers=compiled,
            liger=liger,
            # fused AdamW on a GPU: one kernel for all the adapter's tensors instead of a few per tensor, same update.
            # QLoRA included: the notebook's paged 8-bit AdamW saved only ~0.1 GB of LoRA optimizer state.
            optimizer="adamw_torch_fused" if device.cuda else "adamw_torch",
            estimated_step_gb=choices.estimated_step_gb,
        )

    @property
    def dtype(self):
        return torch_dtype(self.precision)

    @property
    def quantized(self) -> bool:
        return self.quantization == "nf4"

    @property
    def tokens_per_step(self) -> int | None:
        return self.micro_batch * self.row_tokens * self.device.count if self.packed else None

    @property
    def lr_rule(self) -> str:
        """How the rate came about, in words (the card and the summary show it)."""
        if not self.packed or self.lr_factor == 1.0:
            return "as configured"
        return (f"{self.lr_scaling}: {self.base_learning_rate:g} x {self.lr_factor:.3g} for "
                f"{self.examples_per_step:.1f} examples a step")

    def as_dict(self) -> dict:
        """plan.json: every field, the device as its description."""
        return {**asdict(self), "device": self.device.as_dict(), "tokens_per_step": self.tokens_per_step,
                "lr_rule": self.lr_rule}

    def batching(self) -> dict:
        """How an optimizer step was formed (metrics.json `batching`; the model card shows it)."""
        processes = self.device.count
        if not self.packed:
            return {"mode": "sequences", "sequences_per_step": self.micro_batch * self.accumulation * processes,
                    "per_device_batch_size": self.micro_batch, "gradient_accumulation_steps": self.accumulation,
                    "processes": processes}
        return {"mode": "packed", "tokens_per_step": self.tokens_per_step, "rows_per_device": self.micro_batch,
                "row_tokens": self.row_tokens, "processes": processes,
                "mean_examples_per_step": round(self.examples_per_step, 1), "learning_rate": self.learning_rate,
                "lr_scaling": self.lr_scaling,
                "intervals": {"eval_steps": self.eval_steps, "save_steps": self.save_steps,
                              "logging_steps": self.logging_steps}}

    def check_resumable(self, saved: dict | None, where: str) -> None:
        """A resume continues the same optimizer steps in the same number format: refuse one whose plan differs
        there (kernels, Liger and compilation may differ: they compute the same steps)."""
        if saved is None:
            return
        mine = self.as_dict()
        changed = [name for name in RESUME_FIELDS if saved.get(name) != mine[name]]
        if changed:
            raise ConfigError(f"--resume: {where} was planned with other {', '.join(changed)} (another GPU or "
                              "library?); resume where it started, or train afresh without --resume")


# What a resumed run must share with the one it continues.
RESUME_FIELDS = ("precision", "quantization", "packed", "micro_batch", "row_tokens", "accumulation", "learning_rate",
                 "planned_steps", "eval_steps", "save_steps", "logging_steps")


def _batching(config: ExperimentConfig, choices: Choices, lengths: Sequence[int], processes: int):
    """(micro-batch per device, accumulation, mean examples per optimizer step, micro-batch items in an epoch):
    packed rows counted as trl will pack them, or batches of sequences."""
    if choices.batch_tokens:
        rows = examples_per_row(lengths, config.max_seq_length)
        micro_batch = choices.batch_tokens // config.max_seq_length
        return micro_batch, 1, len(lengths) / max(len(rows), 1) * micro_batch * processes, len(rows)
    accumulation = _accumulation(config, processes)
    return config.per_device_batch_size, accumulation, float(config.effective_batch_size), len(lengths)


def _interval(steps: int, effective_batch_size: int, examples_per_step: float) -> int:
    """The config's intervals count steps of effective_batch_size examples; a packed step holds more (eval_steps 50
    = every 400 examples at 8 a step): the same number of examples, in packed steps."""
    return max(1, round(steps * effective_batch_size / examples_per_step))


def examples_per_row(lengths: Sequence[int], row_tokens: int) -> list[int]:
    """How many examples each packed row holds, packed by trl's own function exactly as the trainer packs them
    (best-fit decreasing, over the same lengths in the same order and batches)."""
    import datasets
    from trl import pack_dataset

    quiet = not datasets.are_progress_bars_disabled()  # a count, not a step of the run: no progress bar
    if quiet:
        datasets.disable_progress_bars()
    try:
        ids = datasets.Dataset.from_dict({"input_ids": [[0] * n for n in lengths]})
        return [len(row) for row in pack_dataset(ids, row_tokens, "bfd")["seq_lengths"]]
    finally:
        if quiet:
            datasets.enable_progress_bars()
