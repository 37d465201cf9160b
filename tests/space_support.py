"""Serving the Space in tests: a LoRA adapter on the tiny base pushed to the local Hub server,
the Space imported from space/ exactly as `python app.py` would (Space variables in the
environment), launched on a free loopback port.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SPACE_DIR = Path(__file__).resolve().parent.parent / "space"
SPACE_MODULES = tuple(path.stem for path in SPACE_DIR.glob("*.py"))  # imported by these top-level names
CHROMIUM = Path("/usr/bin/chromium")
# A closed network: no update checks, no background fetches.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason=f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
SHORT_ANSWER_TOKENS = 12
LONG_ANSWER_TOKENS = 512


@dataclass
class ServedSpace:
    url: str
    module: object  # the imported app.py
    repo: str
    revision: str
    sha: str
    adapter_dir: Path
    token: str

    @property
    def assistant(self):
        return self.module.assistant


def make_adapter(tiny_base: Path, folder: Path, max_new_tokens: int) -> Path:
    """A random (non-zero) LoRA adapter on the tiny base, saved as `train` saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.chat import write_contract
    from training.config import DEFAULT_SYSTEM_PROMPT, GenerationConfig

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base), config).save_pretrained(folder)
    # peft's generated card names the local base folder as base_model, which the Hub rejects on upload
    (folder / "README.md").unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.save_pretrained(folder)
    # A repetition penalty keeps the random model from repeating one space-free piece, which the
    # word-level streamer would hold back until the end (the streaming test needs several chunks).
    generation = GenerationConfig(max_new_tokens=max_new_tokens, max_input_tokens=256, repetition_penalty=1.3)
    write_contract(folder, tokenizer, DEFAULT_SYSTEM_PROMPT, generation)
    return folder


def push_adapter(hub_server, repo: str, branch: str, folder: Path) -> str:
    """Upload the adapter to a branch of a private repo; the branch's commit sha."""
    from huggingface_hub import HfApi

    api = HfApi(token=hub_server.write_token)
    api.create_repo(repo, private=True, exist_ok=True)
    api.create_branch(repo, branch=branch, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=folder, revision=branch, commit_message=f"adapter for {branch}")
    return api.model_info(repo, revision=branch).sha


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def chromium_page(url: str, **page_options):
    """A headless Chromium page (Debian's package, driven by Playwright) opened at `url`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**page_options)
            page.goto(url)
            yield page
        finally:
            browser.close()


def _forget_space_modules() -> None:
    for name in SPACE_MODULES:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def space_importable():
    """space/'s modules importable by their top-level names, as in the Space repo; each import is
    fresh, as a new Space process would do, and forgotten afterwards."""
    sys.path.insert(0, str(SPACE_DIR))
    _forget_space_modules()
    try:
        yield
    finally:
        sys.path.remove(str(SPACE_DIR))
        _forget_space_modules()


@contextlib.contextmanager
def environment(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def serve_space(tiny_base: Path, hub_server, work_dir: Path, branch: str, max_new_tokens: int):
    """Push an adapter to `branch`, import space/app.py with the Space variables set, launch it."""
    adapter_dir = make_adapter(tiny_base, work_dir / "adapter", max_new_tokens)
    repo = hub_server.repo_id("space-adapter")
    sha = push_adapter(hub_server, repo, branch, adapter_dir)
    variables = {
        "BASE_MODEL": str(tiny_base),
        "ADAPTER_REPO": repo,
        "ADAPTER_REVISION": branch,
        "HF_TOKEN": hub_server.read_token,  # the repo is private: a Space reads it with a secret
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    with space_importable():
        with environment(variables):
            app = importlib.import_module("app")
            port = free_port()
            app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield ServedSpace(f"http://127.0.0.1:{port}/", app, repo, branch, sha, adapter_dir, hub_server.read_token)
        finally:
            app.demo.close()


def greedy_reference(tiny_base: Path, adapter_dir: Path, conversation: list[dict], max_new_tokens: int) -> str:
    """The answer plain transformers + peft give: merged adapter, greedy, the contract's settings."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.chat import read_contract

    contract = read_contract(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), adapter_dir).merge_and_unload()
    model.generation_config.max_length = None  # max_new_tokens governs, as in the Space
    messages = [{"role": "system", "content": contract.system_prompt}, *conversation]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, generation_config=contract.generation, max_new_tokens=max_new_tokens)
    return tokenizer.decode(output[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
