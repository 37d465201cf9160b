"""training/plan.py and training/device.py: one training plan, resolved once from (config, device, example lengths),
for every GPU class, tested from device descriptions alone; one precision rule for training, evaluation and the
Space; and a run's written plan is the one its trainer used."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from common.errors import EXIT_ENV, ConfigError, EnvironmentProblem
from space_support import space_importable
from common.yaml_config import validate
from training.config import ExperimentConfig
from training.device import Device, Software, resolve_precision, torch_dtype
from training.plan import (
    COMPILE_MIN_STEPS, FLASH_VARLEN, MEMORY_SHARE, SDPA, SDPA_PADDED, SMOLLM2, TINYLLAMA, TrainingPlan, choose,
    step_memory_bytes,
)

GIB = 2**30
EVERYTHING = Software(bitsandbytes=True, liger_kernel=True, flash_varlen=True)
NOTHING = Software(bitsandbytes=False, liger_kernel=False, flash_varlen=False)
# 128-token examples fill rows of 512 four at a time: a packed step of 16 rows holds 64 examples.
EVEN = [128] * 640


def plan(gpu: str = "H100", software: Software = EVERYTHING, shape=TINYLLAMA, lengths=EVEN, **settings):
    config = ExperimentConfig(name="p", **settings)
    return TrainingPlan.resolve(config, Device.named(gpu), lengths, software=software, shape=shape)


def fake_gpu(monkeypatch, capability: tuple[int, int] | None, memory: int = 141 * GIB, name: str = "NVIDIA H200"):
    """torch.cuda as a machine with this GPU would answer (None: no CUDA)."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    if capability is None:
        return
    major, minor = capability
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(
        name=name, major=major, minor=minor, total_memory=memory))


# ---------------------------------------------------------------- the device and the precision rule


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
    detected = Device.detect()
    training = choose(ExperimentConfig(name="plan", quantization="none"), detected, NOTHING, TINYLLAMA)
    if zero_gpu:  # the Space must not ask the GPU there
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: pytest.fail("queried the GPU"))
    assert space_loading.device_and_dtype() == (device, dtype)
    assert (detected.kind, torch_dtype(training.precision)) == (device, dtype)


def test_detect_describes_this_machines_gpu(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), memory=15 * GIB, name="Tesla T4")
    assert Device.detect() == Device("cuda", "Tesla T4", (7, 5), 15 * GIB, 1)
    fake_gpu(monkeypatch, None)
    assert Device.detect().kind == "cpu"


def test_evaluation_uses_the_training_rule():
    """A T4 evaluates in fp16 as it trains, never emulated bf16."""
    t4 = Device.named("T4")
    assert resolve_precision("auto", t4, "evaluation") == "fp16"
    with pytest.raises(EnvironmentProblem, match=r"^evaluation: precision bf16: the T4 \(compute capability 7.5, "
                                                 r"15 GiB\) has no bf16; use --set precision=auto \(fp16 there\)$"):
        resolve_precision("bf16", t4, "evaluation")
    with pytest.raises(EnvironmentProblem, match="precision fp16 needs a CUDA GPU"):
        resolve_precision("fp16", Device.named("CPU"), "evaluation")
    assert resolve_precision("bf16", Device.named("CPU"), "evaluation") == "bf16"  # exact on a CPU, if slow


def test_gpu_classes_are_named_as_users_name_them():
    assert Device.named("t4") == Device.named("T4") and Device.named("a100-80gb").memory_bytes == 80 * GIB
    with pytest.raises(ConfigError, match="unknown GPU class 'A100' \\(did you mean 'A100-40GB' or 'A100-80GB'\\?"):
        Device.named("A100")


# ---------------------------------------------------------------- the plan table


@pytest.fixture(scope="module")
def table():
    from training.plan_table import rows

    return rows()


def test_no_gpu_class_defaults_to_a_kernel_it_lacks(table):
    """0 rows whose default plan calls a kernel the GPU lacks: flash attention and bf16 from compute capability
    8.0 (flash in half precision only), Triton's kernels (compiled layers, Liger) where they were measured (8.0+),
    NF4 on CUDA; and every default step fits its GPU's memory by the plan's own model."""
    assert len(table) == 10
    for row in table:
        device = row["device"]
        for made, shape in zip(row["plans"], (TINYLLAMA, TINYLLAMA, SMOLLM2)):
            ampere = device.cuda and device.capability >= (8, 0)
            assert made.attention != FLASH_VARLEN or (ampere and made.precision in ("bf16", "fp16")), row["gpu"]
            assert made.precision != "bf16" or ampere, row["gpu"]
            assert not (made.compile_layers or made.liger) or ampere, row["gpu"]
            assert made.quantization == "none" or device.cuda, row["gpu"]
            assert made.packed is made.padding_free is device.cuda, row["gpu"]
            if made.packed:
                needed = step_memory_bytes(shape, made.precision, made.quantization == "nf4", made.tokens_per_step,
                                           made.attention)
                assert needed <= device.memory_bytes * MEMORY_SHARE, row["gpu"]


def test_the_plan_table_rows(table):
    by_gpu = {row["gpu"]: row for row in table}
    shown = {gpu: (row["attention"], row["precision"], row["quantization"], *row["step"], row["compile"],
                   row["liger"]) for gpu, row in by_gpu.items()}
    compiled = f"runs of {COMPILE_MIN_STEPS:,}+ steps"
    assert shown["CPU"] == (SDPA, "fp32", "none", "8 sequences", "8 sequences", "no", "no")
    for gpu in ("T4", "V100"):  # the notebook's GPU and its elder: no flash attention, no bf16
        assert shown[gpu] == (SDPA_PADDED, "fp16", "nf4", "4,096 tokens", "8,192 tokens", "no", "no")
    for gpu in ("L4", "A10G"):  # 24 GiB: TinyLlama's QLoRA step is capped by memory
        assert shown[gpu] == (FLASH_VARLEN, "bf16", "nf4", "7,680 tokens", "8,192 tokens", compiled, "shorter runs")
    for gpu in ("A100-40GB", "A100-80GB", "H100", "H200", "RTX Pro 6000 Blackwell"):
        assert shown[gpu] == (FLASH_VARLEN, "bf16", "nf4", "8,192 tokens", "8,192 tokens", compiled, "shorter runs")


def test_the_docs_show_the_plan_table():
    from training.plan_table import DOCS, in_docs, markdown

    table = markdown()
    for path in DOCS:
        assert in_docs(path) == table, f"{path} is stale: python -m training.plan_table --write"


# ---------------------------------------------------------------- the rules


def test_step_size_follows_memory_model_and_processes():
    assert plan("T4", NOTHING).tokens_per_step == 5120  # TinyLlama in fp16 (no bitsandbytes)
    assert plan("T4").tokens_per_step == 4096  # QLoRA: the fp32 residual stream costs more per token
    assert plan("T4", shape=SMOLLM2).tokens_per_step == 8192  # a small model takes the whole step
    assert plan("H100", quantization="none").tokens_per_step == 8192
    # Several GPUs share one step's tokens: the step, and so the adapter, stays the one-GPU step.
    two = TrainingPlan.resolve(ExperimentConfig(name="p"), Device.named("H100", count=2), EVEN, software=EVERYTHING,
                               shape=TINYLLAMA)
    assert (two.micro_batch, two.tokens_per_step, two.examples_per_step) == (8, 8192, 64.0)


def test_the_memory_model_errs_on_the_safe_side_of_the_measured_peaks():
    """bench/README.md, TinyLlama-1.1B on an H200: bf16 steps of 8,192 and 16,384 tokens peaked at 15.5 and 28.9 GB,
    QLoRA at 20.8 and 39 GB."""
    for quantized, tokens, measured in ((False, 8192, 15.5e9), (False, 16384, 28.9e9), (True, 8192, 20.8e9),
                                        (True, 16384, 39e9)):
        estimate = step_memory_bytes(TINYLLAMA, "bf16", quantized, tokens)
        assert measured <= estimate <= 1.25 * measured, (quantized, tokens, estimate)


def test_a_share_of_a_gpu_plans_for_and_names_its_share():
    share = Device.named("H100").share(8)
    assert (share.name, share.memory_bytes) == ("H100 (1/8)", 10 * GIB)
    shared = TrainingPlan.resolve(ExperimentConfig(name="p", quantization="none"), share, EVEN,
                                  software=Software(bitsandbytes=False, liger_kernel=False, flash_varlen=True),
                                  shape=TINYLLAMA)
    assert shared.tokens_per_step == 3072 and shared.estimated_step_gb * 1e9 <= share.memory_bytes * MEMORY_SHARE


@pytest.mark.parametrize("rule, factor", [("linear", 8.0), ("sqrt", 8 ** 0.5), ("none", 1.0)])
def test_packed_steps_scale_the_rate_and_keep_intervals_in_examples(rule, factor):
    """The rate is tuned for effective_batch_size (8) examples a step; a packed step of 64 trains at the rule's
    multiple, and eval/save/log intervals count the same examples as the config's steps did."""
    made = plan(lr_scaling=rule)
    assert (made.examples_per_step, made.packed_rows, made.micro_batch) == (64.0, 160, 16)
    assert made.learning_rate == pytest.approx(2e-4 * factor) and made.lr_factor == pytest.approx(factor, rel=1e-5)
    assert (made.eval_steps, made.save_steps, made.logging_steps) == (round(50 * 8 / 64), round(50 * 8 / 64), 1)
    assert made.planned_steps == 3 * 10 and made.steps_per_epoch == 10  # 160 rows, 16 a step, 3 epochs
    assert made.lr_rule == ("as configured" if rule == "none" else f"{rule}: 0.0002 x {factor:.3g} for 64.0 "
                                                                   "examples a step")


def test_a_packed_step_smaller_than_the_configs_keeps_the_rate():
    made = plan(batch_tokens=512, lengths=[256] * 64)  # one row of two examples a step, against 8 configured
    assert (made.examples_per_step, made.learning_rate) == (2.0, 2e-4)


def test_batches_of_sequences_keep_the_configs_rate_and_steps():
    made = plan(batch_tokens=None, lengths=[100] * 80)
    assert (made.packed, made.micro_batch, made.accumulation, made.learning_rate) == (False, 4, 2, 2e-4)
    assert (made.eval_steps, made.planned_steps, made.attention) == (50, 30, FLASH_VARLEN)


@pytest.mark.parametrize("gpu, settings, refusal", [
    ("T4", {"precision": "bf16"}, "precision bf16: the T4 (compute capability 7.5, 15 GiB) has no bf16; "
                                  "use --set precision=auto (fp16 there)"),
    ("V100", {"compile_layers": True}, "compile_layers needs flash attention, which the V100 (compute capability "
                                       "7.0, 16 GiB) lacks in this setup (compute capability 8.0 and half precision); "
                                       "use --set compile_layers=auto"),
    ("T4", {"batch_tokens": 32768, "quantization": "none"},
     "batch_tokens 32768 needs about 65 GiB a step on the T4 (compute capability 7.5, 15 GiB); "
     "use --set batch_tokens=auto (5,120 tokens there)"),
])
def test_settings_a_gpu_cannot_run_are_refused_in_one_line_naming_it_and_the_fix(gpu, settings, refusal):
    with pytest.raises(EnvironmentProblem) as raised:
        plan(gpu, NOTHING, **settings)
    assert raised.value.exit_code == EXIT_ENV and str(raised.value) == f"experiment 'p': {refusal}"


def test_torch_without_varlen_attention_trains_packed_rows_through_sdpa():
    """An older torch (requirements.txt admits torch>=2.4) has no flash varlen kernel: the fallback runs there."""
    old = Software(bitsandbytes=False, liger_kernel=False, flash_varlen=False)
    made = plan("H100", old, quantization="none", max_steps=COMPILE_MIN_STEPS)
    assert (made.attention, made.packed, made.compile_layers) == (SDPA_PADDED, True, False)


def test_fp32_on_a_gpu_takes_the_sdpa_kernel():
    assert plan("H100", precision="fp32", quantization="none").attention == SDPA_PADDED


@pytest.mark.parametrize("settings, compiles", [
    ({}, True),  # the default on a GPU: packed bf16 steps
    ({"quantization": "nf4"}, True),  # QLoRA too (bench/README.md)
    ({"gradient_checkpointing": True}, False),
    ({"batch_tokens": None}, False),  # batches of sequences
    ({"liger_kernels": True}, False),  # asked-for Liger needs the eager layers
    ({"compile_layers": False}, False),
])
def test_compile_layers_auto_on_a_long_gpu_run(settings, compiles):
    made = plan(**{"quantization": "none", "max_steps": COMPILE_MIN_STEPS, **settings})
    assert made.compile_layers is compiles
    assert made.liger is (not compiles and settings.get("liger_kernels", "auto") is not False)


def test_short_runs_stay_eager_with_liger():
    short = plan(max_steps=COMPILE_MIN_STEPS - 1)
    assert (short.compile_layers, short.liger) == (False, True)
    assert plan(max_steps=10, compile_layers=True).compile_layers  # asked for: any length


@pytest.mark.parametrize("gpu, settings, refusal", [
    ("CPU", {}, "compile_layers needs a CUDA GPU and packed steps"),
    ("H100", {"batch_tokens": None}, "compile_layers needs a CUDA GPU and packed steps"),
    ("H100", {"gradient_checkpointing": True}, "compile_layers does not combine with gradient_checkpointing"),
    ("H100", {"liger_kernels": True}, "liger_kernels and compile_layers do not combine"),
])
def test_compile_layers_true_is_refused_where_it_cannot_work(gpu, settings, refusal):
    with pytest.raises(EnvironmentProblem) as raised:
        plan(gpu, compile_layers=True, quantization="none", **settings)
    assert raised.value.exit_code == EXIT_ENV and refusal in str(raised.value) and "\n" not in str(raised.value)


def test_nf4_and_liger_need_their_gpu_and_package():
    with pytest.raises(EnvironmentProblem, match="quantization nf4 needs a CUDA GPU"):
        plan("CPU", quantization="nf4")
    with pytest.raises(EnvironmentProblem, match=r"nf4 needs the bitsandbytes package \(pip install bitsandbytes\)"):
        plan("T4", NOTHING, quantization="nf4")
    with pytest.raises(EnvironmentProblem, match="liger_kernels needs the liger-kernel package"):
        plan("H100", NOTHING, liger_kernels=True)
    assert plan("T4", EVERYTHING, quantization="auto").quantization == "nf4"
    assert plan("CPU", EVERYTHING, quantization="auto").quantization == "none"


def test_accumulation_must_divide_over_the_processes_unless_steps_are_packed():
    three = Device.named("CPU", count=3)
    config = ExperimentConfig(name="ddp", quantization="none")
    with pytest.raises(ConfigError, match=r"effective_batch_size 8 is not a multiple of per_device_batch_size 4 x 3"):
        TrainingPlan.resolve(config, three, EVEN, software=NOTHING, shape=TINYLLAMA)
    packed = config.model_copy(update={"batch_tokens": 1024, "padding_free": True})
    assert TrainingPlan.resolve(packed, three, EVEN, software=NOTHING, shape=TINYLLAMA).accumulation == 1


def test_resume_needs_the_same_plan():
    made = plan()
    saved = json.loads(json.dumps(made.as_dict()))
    made.check_resumable(saved, "runs/p")
    made.check_resumable(None, "runs/p")  # a run from before plans were written
    other = json.loads(json.dumps(plan("T4").as_dict()))
    with pytest.raises(ConfigError, match=r"^--resume: runs/p was planned with other precision, micro_batch, "
                                          r"learning_rate, planned_steps, eval_steps, save_steps, logging_steps \(another "
                                          r"GPU or library\?\); resume where it started, or train afresh without --resume$"):
        made.check_resumable(other, "runs/p")


def test_model_shape_is_read_from_the_base_config(tiny_base, shared_data):
    import dataclasses

    from training.plan import ModelShape

    tinyllama = ModelShape.of(str(shared_data / "tokenizer"), None)  # TinyLlama-1.1B-Chat's own config.json
    assert dataclasses.replace(tinyllama, name=TINYLLAMA.name) == TINYLLAMA
    tiny = ModelShape.of(str(tiny_base), None)
    assert (tiny.layers, tiny.hidden_size) == (2, 64) and tiny.parameters > 0
    assert ModelShape.of(str(tiny_base / "absent"), None) is None


# ---------------------------------------------------------------- the plan a run writes is the one it trained with


@pytest.fixture(scope="module")
def tiny_data(tiny_base, tmp_path_factory):
    from training.prepare import prepare
    from training.config import DataConfig
    from training.sample import SAMPLE_PATH

    data = tmp_path_factory.mktemp("plan-data") / "processed"
    prepare(DataConfig(source=str(SAMPLE_PATH), revision=None, tokenizer=str(tiny_base), tokenizer_revision=None,
                       max_examples=64, output_dir=data))
    return data


def packed_config(tiny_base, tiny_data, runs, **changes) -> ExperimentConfig:
    """A packed CPU run (the GPU fast path's batching, rate and intervals): 2,048-token steps of 256-token rows."""
    settings = dict(name="packed", base_model=str(tiny_base), base_revision=None, data_dir=str(tiny_data),
                    runs_dir=str(runs), learning_rate=1e-2, epochs=2, eval_steps=4, save_steps=8, logging_steps=2,
                    max_seq_length=256, batch_tokens=2048, padding_free=True, quantization="none",
                    lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    return validate(ExperimentConfig, {**settings, **changes}, "test")


@pytest.fixture(scope="module")
def packed_run(tiny_base, tiny_data, tmp_path_factory):
    from transformers import TrainerCallback

    from training.train import train_experiment

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            self.rows = len(train_dataloader.dataset)

        def on_train_end(self, args, state, control, **kwargs):
            self.args, self.max_steps = args, state.max_steps

    recorder = Recorder()
    config = packed_config(tiny_base, tiny_data, tmp_path_factory.mktemp("runs"))
    train_experiment(config, callbacks=[recorder])
    return config, recorder


@pytest.mark.slow
def test_the_written_plan_is_what_the_trainer_used(packed_run):
    config, used = packed_run
    written = json.loads((config.run_dir / "plan.json").read_text())
    provenance = json.loads((config.run_dir / "provenance.json").read_text())
    assert provenance["plan"] == written
    args = used.args
    assert written["packed"] and written["lr_factor"] > 1  # a packed step holds more than 8 examples
    assert args.learning_rate == written["learning_rate"] == pytest.approx(1e-2 * written["examples_per_step"] / 8)
    assert (args.eval_steps, args.save_steps, args.logging_steps) == \
        (written["eval_steps"], written["save_steps"], written["logging_steps"])
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.optim) == \
        (written["micro_batch"], written["accumulation"], written["optimizer"])
    assert (args.bf16, args.fp16, args.use_liger_kernel, args.packing) == (False, False, False, True)
    assert used.max_steps == written["planned_steps"] and used.rows == written["packed_rows"]
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert metrics["steps"] == written["planned_steps"] and metrics["batching"]["learning_rate"] == args.learning_rate


@pytest.mark.slow
def test_the_card_shows_the_rate_and_intervals_the_run_used(packed_run, tiny_data):
    from hub.artifacts import Experiment, Inputs
    from hub.cards import Where, adapter_card
    from training.layout import DataDir, EvalRoot, RunDir

    config, used = packed_run
    run = RunDir(config.run_dir)
    written = run.plan()
    evaluation = EvalRoot(config.run_dir.parent / "no-eval")
    experiment = Experiment(run, evaluation.model(config.name), run.config())
    inputs = Inputs(DataDir(tiny_data), DataDir(tiny_data).report(), [experiment], config.name, evaluation)
    where = Where(adapter_repo="me/adapter", dataset_repo="me/data", dataset_revision=None, branch_prefix="exp/",
                  license="apache-2.0")
    card = str(adapter_card(experiment, inputs, where, branch="exp/packed", is_main=False, load_revision="abc",
                            plots=[]))
    rate = f"{used.args.learning_rate:.4g}"
    assert f"| `learning_rate` | `0.01 → {rate} (linear: 0.01 x {written['lr_factor']:.3g} for " in card
    assert f"| `eval_steps` | `4 → {written['eval_steps']}` |" in card
    assert "| `batch_tokens` | `2048` |" in card  # a value the plan did not change shows once


@pytest.mark.slow
def test_examples_are_tokenized_as_trl_tokenizes_them(tiny_base, tiny_data, tmp_path):
    """trainer.tokenize does once what SFTTrainer does to prompt/completion rows, so the plan counts the rows trl
    packs: the same input_ids and labels, cut at max_seq_length, unlabelled examples dropped."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from training.trainer import load_tokenizer, training_data

    config = packed_config(tiny_base, tiny_data, tmp_path / "runs", max_seq_length=96)
    tokenizer = load_tokenizer(config)
    ours = training_data(config, tokenizer).train
    raw = load_from_disk(str(tiny_data))["train"].select_columns(["prompt", "completion"])
    theirs = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(str(tiny_base)), processing_class=tokenizer,
                        train_dataset=raw, args=SFTConfig(output_dir=str(tmp_path / "out"), max_length=96,
                                                          completion_only_loss=True, report_to="none",
                                                          use_cpu=True)).train_dataset
    assert any(len(ids) == 96 for ids in ours["input_ids"]), "some example should be cut at max_seq_length"
    assert ours["input_ids"] == theirs["input_ids"] and ours["labels"] == theirs["labels"]
