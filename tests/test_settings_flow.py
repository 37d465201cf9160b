"""Configuration flows one way: an ExperimentConfig field reaches the trainer (SFTConfig) and the model card
from its one definition in training/config.py."""
from __future__ import annotations

import pytest

from training.config import ExperimentConfig, field_rows, sft_arguments
from training.device import Device, Software
from training.plan import TINYLLAMA, TrainingPlan


def training_arguments(config: ExperimentConfig):
    """SFTConfig as the trainer builds it, from the config's plan on the CPU."""
    from training.trainer import training_arguments as arguments

    plan = TrainingPlan.resolve(config, Device.named("CPU"), [100] * 64, software=Software(False, False, False),
                                shape=TINYLLAMA)
    return arguments(config, plan, config.run_dir, eval_on_start=False)


# Fields the trainer gets through the training plan or the batching rule, not as they are: the SFTConfig
# argument that shows each (with the CPU plan; quantization, padding_free, batch_tokens, lr_scaling,
# liger_kernels and compile_layers act only on a GPU and are covered by tests/test_plan.py,
# tests/test_packing.py and tests/test_compiled.py).
THROUGH_THE_PLAN = {
    "name": "output_dir", "runs_dir": "output_dir",
    "per_device_batch_size": "per_device_train_batch_size", "effective_batch_size": "gradient_accumulation_steps",
    "precision": "use_cpu",
}
GPU_ONLY = {"quantization", "padding_free", "batch_tokens", "lr_scaling", "liger_kernels", "compile_layers"}
# Not trainer settings: the card, the model and data, the adapter and how it answers.
NOT_TRAINER = {"description", "base_model", "base_revision", "data_dir", "lora", "generation"}


def changed(value):
    """A valid value other than `value`, of its type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return 7 if value < 0 else value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.01
    return {"cosine": "linear"}[value]


def test_every_field_is_a_trainer_setting_or_said_not_to_be():
    marked = {field for field, info in ExperimentConfig.model_fields.items() if (info.json_schema_extra or {}).get("sft")}
    classified = marked | set(THROUGH_THE_PLAN) | GPU_ONLY | NOT_TRAINER
    assert set(ExperimentConfig.model_fields) == classified, "classify the new field here (and mark it with sft())"
    assert not marked & (set(THROUGH_THE_PLAN) | GPU_ONLY | NOT_TRAINER)


def test_every_marked_field_reaches_sftconfig():
    default = ExperimentConfig(name="flow")
    marked = {field: info.json_schema_extra["sft"] for field, info in ExperimentConfig.model_fields.items()
              if (info.json_schema_extra or {}).get("sft")}
    config = ExperimentConfig(name="flow", **{field: changed(getattr(default, field)) for field in marked})
    args = training_arguments(config)
    for field, names in marked.items():
        for name in names:
            assert getattr(args, name) == getattr(config, field) != getattr(default, field), (field, name)
    assert sft_arguments(config).keys() <= set(vars(args))


@pytest.mark.parametrize("field, value", [("name", "other"), ("runs_dir", "elsewhere"),
                                          ("per_device_batch_size", 2), ("effective_batch_size", 16),
                                          ("precision", "fp32")])
def test_fields_through_the_plan_reach_sftconfig(field, value, tmp_path):
    default = ExperimentConfig(name="flow", runs_dir=tmp_path)
    config = ExperimentConfig.model_validate({**default.model_dump(), field: value})
    args, before = (training_arguments(c) for c in (config, default))
    argument = THROUGH_THE_PLAN[field]
    if field == "precision":  # fp32 on the CPU: neither bf16 nor fp16
        assert args.use_cpu and not args.bf16 and not args.fp16
    else:
        assert getattr(args, argument) != getattr(before, argument)


def test_the_card_table_lists_every_field_with_its_description():
    from hub.cards import hyperparameter_rows

    config = ExperimentConfig(name="card", learning_rate=1e-4, lora={"r": 8})
    rows = {name: (value, description) for name, value, description in hyperparameter_rows(config)}
    leaves = {name for name, _, _ in field_rows(config)}
    assert set(rows) == leaves
    assert {field for field in ExperimentConfig.model_fields} == {name.split(".")[0] for name in rows}
    assert rows["learning_rate"] == ("0.0001", "peak learning rate")
    assert rows["lora.r"][0] == "8" and rows["lora.target_modules"][0] == '["q_proj", "k_proj", "v_proj", "o_proj"]'
    assert all(description for name, (_, description) in rows.items()), "every field needs a description"
