"""The tiny TinyLlama-shaped base: loads with Auto classes, Llama-like tokenizer, deterministic build."""
from __future__ import annotations

import hashlib

from training.chat import TINYLLAMA_CHAT_TEMPLATE
from training.cli import main
from training.tiny_base import build_tiny_base
from training.tokenizer import load_tokenizer


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_base_is_tinyllama_shaped(tiny_base):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_base)
    assert config.model_type == "llama"
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 2)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model.dtype == torch.float32
    assert model.generation_config.eos_token_id == 2
    assert (tiny_base / "model.safetensors").stat().st_size < 5_000_000
    tokenizer = load_tokenizer(tiny_base)
    assert model.config.vocab_size == len(tokenizer)
    ids = tokenizer("What is the mechanism of action of aspirin?", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_tokenizer_is_llama_like(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.chat_template == TINYLLAMA_CHAT_TEMPLATE
    text = "Dose: 5 µg/kg — Ω unseen\nnext line"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids  # byte fallback, no <unk>
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.convert_ids_to_tokens(tokenizer("a b").input_ids)[1:] == ["▁a", "▁b"]


def test_build_is_byte_identical_and_replaces_output(tiny_base, tmp_path):
    out = build_tiny_base(tmp_path / "base")  # an earlier build: the folder carries the ownership marker
    (out / "stale.txt").write_text("old")
    assert main(["build-tiny-base", "--output", str(out)],
                commands={"build-tiny-base": ("training.tiny_base", "")}) == 0
    assert digests(out) == digests(tiny_base)
    assert [p.name for p in tmp_path.iterdir()] == ["base"]  # no temp folder left behind
    assert build_tiny_base(out) == out and digests(out) == digests(tiny_base)
