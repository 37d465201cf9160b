"""training/compiled.py: compiled decoder layers train exactly as the eager ones, compile once for every layer
and step length, and leave validation eager (when a run compiles is the plan's rule: tests/test_plan.py)."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from training.compiled import compile_decoder_layers, decoder_layers

BLOCK_DIAGONAL = "test_block_diagonal"


def block_diagonal_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                             cu_seq_lens_q=None, **kwargs):
    """Padding-free rows attended through one dense block-diagonal causal mask: a stand-in, on the CPU, for the flash
    kernel the plan compiles with on a GPU (it traces with a symbolic length as flash does; the CPU's own fallback
    kernel reads the boundaries on the host, and the plan never compiles it)."""
    tokens = query.shape[2]
    example = torch.repeat_interleave(torch.arange(cu_seq_lens_q.numel() - 1), cu_seq_lens_q.diff().long(),
                                      output_size=tokens)
    position = torch.arange(tokens)
    mask = (example[:, None] == example[None, :]) & (position[:, None] >= position[None, :])
    groups = query.shape[1] // key.shape[1]
    key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2), None


def lora_model(tiny_base):
    from peft import LoraConfig, get_peft_model
    from transformers import AttentionInterface, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero, so the adapters' gradients and outputs count
            torch.nn.init.normal_(param, std=0.02)
    AttentionInterface.register(BLOCK_DIAGONAL, block_diagonal_attention)
    model.get_base_model().set_attn_implementation(BLOCK_DIAGONAL)
    model.get_base_model().config.use_cache = False
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
