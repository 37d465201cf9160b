"""Padding-free batches compute exactly what padded batches compute, example by example."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from training.packing import (
    enable_padding_free,
    padded_sdpa_attention,
    padding_free_collator,
    real_tokens,
    token_budget_batches,
)
from training.plan import SDPA_PADDED

LENGTHS = (7, 19, 3, 12, 26, 9)


@pytest.fixture()
def tiny_model(tiny_base):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32)


@pytest.fixture()
def examples(tiny_model):
    generator = torch.Generator().manual_seed(7)
    vocab = tiny_model.config.vocab_size
    rows = []
    for n in LENGTHS:
        ids = torch.randint(3, vocab, (n,), generator=generator).tolist()
        prompt = n // 3  # completion-only labels, as trl builds them
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def per_example_losses(logits_rows, examples) -> torch.Tensor:
    """Summed next-token loss of each example; logits_rows[i] holds example i's logits from its first token."""
    losses = []
    for logits, row in zip(logits_rows, examples):
        n = len(row["input_ids"])
        losses.append(F.cross_entropy(logits[: n - 1], torch.tensor(row["labels"][1:]), ignore_index=-100,
                                      reduction="sum"))
    return torch.stack(losses)


def padded_losses(model, examples) -> torch.Tensor:
    width = max(len(r["input_ids"]) for r in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(examples):
        ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, : len(r["input_ids"])] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    return per_example_losses(list(logits), examples)


def packed_losses(model, batch, examples, starts=None) -> torch.Tensor:
    """Per-example losses read off the packed row at each example's start (default: the collator's boundaries)."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
    starts = starts or batch["cu_seq_lens_q"].tolist()
    return per_example_losses([logits[s:] for s in starts[:-1]], examples)


@pytest.mark.slow
def test_padding_free_losses_and_gradients_equal_padded(tiny_model, examples):
    """The fallback kernel (each example padded within its length bucket, SDPA) gives every example the loss and
    gradients it has in an unpacked batch: the path of GPUs without flash attention, run here on the CPU."""
    model = tiny_model.eval()
    with torch.no_grad():
        reference = padded_losses(model, examples)
    batch = padding_free_collator()(examples)
    enable_padding_free(model, SDPA_PADDED)

    packed = packed_losses(model, batch, examples)
    torch.testing.assert_close(packed.detach(), reference, rtol=1e-5, atol=1e-5)

    # The model's own loss over the packed row equals the token-mean over the padded batch...
    loss = model(**batch).loss
    n_labels = sum(sum(label != -100 for label in r["labels"][1:]) for r in examples)
    torch.testing.assert_close(loss.detach(), reference.sum() / n_labels, rtol=1e-5, atol=1e-5)
    # ...and so do its gradients.
    loss.backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (padded_losses(model, examples).sum() / n_labels).backward()
    for packed_grad, p in zip(packed_grads, model.parameters()):
        torch.testing.assert_close(packed_grad, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_example_boundaries_are_honoured(tiny_model, examples):
    """Told the row is one sequence, the attention lets examples see each other: the boundaries matter."""
    model = tiny_model.eval()
    batch = padding_free_collator()(examples)
    enable_padding_free(model, SDPA_PADDED)
    with torch.no_grad():
        right = packed_losses(model, batch, examples)
        total = batch["input_ids"].shape[1]
        merged = {**batch, "cu_seq_lens_q": torch.tensor([0, total], dtype=torch.int32), "max_length_q": total}
        wrong = packed_losses(model, merged, examples, starts=batch["cu_seq_lens_q"].tolist())
    assert torch.allclose(right[0], wrong[0])  # the first example sees nothing before it either way
    assert (right[1:] - wrong[1:]).abs().min() > 1e-4


@pytest.mark.slow
def test_plain_sdpa_with_a_cache_mixes_examples(tiny_model, examples):
    """Why enable_padding_free turns the cache off: transformers skips its packed-row mask when a cache exists."""
    model = tiny_model.eval()
    batch = padding_free_collator()(examples)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    with torch.no_grad():
        reference = padded_losses(model, examples)
        mixed = packed_losses(model, {**inputs, "use_cache": True, "cu_seq_lens_q": batch["cu_seq_lens_q"]}, examples)
    assert (mixed[1:] - reference[1:]).abs().max() > 1e-3


def one_row(lengths, heads: int, kv_heads: int, head_dim: int = 16, seed: int = 0, **to):
    """query/key/value of one padding-free row, laid out as a model projects them (batch 1, tokens, heads,
    head_dim: attention functions get them transposed, `as_given`), and the row's boundaries."""
    import itertools

    generator = torch.Generator().manual_seed(seed)
    tokens = sum(lengths)
    q, k, v = (torch.randn(1, tokens, n, head_dim, generator=generator).to(**to).requires_grad_()
               for n in (heads, kv_heads, kv_heads))
    return q, k, v, torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)


def as_given(*tensors):
    """(batch, heads, tokens, head_dim) views, as transformers hands them to an attention function."""
    return [t.transpose(1, 2) for t in tensors]


def per_example_attention(q, k, v, cu_seq_lens):
    """Each example attended alone (causal SDPA, key/value heads repeated for grouped queries): the reference."""
    groups = q.shape[1] // k.shape[1]
    bounds = cu_seq_lens.tolist()
    outs = [F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e].repeat_interleave(groups, 1),
                                           v[:, :, s:e].repeat_interleave(groups, 1), is_causal=True)
            for s, e in zip(bounds, bounds[1:])]
    return torch.cat(outs, dim=2).transpose(1, 2)


# Lengths across the length buckets (up to 64, 128, 256), with a one-token example.
BUCKETED = (7, 19, 1, 70, 130, 12, 64, 65, 200)


@pytest.mark.parametrize("kv_heads", [8, 2], ids=["multi-head", "grouped-query"])
def test_padded_attention_equals_each_example_attended_alone(kv_heads):
    from types import SimpleNamespace

    q, k, v, cu_seq_lens = one_row(BUCKETED, heads=8, kv_heads=kv_heads)
    module = SimpleNamespace(num_key_value_groups=8 // kv_heads, is_causal=True, training=True)
    out, _ = padded_sdpa_attention(module, *as_given(q, k, v), None, cu_seq_lens_q=cu_seq_lens)
    expected = per_example_attention(*as_given(q, k, v), cu_seq_lens)
    assert out.shape == expected.shape == (1, sum(BUCKETED), 8, 16)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(out)
    got = torch.autograd.grad((out * upstream).sum(), (q, k, v))
    want = torch.autograd.grad((expected * upstream).sum(), (q, k, v))
    for name, a, b in zip("qkv", got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"d{name}")


def test_collator_restarts_positions_and_masks_first_labels(examples):
    batch = padding_free_collator()(examples)
    starts = batch["cu_seq_lens_q"].tolist()
    assert starts == [0, *torch.tensor(LENGTHS).cumsum(0).tolist()]
    assert batch["input_ids"].shape == (1, sum(LENGTHS))
    for start, n in zip(starts, LENGTHS):
        assert batch["position_ids"][0, start:start + n].tolist() == list(range(n))
        assert batch["labels"][0, start].item() == -100
    assert batch["max_length_q"] == max(LENGTHS)
    assert real_tokens(batch) == sum(LENGTHS)
    assert "attention_mask" not in batch


def test_token_budget_batches_cover_every_example_once_within_budget():
    lengths = [5, 40, 12, 33, 7, 21, 60, 2, 18, 9] * 3
    batches = token_budget_batches(lengths, max_tokens=64, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert sum(lengths[i] for i in batch) <= 64 or len(batch) == 1
    assert batches == token_budget_batches(lengths, max_tokens=64, seed=3)
    assert batches != token_budget_batches(lengths, max_tokens=64, seed=4)
    assert token_budget_batches([100, 3], max_tokens=50, seed=0) in ([[0], [1]], [[1], [0]])


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches([1, 2], max_tokens=0, seed=0)


def trainer_for(config, tokenizer):
    """training/trainer.py's path on this machine: tokenized examples -> plan -> model -> SFTTrainer."""
    from training.device import Device
    from training.plan import TrainingPlan
    from training.trainer import build_model, build_trainer, training_data

    data = training_data(config, tokenizer)
    plan = TrainingPlan.resolve(config, Device.detect(), data.lengths)
    model = build_model(config, plan).eval()
    return plan, build_trainer(config, plan, model, tokenizer, data, eval_on_start=False)


@pytest.mark.slow
def test_trainer_padding_free_batches_give_the_padded_loss(tiny_base, tmp_path):
    """The trainer's path: SFTTrainer(padding_free) + the fallback kernel reproduces the padded batch's loss."""
    from training.tokenizer import load_tokenizer
    from common.yaml_config import validate
    from training.config import DataConfig, ExperimentConfig
    from training.prepare import prepare
    from training.sample import SAMPLE_PATH

    data_dir = tmp_path / "processed"
    prepare(DataConfig(source=str(SAMPLE_PATH), revision=None, tokenizer=str(tiny_base), tokenizer_revision=None,
                       max_examples=24, output_dir=data_dir))
    losses, batches = {}, {}
    for padding_free in (False, True):
        config = validate(ExperimentConfig, dict(
            name="pf", base_model=str(tiny_base), base_revision=None, data_dir=str(data_dir),
            runs_dir=str(tmp_path / "runs"), per_device_batch_size=8, effective_batch_size=8,
            quantization="none", padding_free=padding_free), "test")
        plan, trainer = trainer_for(config, load_tokenizer(str(tiny_base)))
        assert plan.padding_free is padding_free and plan.attention == ("sdpa_padded" if padding_free else "sdpa")
        batch = next(iter(trainer.get_eval_dataloader()))  # evaluation order: no shuffling
        batches[padding_free] = batch
        with torch.no_grad():
            losses[padding_free] = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    assert "attention_mask" not in batches[True] and batches[True]["input_ids"].shape[0] == 1
    assert real_tokens(batches[True]) == real_tokens(batches[False])
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_trainer_packed_rows_hold_whole_examples_and_give_their_losses(tiny_base, tmp_path):
    """batch_tokens: trl packs whole examples into rows, and a step's loss is theirs, computed one by one."""
    from training.tokenizer import load_tokenizer
    from common.yaml_config import validate
    from training.config import DataConfig, ExperimentConfig
    from training.prepare import prepare
    from training.sample import SAMPLE_PATH

    data_dir = tmp_path / "processed"
    prepare(DataConfig(source=str(SAMPLE_PATH), revision=None, tokenizer=str(tiny_base), tokenizer_revision=None,
                       max_examples=40, output_dir=data_dir))
    tokenizer = load_tokenizer(str(tiny_base))
    trainers = {}
    for batch_tokens in (None, 1024):
        config = validate(ExperimentConfig, dict(
            name="packed", base_model=str(tiny_base), base_revision=None, data_dir=str(data_dir),
            runs_dir=str(tmp_path / "runs"), quantization="none", padding_free=True, batch_tokens=batch_tokens,
            max_seq_length=128), "test")
        plan, trainers[batch_tokens] = trainer_for(config, tokenizer)
        assert plan.packed is bool(batch_tokens)
    summary = plan.batching()
    examples_per_step = summary.pop("mean_examples_per_step")
    assert summary.pop("intervals") == {  # counted in examples: 50 and 10 steps of 8 sequences
        "eval_steps": round(50 * 8 / examples_per_step), "save_steps": round(50 * 8 / examples_per_step),
        "logging_steps": max(1, round(10 * 8 / examples_per_step))}
    # The rate is tuned for 8 examples a step; a packed step of k times that trains at k times the rate.
    assert summary.pop("learning_rate") == pytest.approx(config.learning_rate * examples_per_step / 8)
    assert trainers[1024].args.learning_rate == pytest.approx(config.learning_rate * examples_per_step / 8)
    assert summary == {"mode": "packed", "tokens_per_step": 1024, "rows_per_device": 8, "row_tokens": 128,
                       "processes": 1, "lr_scaling": "linear"}
    assert examples_per_step == pytest.approx(len(trainers[None].train_dataset) / len(trainers[1024].train_dataset) * 8)
    assert plan.packed_rows == len(trainers[1024].train_dataset)  # the plan counted the rows trl packed

    def as_tuple(ids, labels):
        return tuple(ids), tuple(labels)

    # The examples, truncated to max_seq_length as trl truncates unpacked ones, each exactly once in the rows.
    unpacked = sorted(as_tuple(r["input_ids"], r["labels"]) for r in trainers[None].train_dataset)
    segments, batches = [], list(trainers[1024].get_train_dataloader())
    for batch in batches:
        assert batch["input_ids"].shape[0] == 1 and batch["input_ids"].shape[1] <= 1024
        bounds = batch["cu_seq_lens_q"].tolist()
        for start, end in zip(bounds, bounds[1:]):
            ids = batch["input_ids"][0, start:end].tolist()
            labels = batch["labels"][0, start:end].tolist()
            assert labels[0] == -100  # no example learns to follow the one before it
            segments.append((ids, labels))
    assert any(len(ids) == 128 for ids, _ in segments), "the data should include an example cut at max_seq_length"
    # trl's unpacked labels keep the first token's label; the collator masks it in both paths
    assert sorted(as_tuple(ids, [-100] + labels[1:]) for ids, labels in segments) == \
        sorted(as_tuple(ids, [-100] + list(labels[1:])) for ids, labels in unpacked)

    # One packed micro-batch's loss is the token-weighted loss of its examples computed separately.
    trainer, batch = trainers[1024], batches[0]
    model = trainer.model
    bounds = batch["cu_seq_lens_q"].tolist()
    rows = [{"input_ids": batch["input_ids"][0, s:e].tolist(), "labels": batch["labels"][0, s:e].tolist()}
            for s, e in zip(bounds, bounds[1:])]
    with torch.no_grad():
        packed = trainer.compute_loss(model, trainer._prepare_inputs(batch))
        one_by_one = padded_losses(model, rows).sum() / sum(sum(x != -100 for x in r["labels"][1:]) for r in rows)
    torch.testing.assert_close(packed, one_by_one, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the varlen flash kernel runs only there")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("kv_heads", [8, 2], ids=["multi-head", "grouped-query"])
def test_fallback_equals_the_flash_path_on_the_same_rows(kv_heads, dtype):
    """The fallback (each example padded within its bucket, SDPA's memory-efficient kernel: a T4's path) against
    torch's varlen flash kernel, on the same half-precision rows: outputs and gradients, example by example, both
    within half-precision rounding of each example attended alone in fp32."""
    from types import SimpleNamespace

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from training.device import Software
    from training.packing import flash_varlen_attention

    if not Software.detect().flash_varlen:
        pytest.skip(f"torch {torch.__version__} has no varlen flash attention (the plan falls back there)")
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("flash attention needs compute capability 8.0 (this GPU trains through the fallback alone)")
    module = SimpleNamespace(num_key_value_groups=8 // kv_heads, is_causal=True, training=True)
    q, k, v, cu_seq_lens = one_row(BUCKETED, heads=8, kv_heads=kv_heads, head_dim=64, seed=3, device="cuda",
                                   dtype=dtype)
    upstream = torch.randn(1, sum(BUCKETED), 8, 64, device="cuda", dtype=dtype)
    results = {}
    for name in ("fallback", "flash"):
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        if name == "flash":
            out, _ = flash_varlen_attention(module, *as_given(*inputs), None, cu_seq_lens_q=cu_seq_lens.cuda(),
                                            max_length_q=max(BUCKETED))
        else:
            with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):  # what a T4 runs: no flash SDPA there
                out, _ = padded_sdpa_attention(module, *as_given(*inputs), None, cu_seq_lens_q=cu_seq_lens.cuda())
        out.backward(upstream)
        results[name] = (out.float(), *(t.grad.float() for t in inputs))
    exact = [t.detach().float().cpu().requires_grad_() for t in (q, k, v)]
    reference = per_example_attention(*as_given(*exact), cu_seq_lens)
    reference.backward(upstream.float().cpu())
    expected = (reference.detach(), *(t.grad for t in exact))
    bf16 = dtype == torch.bfloat16
    for index, what in enumerate(("output", "dq", "dk", "dv")):
        bound = (2e-2 if bf16 else 5e-3) if index == 0 else (5e-2 if bf16 else 1e-2)  # gradients sum more roundings
        torch.testing.assert_close(results["fallback"][index], results["flash"][index], atol=bound, rtol=bound, msg=what)
        torch.testing.assert_close(results["fallback"][index].cpu(), expected[index], atol=bound, rtol=bound, msg=what)
