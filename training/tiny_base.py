"""`python -m training build-tiny-base`: a tiny, offline, TinyLlama-shaped base model.

Same architecture family (LlamaForCausalLM with grouped-query attention), same special tokens
(<unk>=0, <s>=1, </s>=2, pad = eos), same Llama-style tokenizer (SentencePiece-like BPE with
byte fallback) and the same chat template as TinyLlama-1.1B-Chat, but a few MB with random
weights, so tests and the demo exercise the real code paths in seconds without the Hub.
Built deterministically: the same code and library versions give the same files.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.atomic import replace_dir
from training.chat import TINYLLAMA_CHAT_TEMPLATE
from training.config import DEFAULT_SYSTEM_PROMPT

DEFAULT_OUTPUT = Path("artifacts/tiny-base")
SEED = 1234
LM_HEAD_STD = 0.2
VOCAB_SIZE = 1024  # upper bound; BPE training stops earlier if the corpus runs out of merges
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in Llama
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))  # Llama's byte-fallback pieces, ids 3..258
ROLE_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>")
ARCHITECTURE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, as TinyLlama (32 heads, 4 KV heads)
    intermediate_size=176,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    initializer_range=0.02,
    tie_word_embeddings=False,
    hidden_act="silu",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"model folder (default {DEFAULT_OUTPUT})")


def run(args: argparse.Namespace) -> int:
    path = build_tiny_base(args.output)
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"tiny base written to {path} ({size / 1e6:.1f} MB)")
    return 0


def build_tiny_base(out_dir: str | Path) -> Path:
    """Build the tokenizer and model into a temp folder beside `out_dir`, then swap it in."""
    def fill(tmp: Path) -> None:
        tokenizer = build_tokenizer()
        tokenizer.save_pretrained(tmp)
        build_model(len(tokenizer)).save_pretrained(tmp)

    return replace_dir(out_dir, fill)


def training_corpus() -> list[str]:
    from training.sample import SAMPLE_PATH

    texts = [DEFAULT_SYSTEM_PROMPT, *ROLE_MARKERS]
    with open(SAMPLE_PATH, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts += [row["input"], row["output"]]
    return texts


def build_tokenizer():
    """A Llama-style fast tokenizer whose BPE merges are learned from the bundled flashcards."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    # Learn merges within words (like SentencePiece's split_by_whitespace), on ▁-prefixed words.
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS) - len(BYTE_TOKENS), show_progress=False, min_frequency=2
    )
    learner.train_from_iterator(training_corpus(), trainer=trainer)
    learned = json.loads(learner.to_str())["model"]

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + BYTE_TOKENS)}
    for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(merge) for merge in learned["merges"]]
    # LlamaTokenizer builds Llama's pipeline: Metaspace, byte-fallback BPE, <s> prepended by the
    # post-processor saved in tokenizer.json (transformers 5 keeps add_bos_token there, not in the config).
    return LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        add_bos_token=True,
        add_eos_token=False,
        legacy=False,
        padding_side="right",
        model_max_length=ARCHITECTURE["max_position_embeddings"],
        chat_template=TINYLLAMA_CHAT_TEMPLATE,
    )


def build_model(vocab_size: int):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=2, **ARCHITECTURE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config).to(torch.float32)
        # At hidden size 64 the default init (std 0.02) keeps every logit within about +-1.3, so
        # the model is stuck near uniform and LoRA adapters (which cannot target lm_head) barely
        # move the loss. A wider lm_head gives the adapters logits they can actually shape.
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, LM_HEAD_STD)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2, max_length=2048)
    return model
