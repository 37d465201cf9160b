"""The trainer of one run, assembled from the experiment config and its TrainingPlan (training/plan.py): the
tokenizer, the tokenized examples, the base model with fresh LoRA adapters, trl's SFTConfig (built once, from the
plan) and SFTTrainer, and the training itself. Nothing here decides a setting: the plan has decided them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import DataError
from common.hub_errors import hub_errors
from training.config import ExperimentConfig, sft_arguments
from training.device import local_rank
from training.plan import TrainingPlan
from training.preflight import TRAINING_COLUMNS
from training.layout import RunDir


def load_tokenizer(config: ExperimentConfig):
    from training.tokenizer import load_tokenizer as load

    return load(config.base_model, config.base_model_revision)


# ---------------------------------------------------------------- the examples, tokenized once


@dataclass(frozen=True)
class TrainingData:
    """The train and validation splits as the trainer takes them: `input_ids` and `labels` (-100 on the prompt)."""

    train: Any  # datasets.Dataset
    validation: Any

    @property
    def lengths(self) -> list[int]:
        """Token lengths of the training examples, in dataset order: what the plan packs and counts."""
        return [len(ids) for ids in self.train["input_ids"]]


def training_data(config: ExperimentConfig, tokenizer) -> TrainingData:
    from datasets import load_from_disk

    from training.chat import end_of_turn

    splits = load_from_disk(str(config.data_dir))
    first = splits["train"][0]["completion"] if len(splits["train"]) else ""
    end = end_of_turn(tokenizer)
    if not first.endswith(end):
        raise DataError(
            f"experiment '{config.name}': completions in {config.data_dir} do not end with the base tokenizer's "
            f"end-of-turn token {end!r}; the data was prepared with another tokenizer"
        )
    data = TrainingData(*(tokenize(splits[name].select_columns(list(TRAINING_COLUMNS)), tokenizer,
                                   config.max_seq_length) for name in ("train", "validation")))
    for name, split in (("train", data.train), ("validation", data.validation)):
        if len(split) == 0:  # trl would fail on its first example with a bare StopIteration
            raise DataError(f"experiment '{config.name}': no {name} example keeps an answer token within "
                            f"max_seq_length {config.max_seq_length} (the prompts alone are longer); "
                            "raise max_seq_length")
    return data


def tokenize(split, tokenizer, max_length: int):
    """trl's own preparation of prompt/completion rows, done here once: the plan needs the examples' lengths
    before the model loads, and trl only tokenizes inside a trainer that has one. Given these rows (input_ids and
    labels), trl tokenizes nothing and packs exactly the lengths the plan counted (tests/test_plan.py checks the
    rows against trl's own preparation). As trl: the prompt and prompt + completion are tokenized alone, the
    completion starts where they diverge, the loss is on the completion (the answer and its end of turn) only,
    examples are cut to max_length and those left without a label are dropped."""
    from trl.data_utils import common_prefix_length

    def rows(batch: dict) -> dict:
        prompts = tokenizer(batch["prompt"])["input_ids"]
        full = tokenizer([p + c for p, c in zip(batch["prompt"], batch["completion"])])["input_ids"]
        starts = [common_prefix_length(prompt, ids) for prompt, ids in zip(prompts, full)]
        return {"input_ids": [ids[:max_length] for ids in full],
                "labels": [([-100] * start + ids[start:])[:max_length] for start, ids in zip(starts, full)]}

    # keep_in_memory: nothing is written beside the prepared data (datasets would cache there)
    tokenized = split.map(rows, batched=True, remove_columns=split.column_names, keep_in_memory=True)
    return tokenized.filter(lambda row: any(label != -100 for label in row["labels"]), keep_in_memory=True)


# ---------------------------------------------------------------- model and trainer


def nf4_quantization(compute_dtype):
    """QLoRA's base weights: 4-bit NF4 with double quantisation (export loads the base this way to merge)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def build_model(config: ExperimentConfig, plan: TrainingPlan):
    """The base model (4-bit when quantising) with fresh LoRA adapters on the target modules, attending through
    the plan's kernel, its layers compiled where the plan says."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(config.seed)  # LoRA init draws from the global RNG
    kwargs: dict[str, Any] = {"dtype": plan.dtype}
    if plan.quantized:
        kwargs["quantization_config"] = nf4_quantization(plan.dtype)
        kwargs["device_map"] = {"": local_rank()}  # each DDP process its own GPU
    revision = config.base_model_revision
    with hub_errors(config.base_model, revision, "cannot download base model"):  # the weights, mid-way
        model = AutoModelForCausalLM.from_pretrained(config.base_model, revision=revision, **kwargs)
    if plan.quantized:
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
    if plan.padding_free:
        from training.packing import enable_padding_free

        enable_padding_free(model, plan.attention)
    if plan.compile_layers:
        from training.compiled import compile_decoder_layers

        compile_decoder_layers(model)
    return model


def training_arguments(config: ExperimentConfig, plan: TrainingPlan, run_dir: Path, *, eval_on_start: bool):
    """SFTConfig, once, from the plan. `run_dir`: the folder being trained into (the staged run).

    Settings SFTConfig takes as they are come from the fields marked `sft(...)` in ExperimentConfig; the plan's
    values replace the ones it resolved (the rate and the intervals of packed steps) and add what it decided.
    """
    from trl import SFTConfig

    batching = dict(per_device_train_batch_size=plan.micro_batch, per_device_eval_batch_size=plan.micro_batch,
                    gradient_accumulation_steps=plan.accumulation)
    if plan.packed:
        # trl packs whole examples (best-fit decreasing) into rows of max_seq_length and its padding-free
        # collator lays a micro-batch's rows end to end. Validation keeps unpacked batches of sequences, so its
        # loss is averaged the same way on every machine.
        batching.update(packing=True, packing_strategy="bfd", eval_packing=False)
    resolved = dict(learning_rate=plan.learning_rate, eval_steps=plan.eval_steps, save_steps=plan.save_steps,
                    logging_steps=plan.logging_steps)
    return SFTConfig(
        output_dir=str(RunDir(run_dir).checkpoints),
        **{**sft_arguments(config), **resolved},
        **batching,
        optim=plan.optimizer,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",  # autocast with a gradient scaler; the LoRA weights stay fp32
        dataloader_pin_memory=plan.device.cuda,
        use_cpu=not plan.device.cuda,
        eval_strategy="steps",
        eval_on_start=eval_on_start,  # the untrained adapter's validation loss, once per run
        save_strategy="steps",
        # Padding-free rows hold no padding, and counting "non-pad" ids there would drop every eos (pad == eos).
        include_num_input_tokens_seen="all" if plan.padding_free else "non_padding",
        use_liger_kernel=plan.liger,
        report_to="none",  # TensorBoard is added as a callback, to write into runs/<exp>/tensorboard
        disable_tqdm=False,
        ddp_find_unused_parameters=False if plan.device.count > 1 else None,
    )


def build_trainer(config: ExperimentConfig, plan: TrainingPlan, model, tokenizer, data: TrainingData, *,
                  run_dir: Path | None = None, eval_on_start: bool = True, callbacks=()):
    import warnings

    import torch
    from transformers.integrations import TensorBoardCallback
    from trl import SFTTrainer

    run_dir = run_dir or config.run_dir
    tensorboard = TensorBoardCallback()
    tensorboard.logging_dir = str(RunDir(run_dir).tensorboard)
    with warnings.catch_warnings():
        # trl points Liger users to Hub kernels, which are downloaded at run time; Liger runs offline.
        warnings.filterwarnings("ignore", message=".*use_liger_kernel=True.* is deprecated", category=FutureWarning)
        trainer = SFTTrainer(
            model=model,
            args=training_arguments(config, plan, run_dir, eval_on_start=eval_on_start),
            # Packing: trl builds the same padding-free collator itself (and refuses one passed in).
            data_collator=padding_free_collator(tokenizer) if plan.padding_free and not plan.packed else None,
            train_dataset=data.train,
            eval_dataset=data.validation,
            processing_class=tokenizer,
            callbacks=[tensorboard, *callbacks],
        )
    if plan.precision == "fp16":
        # fp16 trains fp32 weights under autocast (its gradient scaler refuses fp16 gradients), and a GPU without
        # bf16 has no bf16 anywhere: QLoRA adapters, which trl has just cast to bf16 (its QLoRA default), and
        # modules_to_save copies of the fp16 base go to fp32 (before the optimizer exists).
        for param in trainer.model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
    return trainer


def padding_free_collator(tokenizer):
    """trl's own collator in padding-free mode: each micro-batch as one row with restarting position_ids.

    Passed as a collator rather than SFTConfig(padding_free=True), which refuses max_length (its collator
    does not truncate), whereas the examples are already cut to max_length (`tokenize`).
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)


def adapter_input_casts_skipped(model, plan: TrainingPlan):
    """While in this block, LoRA layers take their bf16/fp16 input as it is, for a Trainer that runs them
    under autocast (peft's `disable_input_dtype_casting`; in fp32 there is nothing to skip).

    peft casts each LoRA layer's input to the adapter's fp32 dtype, and autocast then casts it back to
    bf16/fp16 for the matmul: the round trip is exact, so the result is the same, but the copies (forward
    and backward, for each adapted projection) took 17% of a bf16 step's GPU time on an H200 (bench/README.md).
    """
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model, active=plan.precision != "fp32")


def train(trainer, plan: TrainingPlan, checkpoint: Path | None = None) -> None:
    """Train (from `checkpoint` when resuming), then measure the final weights' validation loss if the last
    step did not."""
    with adapter_input_casts_skipped(trainer.model, plan):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if not any(e.get("step") == trainer.state.global_step and "eval_loss" in e for e in trainer.state.log_history):
            trainer.evaluate()
