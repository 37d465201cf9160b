"""`python -m training <command>`: prepare, train, evaluate, build a base model."""
from __future__ import annotations

from common import cli

COMMANDS = {
    "prepare": ("training.prepare", "clean, split and chat-format the flashcards"),
    "train": ("training.train", "fine-tune LoRA adapters, one experiment or all"),
    "search": ("training.search", "hyperparameter search (Optuna): trials of an experiment, the best one as a new experiment"),
    "evaluate": ("training.evaluate", "BLEU / ROUGE / perplexity / MedQA for base and adapters"),
    "export": ("training.export", "the best (or named) adapter as a merged model and GGUF files, checked against it"),
    "build-tiny-base": ("training.tiny_base", "build the tiny offline TinyLlama-shaped base model"),
    "build-real-base": ("training.real_base", "build the real pretrained base (SmolLM2-135M-Instruct) from its package"),
}


def main(argv: list[str] | None = None, commands: dict[str, tuple[str, str]] = COMMANDS) -> int:
    """`commands`: a subset of COMMANDS, for a test that needs only one (and its imports)."""
    return cli.main(argv, prog="python -m training", description=__doc__.splitlines()[0], commands=commands)
