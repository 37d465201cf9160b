"""`python -m training train` with the tiny base: real trl / peft / transformers, a few CPU steps."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from common.atomic import OWNER_MARKER
from common.errors import DataError, EnvironmentProblem
from common.yaml_config import validate
from training.config import DataConfig, ExperimentConfig, dump
from training.run_folder import staging_dir
from training.sample import SAMPLE_PATH
from training.device import Device
from training.plan import TrainingPlan
from training.preflight import check_all
from training.provenance import sha256_file
from training.run_outputs import update_best
from training.train import train_experiment
from training.trainer import build_model, build_trainer, load_tokenizer, training_data

REPO_ROOT = Path(__file__).resolve().parent.parent
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prepare_data(out_dir: Path, source: Path, tokenizer: Path, max_examples: int) -> Path:
    from training.prepare import prepare

    prepare(DataConfig(source=str(source), revision=None, tokenizer=str(tokenizer), tokenizer_revision=None,
                       max_examples=max_examples, output_dir=out_dir))
    return out_dir


def short_experiment(base: Path, data_dir: Path, runs_dir: Path, **changes) -> ExperimentConfig:
    """Eight optimizer steps at a high learning rate: the tiny random-init base learns quickly."""
    settings = dict(
        name="short", base_model=str(base), base_revision=None, data_dir=str(data_dir), runs_dir=str(runs_dir),
        learning_rate=1e-2, per_device_batch_size=4, effective_batch_size=8, max_steps=8, eval_steps=4,
        save_steps=4, logging_steps=2, max_seq_length=256, quantization="none",
        lora={"r": 16, "alpha": 32, "target_modules": ALL_PROJECTIONS},
    )
    return validate(ExperimentConfig, {**settings, **changes}, "test")


@pytest.fixture(scope="module")
def tiny_data(tiny_base, tmp_path_factory) -> Path:
    return prepare_data(tmp_path_factory.mktemp("data") / "processed", SAMPLE_PATH, tiny_base, 64)


@pytest.fixture(scope="module")
def trained(tiny_base, tiny_data, tmp_path_factory):
    config = short_experiment(tiny_base, tiny_data, tmp_path_factory.mktemp("runs"))
    return config, train_experiment(config)


@pytest.mark.slow
def test_short_run_lowers_validation_loss(trained):
    config, result = trained
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 8
    assert [e["step"] for e in metrics["eval_loss"]] == [0, 4, 8]
    assert metrics["initial_eval_loss"] == metrics["eval_loss"][0]["loss"]
    assert metrics["final_eval_loss"] < metrics["initial_eval_loss"] - 0.5  # clearly lower
    assert metrics["best_eval_loss"] == min(e["loss"] for e in metrics["eval_loss"])
    assert [e["step"] for e in metrics["train_loss"]] == [2, 4, 6, 8]
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 0
    assert result["final_eval_loss"] == metrics["final_eval_loss"]


@pytest.mark.slow
def test_run_folder_follows_the_contract(trained, tiny_data):
    config, _ = trained
    run = config.run_dir
    adapter_files = {p.name for p in (run / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "chat_contract.json", "tokenizer_config.json"} <= adapter_files
    assert yaml.safe_load((run / "config.yaml").read_text()) == dump(config)
    provenance = json.loads((run / "provenance.json").read_text())
    report = json.loads((tiny_data / "data_report.json").read_text())
    assert provenance["data"]["fingerprint"] == report["fingerprint"]
    assert provenance["data"]["sources"] == report["sources"]
    weights = {"model.safetensors": sha256_file(Path(config.base_model) / "model.safetensors")}
    assert provenance["base_model"] == {"id": config.base_model, "revision": None, "weights_sha256": weights}
    assert provenance["config"] == dump(config) and "versions" in provenance
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == [OWNER_MARKER]  # no temp folders left behind
    assert sorted(p.name for p in run.parent.iterdir()) == ["short"]  # nor a staged run or lock (run_folder.py)


@pytest.mark.slow
def test_adapter_loads_and_generates(trained, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.chat import format_prompt, read_contract
    from training.tokenizer import load_tokenizer

    config, _ = trained
    adapter = config.run_dir / "adapter"
    contract = read_contract(adapter)
    tokenizer = load_tokenizer(adapter)
    assert tokenizer.chat_template and tokenizer.eos_token == "</s>"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), adapter)
    inputs = tokenizer(format_prompt(tokenizer, contract.system_prompt, "What causes scurvy?"),
                       return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    settings = config.generation
    assert contract.max_input_tokens == settings.max_input_tokens
    assert (contract.generation.max_new_tokens, contract.generation.do_sample,
            contract.generation.repetition_penalty) == (settings.max_new_tokens, settings.do_sample,
                                                       settings.repetition_penalty)
    assert contract.generation.eos_token_id == [tokenizer.eos_token_id]  # Zephyr: end of turn is eos


@pytest.mark.slow
def test_every_lora_parameter_changed(trained):
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    config, _ = trained
    plan = json.loads((config.run_dir / "plan.json").read_text())
    assert plan["attention"] == "sdpa" and plan["micro_batch"] == 4  # the CPU plan: batches of sequences
    cpu_plan = TrainingPlan.resolve(config, Device.detect(), training_data(config, load_tokenizer(config)).lengths)
    initial = get_peft_model_state_dict(build_model(config, cpu_plan))  # same seed: same init
    final = load_file(config.run_dir / "adapter" / "adapter_model.safetensors")
    assert set(initial) == set(final) and len(final) == 2 * 2 * len(ALL_PROJECTIONS)  # A and B, 2 layers
    unchanged = [name for name, tensor in final.items() if torch.equal(tensor, initial[name].to(tensor.dtype))]
    assert unchanged == []


@pytest.mark.slow
def test_eos_after_answer_is_a_label_with_real_tokenizer(shared_data, real_flashcards, real_tokenizer, tiny_base,
                                                         tmp_path):
    """pad == eos in TinyLlama: the answer's closing eos must stay a label, the prompt must not be."""
    data = prepare_data(tmp_path / "data", real_flashcards, shared_data / "tokenizer", 40)
    config = short_experiment(tiny_base, data, tmp_path / "runs")
    data = training_data(config, real_tokenizer)
    plan = TrainingPlan.resolve(config, Device.detect(), data.lengths)
    trainer = build_trainer(config, plan, build_model(config, plan), real_tokenizer, data)
    eos = real_tokenizer.eos_token_id
    assert eos == real_tokenizer.pad_token_id

    from datasets import load_from_disk

    rows = [trainer.train_dataset[i] for i in range(4)]
    for row, source in zip(rows, load_from_disk(str(config.data_dir))["train"]):
        labels, ids = row["labels"], row["input_ids"]
        answer = real_tokenizer(source["completion"], add_special_tokens=False)["input_ids"]
        trained_on = [token for token in labels if token != -100]
        assert trained_on[-1] == eos and ids[-1] == eos  # the closing eos is learned
        assert len(trained_on) == len(answer)  # nothing of the prompt, all of the answer
        n_prompt = len(ids) - len(answer)
        assert set(labels[:n_prompt]) == {-100} and eos in ids[:n_prompt]  # the prompt's own eos is masked

    batch = trainer.data_collator(rows)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["labels"][i, n - 1].item() == eos
        assert (batch["labels"][i, n:] == -100).all() and (batch["input_ids"][i, n:] == eos).all()
        assert batch["attention_mask"][i, :n].all() and not batch["attention_mask"][i, n:].any()
    assert len({len(r["input_ids"]) for r in rows}) > 1  # some rows really were padded


KILLER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from training.config import load_experiment
    from training.train import train_experiment

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the checkpoint is on disk

    train_experiment(load_experiment(sys.argv[1]), callbacks=[KillAfterCheckpoint()])
""")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_adapter(trained, tmp_path):
    import torch
    from safetensors.torch import load_file

    reference, _ = trained
    config = reference.model_copy(update={"runs_dir": tmp_path / "runs"})
    config_file = tmp_path / f"{config.name}.yaml"
    config_file.write_text(yaml.safe_dump(dump(config)))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    killed = subprocess.run([sys.executable, "-c", KILLER, str(config_file), "4"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (staging_dir(config.run_dir) / "checkpoints" / "checkpoint-4").is_dir()  # staged: run_dir never half-made
    assert not (config.run_dir / "adapter").exists()

    resumed = subprocess.run([sys.executable, "-m", "training", "train", "--experiment", str(config_file), "--resume"],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout

    expected = load_file(reference.run_dir / "adapter" / "adapter_model.safetensors")
    got = load_file(config.run_dir / "adapter" / "adapter_model.safetensors")
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert [e["step"] for e in metrics["eval_loss"]] == [0, 4, 8]  # history survives the crash
    assert json.loads((config.runs_dir / "best.json").read_text())["experiment"] == config.name


def test_best_json_picks_lowest_validation_loss(tmp_path):
    for name, loss in {"exp1": 1.31, "exp2": 1.12, "exp3": 1.25}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"best_eval_loss": loss, "final_eval_loss": loss + 0.1}))
    (tmp_path / "crashed").mkdir()  # a run without metrics is not a candidate
    best = update_best(tmp_path)
    assert best == json.loads((tmp_path / "best.json").read_text())
    assert best == {"experiment": "exp2", "eval_loss": 1.12, "candidates": {"exp1": 1.31, "exp2": 1.12, "exp3": 1.25}}


def test_all_problems_reported_before_loading_weights(tmp_path):
    broken = short_experiment(tmp_path / "no-base", tmp_path / "no-data", tmp_path / "runs")
    also_broken = short_experiment(tmp_path / "no-base", tmp_path / "no-data", tmp_path / "runs", name="other")
    with pytest.raises(DataError) as info:
        check_all([broken, also_broken], Device.detect())
    message = str(info.value)
    assert message.startswith("4 problems: ")
    assert "experiment 'short': data_dir" in message and "experiment 'other': data_dir" in message
    assert f"base_model {tmp_path / 'no-base'} is not a model folder" in message


def test_nf4_without_cuda_is_an_environment_problem(tiny_base, tmp_path):
    import torch

    from training.preflight import check_experiment

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = short_experiment(tiny_base, tmp_path, tmp_path, quantization="nf4")
    with pytest.raises(EnvironmentProblem, match="quantization nf4 needs a CUDA GPU"):
        TrainingPlan.resolve(config, Device.detect(), [100] * 8)
    assert any("quantization nf4 needs a CUDA GPU" in str(p) for p in check_experiment(config, Device.detect()))
    assert "bitsandbytes" not in sys.modules
    auto = TrainingPlan.resolve(short_experiment(tiny_base, tmp_path, tmp_path, quantization="auto"), Device.detect(),
                                [100] * 8)
    assert (auto.quantization, auto.precision) == ("none", "fp32")


def test_skipping_adapter_input_casts_is_exact_under_autocast(tiny_base):
    """The Trainer runs bf16 under autocast, where peft's cast of LoRA inputs to fp32 is a lossless round trip."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.trainer import adapter_input_casts_skipped

    def loss_and_grads(skip: bool):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.bfloat16)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                     "o_proj"], lora_dropout=0.0))
        for name, param in model.named_parameters():
            if "lora_B" in name:  # non-zero, so the adapters change the output
                torch.nn.init.normal_(param, std=0.05)
        assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)
        ids = torch.randint(3, base.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
        precision = SimpleNamespace(precision="bf16" if skip else "fp32")  # what the context reads of a plan
        with adapter_input_casts_skipped(model, precision), torch.autocast("cpu", dtype=torch.bfloat16):
            assert all(m.cast_input_dtype_enabled != skip for m in model.modules()
                       if hasattr(m, "cast_input_dtype_enabled"))
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    (loss, grads), (skipped_loss, skipped_grads) = loss_and_grads(False), loss_and_grads(True)
    assert torch.equal(loss, skipped_loss)
    assert grads.keys() == skipped_grads.keys() and len(grads) == 4 * 2 * 2  # 2 tiny layers x 4 modules x A, B
    for name in grads:
        torch.testing.assert_close(skipped_grads[name], grads[name], rtol=0, atol=0)


@pytest.mark.slow
def test_gpu_fast_path_trains_and_evaluates_under_autocast(tiny_base, tiny_data, tmp_path):
    """The GPU plan (bf16 autocast, adapter input casts skipped, packed steps), run on the CPU: training and
    evaluation both run every LoRA layer under the Trainer's autocast, and the intervals count examples."""
    import math

    from training.trainer import adapter_input_casts_skipped

    config = short_experiment(tiny_base, tiny_data, tmp_path / "runs", max_steps=3, batch_tokens=1024,
                              padding_free=True, eval_steps=2, save_steps=2, logging_steps=1, precision="bf16")
    tokenizer = load_tokenizer(config)
    data = training_data(config, tokenizer)
    plan = TrainingPlan.resolve(config, Device.detect(), data.lengths)
    model = build_model(config, plan)
    trainer = build_trainer(config, plan, model, tokenizer, data, eval_on_start=False)
    assert trainer.args.bf16 and trainer.args.packing and trainer.args.per_device_train_batch_size == 1024 // 256
    with adapter_input_casts_skipped(model, plan):
        assert not any(getattr(m, "cast_input_dtype_enabled", False) for m in model.modules())
        trainer.train()
        assert math.isfinite(trainer.evaluate()["eval_loss"])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    batching = plan.batching()
    assert batching["mode"] == "packed" and batching["intervals"]["logging_steps"] == 1
