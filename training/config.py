"""The project's settings: every one a pydantic field with its description, validated before any work.

YAML file -> `--set` overrides -> config object -> code; the reading and the one-line errors are
`common.yaml_config`'s.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from common.errors import ConfigError
from common.yaml_config import StrictModel, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

# Upstream revisions. The base model is pinned to a commit, so a rerun loads the same weights.
# The dataset's commit could not be looked up offline when this was written: `main` is resolved
# to its commit sha at prepare time and recorded in data_report.json; set a sha here to pin it.
TINYLLAMA_ID = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
TINYLLAMA_REVISION = "fe8a4ea1ffedaf415f4da2f062534de366a451e6"
FLASHCARDS_ID = "medalpaca/medical_meadow_medical_flashcards"
FLASHCARDS_REVISION = "main"
# MedQA's `main` commit as the Hub API reported it on 2026-08-11 (last modified 2023-01-24); not checkable
# offline. Evaluation also records the commit it actually loaded (eval/<model>/metrics.json `medqa_source`).
MEDQA_ID = "GBaker/MedQA-USMLE-4-options"
MEDQA_REVISION = "0fb93dd23a7339b6dcd27e241cb9b5eca62d4d18"

# The original project's README showed its result as answers to these two, base against fine-tuned; every
# model card shows them too (EvalConfig.example_questions), beside test questions chosen by score.
README_QUESTIONS = ("What are the main symptoms of Type 2 diabetes?", "Explain the mechanism of action of aspirin.")

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful medical assistant. Answer the medical question accurately and concisely. "
    "You do not replace a doctor."
)


SEED_RANGE = (0, 2**32 - 1)  # numpy's seeds, which transformers.set_seed also sets


class GenerationConfig(StrictModel):
    """How the fine-tuned model answers; travels with the adapter to the Space (chat contract)."""

    max_new_tokens: int = Field(256, gt=0, le=4096, description="answer length cap, in tokens")
    do_sample: bool = Field(False, description="False: greedy decoding")
    temperature: float = Field(0.7, gt=0, le=2.0, description="used only when do_sample")
    top_p: float = Field(0.9, gt=0, le=1.0, description="used only when do_sample")
    repetition_penalty: float = Field(
        1.0, ge=1.0, le=2.0, description="1.0 disables it: plain greedy, exactly the decoding `evaluate` measures"
    )
    max_input_tokens: int = Field(1024, gt=0, description="prompt tokens kept (oldest turns dropped first)")


# The generation settings that decide an answer's text (max_input_tokens only trims the prompt): answers
# are comparable between models, and a base run shared by adapters, only when these agree.
DECODING_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "repetition_penalty")


class DataConfig(StrictModel):
    """`python -m training prepare`: where the flashcards come from and how they are cleaned."""

    source: str = Field(FLASHCARDS_ID, description="Hub dataset id, or a local .json/.jsonl/.csv/.parquet file")
    revision: str | None = Field(FLASHCARDS_REVISION, description="Hub revision (ignored for local files)")
    extra_sources: list[str] = Field(default_factory=list, description="more local files or Hub ids, merged before cleaning")
    columns: dict[str, str] | None = Field(
        None, description="map source column names to question/answer, e.g. {q: question, a: answer}"
    )
    tokenizer: str = Field(TINYLLAMA_ID, description="tokenizer whose chat template formats the rows (id or path)")
    tokenizer_revision: str | None = Field(TINYLLAMA_REVISION, description="Hub revision of the tokenizer")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="system turn put before every question")
    min_chars: int = Field(10, ge=0, description="shortest question or answer kept, in characters")
    max_chars: int = Field(2000, gt=0, description="longest question or answer kept, in characters")
    max_examples: int | Literal["all"] = Field(3000, description="deterministic subsample size, or 'all'")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train/validation/test fractions")
    seed: int = Field(42, description="seed for subsampling and splitting")
    output_dir: Path = Field(Path("data/processed"), description="where the DatasetDict and data_report.json go")

    @field_validator("max_examples", mode="before")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, int) and not isinstance(v, bool) and v <= 0:
            raise ValueError("must be a positive integer or 'all'")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is larger than max_chars ({self.max_chars})")
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise ValueError(f"split {list(self.split)} must be three positive fractions summing to 1")
        return self


class LoraSettings(StrictModel):
    r: int = Field(16, gt=0, le=4096, description="LoRA rank (at most the adapted layers' width)")
    alpha: int = Field(32, gt=0, le=65536, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="modules that get adapters"
    )
    modules_to_save: list[str] = Field(
        default_factory=list, description="modules trained in full and saved with the adapter (e.g. lm_head)"
    )


def sft(*arguments: str) -> dict[str, Any]:
    """Marks a field that trl's SFTConfig takes as it is, under these names: `training.train.training_arguments`
    passes every marked field, so a new trainer setting is one Field here (the card lists it by itself)."""
    return {"sft": list(arguments)}


def sft_arguments(config: BaseModel) -> dict[str, Any]:
    """SFTConfig keyword arguments of every field marked with `sft(...)`."""
    return {name: getattr(config, field) for field, info in type(config).model_fields.items()
            for name in (info.json_schema_extra or {}).get("sft", ())}


def field_rows(config: BaseModel, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, value, description) of every field, sections flattened (`lora.r`): the card's table."""
    rows: list[tuple[str, Any, str]] = []
    for field, info in type(config).model_fields.items():
        value = getattr(config, field)
        if isinstance(value, BaseModel):
            rows += field_rows(value, f"{prefix}{field}.")
        else:
            rows.append((prefix + field, value, info.description or ""))
    return rows


class ExperimentConfig(StrictModel):
    """`python -m training train --experiment NAME`: one fine-tuning run."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="experiment name, also its branch")
    description: str = Field("", description="one line for the model card")
    base_model: str = Field(TINYLLAMA_ID, description="Hub id or local path of the base model")
    base_revision: str | None = Field(TINYLLAMA_REVISION, description="Hub revision of the base (ignored for paths)")
    data_dir: Path = Field(Path("data/processed"), description="output of `prepare`")
    runs_dir: Path = Field(Path("runs"), description="the run goes to runs_dir/name")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="peak learning rate", json_schema_extra=sft("learning_rate"))
    per_device_batch_size: int = Field(4, gt=0, le=65536, description="sequences per device per micro-step")
    effective_batch_size: int = Field(8, gt=0, le=2**20,
                                      description="sequences per optimizer step; sets gradient accumulation")
    epochs: float = Field(3, gt=0, le=10_000, description="passes over the training split",
                          json_schema_extra=sft("num_train_epochs"))
    max_steps: int = Field(-1, ge=-1, description="stop after this many optimizer steps (-1: use epochs)",
                           json_schema_extra=sft("max_steps"))
    # transformers 5: a float below 1 in warmup_steps is a share of the total steps
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="share of steps spent warming up",
                                   json_schema_extra=sft("warmup_steps"))
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay", json_schema_extra=sft("weight_decay"))
    lr_scheduler: str = Field("cosine", description="transformers scheduler name", json_schema_extra=sft("lr_scheduler_type"))
    max_seq_length: int = Field(512, gt=8, le=2**20, description="longer examples are truncated",
                                json_schema_extra=sft("max_length"))
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: Literal["auto", "nf4", "none"] = Field(
        "auto", description="nf4: 4-bit QLoRA (CUDA + bitsandbytes); auto: nf4 when available, else none"
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where the GPU has it natively, fp16 on older GPUs, fp32 on CPU (training.device)"
    )
    gradient_checkpointing: bool = Field(False, description="trade compute for memory",
                                         json_schema_extra=sft("activation_checkpointing"))
    padding_free: Literal["auto"] | bool = Field(
        "auto",
        description="each micro-batch's examples as one unpadded row (training/packing.py: same losses, no "
        "compute on padding); auto: on with CUDA",
    )
    batch_tokens: Literal["auto"] | int | None = Field(
        "auto",
        description="the GPU fast path: each optimizer step takes whole examples packed into rows of "
        "max_seq_length, up to this many tokens per device (trl's best-fit-decreasing packing, padding-free), "
        "instead of effective_batch_size sequences. Fewer, larger steps; per_device_batch_size and "
        "effective_batch_size are then unused. auto: sized from GPU memory when padding_free is on "
        "(training.plan.AUTO_BATCH_TOKENS, chosen for time to quality; less where the GPU cannot hold it), off "
        "otherwise; null: always batches of sequences",
    )
    lr_scaling: Literal["none", "sqrt", "linear"] = Field(
        "linear",
        description="packed steps only: a step holds k times effective_batch_size examples, and the learning "
        "rate is multiplied by sqrt(k) (linear: by k; none: unchanged). The rate is tuned for "
        "effective_batch_size; larger steps with the same rate train a worse adapter (bench/README.md)",
    )
    liger_kernels: Literal["auto"] | bool = Field(
        "auto", description="Liger's fused Triton kernels (RMSNorm, SwiGLU, rotary; same math) on a CUDA GPU, "
        "through trl; auto: when the liger-kernel package is installed, on GPUs of compute capability 8.0 or newer",
    )
    compile_layers: Literal["auto"] | bool = Field(
        "auto", description="torch.compile each decoder layer for the training steps (training/compiled.py: "
        "fewer, fused kernel launches; validation and generation stay eager; Liger is then off); needs a CUDA GPU "
        "with flash attention and packed steps. auto: on for runs of at least training.plan.COMPILE_MIN_STEPS steps, "
        "without gradient_checkpointing or an explicit liger_kernels: true",
    )
    eval_steps: int = Field(50, gt=0, description="validation every N optimizer steps", json_schema_extra=sft("eval_steps"))
    logging_steps: int = Field(10, gt=0, description="log training loss every N optimizer steps",
                               json_schema_extra=sft("logging_steps"))
    save_steps: int = Field(50, gt=0, description="checkpoint every N optimizer steps (for --resume)",
                            json_schema_extra=sft("save_steps"))
    keep_checkpoints: int = Field(2, gt=0, description="newest checkpoints kept in runs/<name>/checkpoints",
                                  json_schema_extra=sft("save_total_limit"))
    seed: int = Field(42, ge=SEED_RANGE[0], le=SEED_RANGE[1], description="seed for init, dropout and data order",
                      json_schema_extra=sft("seed", "data_seed"))
    generation: GenerationConfig = Field(default_factory=GenerationConfig)

    @model_validator(mode="after")
    def _check(self):
        if self.effective_batch_size % self.per_device_batch_size:
            raise ValueError(
                f"effective_batch_size ({self.effective_batch_size}) must be a multiple of "
                f"per_device_batch_size ({self.per_device_batch_size})"
            )
        if isinstance(self.batch_tokens, int):
            if self.padding_free is False:
                raise ValueError("batch_tokens packs padding-free rows: set padding_free to auto or true, "
                                 "or batch_tokens to null")
            if self.batch_tokens < self.max_seq_length:
                raise ValueError(f"batch_tokens ({self.batch_tokens}) is less than one row of max_seq_length "
                                 f"({self.max_seq_length}) tokens")
        return self

    @field_validator("batch_tokens")
    @classmethod
    def _positive_tokens(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError("must be a positive number of tokens, 'auto' or null")
        return v

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.effective_batch_size // self.per_device_batch_size

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    @property
    def base_model_revision(self) -> str | None:
        """The revision to load the base at: base_revision for a Hub id, None for a local folder."""
        from common.hub_ids import is_hub_id

        return self.base_revision if is_hub_id(self.base_model) else None


def experiment_path(name_or_path: str, config_dir: Path = CONFIG_DIR) -> Path:
    """An experiment is a name (configs/experiments/NAME.yaml) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    path = config_dir / "experiments" / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (config_dir / "experiments").glob("*.yaml"))
        close = difflib.get_close_matches(name_or_path, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known) or 'none'}"
        raise ConfigError(f"unknown experiment '{name_or_path}' in {config_dir / 'experiments'} ({hint})")
    return path


def all_experiments(config_dir: Path = CONFIG_DIR) -> list[Path]:
    return sorted((config_dir / "experiments").glob("*.yaml"))


def load_experiment(name_or_path: str, overrides=(), config_dir: Path = CONFIG_DIR) -> ExperimentConfig:
    path = experiment_path(name_or_path, config_dir)
    return load_config(ExperimentConfig, path, overrides, name=path.stem)


def dump(config: BaseModel) -> dict[str, Any]:
    """JSON-safe dict of a config (paths as strings), for provenance files."""
    return config.model_dump(mode="json")


class EvalConfig(StrictModel):
    """`python -m training evaluate`: base model and every trained adapter on the test split (configs/eval.yaml)."""

    base_model: str | None = Field(None, description="base model id or path; None: the base the runs were trained on")
    base_revision: str | None = Field(None, description="Hub revision of base_model (ignored for paths)")
    data_dir: Path = Field(Path("data/processed"), description="output of `prepare`")
    split: str = Field("test", description="split of data_dir to evaluate on")
    runs_dir: Path = Field(Path("runs"), description="trained experiments: runs_dir/<name>/adapter")
    output_dir: Path = Field(Path("eval"), description="where eval/<model>/, comparison.* and plots/ go")
    models: list[str] | None = Field(
        None, description="evaluate only these ('base' and/or experiment names; a list or comma-separated); None: all"
    )
    limit: int | None = Field(None, gt=0, description="evaluate only the first N test examples")
    batch_size: int | None = Field(
        None, gt=0, description="sequences per forward pass; None: 16, and for generation on a GPU 1024 (256 under 32 GiB)"
    )
    max_new_tokens: int | None = Field(
        None, gt=0, le=4096, description="answer length cap in tokens; None: each adapter's saved generation settings "
        "(what the Space serves), which the base shares. Set it only for quick runs: the card then says so"
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where the GPU has it natively, fp16 on older GPUs, fp32 on CPU (training.device)"
    )
    medqa: str | None = Field(MEDQA_ID, description="MedQA 4-option questions: Hub dataset id or local JSONL; None: skip")
    medqa_revision: str | None = Field(MEDQA_REVISION, description="Hub revision of the MedQA dataset (a commit pins it)")
    medqa_split: str = Field("test", description="split of the MedQA Hub dataset")
    medqa_limit: int | Literal["auto"] | None = Field(
        "auto", description="score only the first N MedQA questions; auto: all 1,273 on a GPU, the first 200 on a CPU; "
        "None: all"
    )
    example_questions: list[str] = Field(
        default_factory=lambda: list(README_QUESTIONS), description="questions outside the test split that every "
        "model answers (decoded as the test questions are) for the model card's example answers, beside the test "
        "questions of the adapter's best, median and worst ROUGE-L"
    )
    bootstrap_resamples: int = Field(1000, gt=0, description="bootstrap resamples for the BCa confidence intervals")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    seed: int = Field(42, description="seed of the bootstrap resamples (and of sampling, if an adapter samples)")

    @field_validator("models", mode="before")
    @classmethod
    def _comma_separated(cls, v):  # --set models=base,exp1
        return [name.strip() for name in v.split(",") if name.strip()] if isinstance(v, str) else v

    @field_validator("example_questions")
    @classmethod
    def _not_blank(cls, v):
        if any(not question.strip() for question in v):
            raise ValueError("every example question must have text")
        return v

    @field_validator("medqa_limit")
    @classmethod
    def _positive_limit(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError("must be a positive number of questions, 'auto' or null")
        return v
