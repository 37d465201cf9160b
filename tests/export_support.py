"""Shared by the export tests: a short trained run, `python -m training export` in the test process, and the
session fixtures of the TinyLlama-shaped tiny model with TinyLlama's real tokenizer (Zephyr), trained and
exported once for tests/test_export.py and tests/test_export_publish.py (conftest.py registers them)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reliability_support import run_in_process

ZEPHYR_TYPES = ("F16", "Q8_0")
ZEPHYR_QUESTIONS = 4


def train_run(work: Path, base: Path, source: Path, examples: int, **changes):
    """prepare + a short train of `base` into work/runs (with runs/best.json), as `make train` leaves them."""
    from test_train import prepare_data, short_experiment
    from training.run_outputs import update_best
    from training.train import train_experiment

    data = prepare_data(work / "data", source, base, examples)
    config = short_experiment(base, data, work / "runs", **changes)
    train_experiment(config)
    update_best(config.runs_dir)
    return config


def export(config, out: Path, *settings: str) -> tuple[int, str, str]:
    return run_in_process("training", "export", "--set", f"runs_dir={config.runs_dir}", "--set", f"output_dir={out}",
                          *[arg for setting in settings for arg in ("--set", setting)])


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="session")
def tinyllama_tokenizer_base(shared_data, tmp_path_factory) -> Path:
    """The tiny TinyLlama-shaped model with TinyLlama's own tokenizer (SentencePiece, 32,000 pieces)."""
    from training.tokenizer import load_tokenizer
    from training.tiny_base import build_model

    folder = tmp_path_factory.mktemp("tinyllama-tokenizer-base")
    tokenizer = load_tokenizer(shared_data / "tokenizer")
    tokenizer.save_pretrained(folder)
    shutil.copy(shared_data / "tokenizer" / "tokenizer.model", folder)
    build_model(len(tokenizer)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tinyllama_run(tinyllama_tokenizer_base, sample_flashcards, tmp_path_factory):
    work = tmp_path_factory.mktemp("zephyr-run")
    return train_run(work, tinyllama_tokenizer_base, sample_flashcards, 64, generation={"max_new_tokens": 24})


@pytest.fixture(scope="session")
def tinyllama_export(tinyllama_run, tmp_path_factory) -> Path:
    """exports/short/ of the Zephyr run: F16 and Q8_0, verified on 4 questions."""
    out = tmp_path_factory.mktemp("zephyr-exports")
    code, _, err = export(tinyllama_run, out, f"questions={ZEPHYR_QUESTIONS}", f"formats={','.join(ZEPHYR_TYPES)}")
    assert code == 0, err[-2000:]
    return out / "short"
