"""training/compiled.py: compiled decoder layers train exactly as the eager ones, compile once for every layer
and step length, leave validation eager; and the rule that decides when a run compiles."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from training.compiled import COMPILE_MIN_STEPS, compile_decoder_layers, decoder_layers, settle_compilation
from training.config import ExperimentConfig
from training.hardware import Hardware
from training.train import planned_steps


def lora_model(tiny_base):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.packing import enable_padding_free

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero, so the adapters' gradients and outputs count
            torch.nn.init.normal_(param, std=0.02)
    enable_padding_free(model)
    return model.train()


def packed_batch(lengths: list[int], seed: int) -> dict:
    """One padding-free row, as trl's collator lays out a packed step."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 200, (1, sum(lengths)), generator=generator)
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    labels = ids.clone()
    labels[0, bounds[:-1].long()] = -100
    return {"input_ids": ids, "labels": labels, "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
            "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": max(lengths),
            "max_length_k": max(lengths)}


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_compiled_layers_train_as_the_eager_ones_and_compile_once(tiny_base):
    eager, compiled = lora_model(tiny_base), lora_model(tiny_base)
    assert compile_decoder_layers(compiled) == len(decoder_layers(eager)) == 2
    torch._dynamo.reset()
    stats = torch._dynamo.utils.counters["stats"]
    graphs = []
    for step, lengths in enumerate([[30, 50, 20], [40, 41], [9] * 7]):  # packed steps differ in length
        eager_loss, eager_grads = loss_and_grads(eager, packed_batch(lengths, step))
        compiled_loss, compiled_grads = loss_and_grads(compiled, packed_batch(lengths, step))
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled_grads, eager_grads, rtol=1e-4, atol=1e-6)
        graphs.append(stats["unique_graphs"])
    assert graphs[0] >= 1 and graphs[0] == graphs[1] == graphs[2], "a new length or layer recompiled"

    compiled.eval()
    with torch.no_grad():  # validation runs the eager layers: no graph of its own is compiled
        torch.testing.assert_close(compiled(**packed_batch([5, 6], 9)).loss, eager.eval()(**packed_batch([5, 6], 9)).loss)
    assert stats["unique_graphs"] == graphs[-1]


def planned(rows: int, epochs: float = 3, max_steps: int = -1):
    """A trainer's view of a packed run: `rows` packed rows, 16 a step, one process."""
    args = SimpleNamespace(max_steps=max_steps, per_device_train_batch_size=16, world_size=1,
                           gradient_accumulation_steps=1, num_train_epochs=epochs, use_liger_kernel=True)
    return SimpleNamespace(args=args, train_dataset=range(rows))


def test_planned_steps_count_the_runs_optimizer_steps():
    assert planned_steps(planned(16 * 54 + 3)) == 3 * 55  # a short last step counts
    assert planned_steps(planned(16 * 54, max_steps=40)) == 40
    assert planned_steps(planned(16 * 10, epochs=0.5)) == 5


GPU_PLAN = Hardware("cuda", quantize=False, precision="bf16", world_size=1, padding_free=True, batch_tokens=8192,
                    liger=True, compile_layers=True)


@pytest.mark.parametrize("setting, steps, compiles", [
    ("auto", COMPILE_MIN_STEPS - 1, False),  # too short to earn back the compilation
    ("auto", COMPILE_MIN_STEPS, True),
    (True, 10, True),  # asked for: any length
])
def test_a_run_compiles_when_asked_or_long_enough(tiny_base, setting, steps, compiles):
    trainer = planned(16)
    trainer.model = lora_model(tiny_base)
    used = settle_compilation(ExperimentConfig(name="c", compile_layers=setting), GPU_PLAN, trainer, steps)
    assert used.compile_layers is compiles
    # Liger's kernels fail under torch.compile: a compiled run goes without them, an eager one keeps them
    assert used.liger is trainer.args.use_liger_kernel is (not compiles)
    layer = decoder_layers(trainer.model)[0]
    assert ("forward" in vars(layer)) is compiles


def test_a_plan_without_compilation_stays_eager(tiny_base):
    trainer = planned(16)
    trainer.model = lora_model(tiny_base)
    plan = Hardware("cpu", quantize=False, precision="fp32", world_size=1)
    assert settle_compilation(ExperimentConfig(name="c"), plan, trainer, 10**6) == plan
    assert "forward" not in vars(decoder_layers(trainer.model)[0])
