"""`python -m training export` through a real llama.cpp: trained adapters merged, converted, quantized,
loaded back by llama.cpp and checked against the adapter.

The real SmolLM2-135M-Instruct (ChatML, byte-level BPE), and a TinyLlama-shaped tiny model with TinyLlama's
own SentencePiece tokenizer (../shared/data/tokenizer) and Zephyr template; the `tiny_base` tokenizer (merges,
no SentencePiece model) shows what the template check catches.
"""
from __future__ import annotations

import importlib.util
import shutil

import pytest

from export_support import ZEPHYR_QUESTIONS, ZEPHYR_TYPES, export, read, train_run
from reliability_support import digests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed: `make setup` builds it (requirements-llama-cpp.txt)"),
]
REAL_TYPES = ("F16", "Q8_0", "Q4_K_M")
REAL_QUESTIONS = 8  # the bench answers 32 (bench/bench_export.py); here the mechanics, in half the time of 16


# ---------------------------------------------------------------- the real base: SmolLM2, ChatML


@pytest.fixture(scope="module")
def real_export(real_fine_tune, tmp_path_factory):
    """The shared real fine-tune exported with the default types, verified on REAL_QUESTIONS questions."""
    exports = tmp_path_factory.mktemp("real-export") / "exports"
    code, out, err = export(real_fine_tune, exports, f"questions={REAL_QUESTIONS}")
    assert code == 0, err[-3000:]
    return real_fine_tune, exports / "real", out


def test_real_export_meets_every_target(real_export):
    from datasets import load_from_disk

    config, folder, out = real_export
    test_rows = len(load_from_disk(str(config.data_dir))["test"])
    report = read(folder, "verification.json")
    assert report["failures"] == [], report["failures"]
    assert report["merge"]["max_abs_diff"] <= 1e-3
    # every merged answer is the adapter's, or leaves it only where 16-bit rounding swaps two near-equal tokens
    divergences = report["merged"]["divergences"]
    assert report["merged"]["greedy_equal"] + len(divergences) == REAL_QUESTIONS and all(d["tie"] for d in divergences)
    gguf = report["gguf"]
    assert list(gguf) == list(REAL_TYPES)
    assert gguf["F16"]["logits"]["nmse"] <= 1e-4 and gguf["F16"]["greedy"]["runaway"] == 0
    assert gguf["F16"]["logits"]["nmse"] < gguf["Q8_0"]["logits"]["nmse"] < gguf["Q4_K_M"]["logits"]["nmse"]
    q8_missed = any(m.startswith("Q8_0 logit NMSE") for m in report["missed_quantized_targets"])
    assert q8_missed == (gguf["Q8_0"]["logits"]["nmse"] > 1e-3)  # measured against its target, reported either way
    for result in gguf.values():
        template = result["template"]
        # one-turn and two-turn chats from every test row, not only the questions answered
        assert template["equal"] == template["conversations"] == 2 * test_rows - 1
        assert result["greedy"]["stopped_elsewhere"] == 0
    for quant_type in REAL_TYPES:  # ROUGE-L with the paired interval against the adapter, for every type
        paired = report["rougeL"][quant_type]["vs_adapter"]
        assert paired["ci_low"] <= paired["diff"] <= paired["ci_high"]
    assert f"real-Q4_K_M.gguf" in out and "vs adapter" in out


def test_real_export_folder_records_what_made_it(real_export, real_base):
    from training.provenance import sha256_file

    config, folder, _ = real_export
    manifest = read(folder, "export.json")
    assert manifest["adapter"]["sha256"] == sha256_file(config.run_dir / "adapter" / "adapter_model.safetensors")
    assert manifest["base_model"]["weights_sha256"] == {"model.safetensors": sha256_file(real_base / "model.safetensors")}
    assert manifest["base_model"]["check"].startswith("weight files' sha256 equal")
    assert manifest["merge"] == {"computed_in": "float32", "saved_as": "float16", "base_weights": "as trained"}
    assert manifest["runtime"]["llama-cpp-python"] and manifest["runtime"]["converter"]["sha256"]
    assert manifest["provenance"]["versions"]["transformers"] and manifest["adapter"]["data"]["fingerprint"]
    for quant_type, entry in manifest["gguf"].items():
        path = folder / "gguf" / entry["file"]
        assert entry["file"] == f"real-{quant_type}.gguf" and entry["bytes"] == path.stat().st_size > 0
        assert entry["seconds"] > 0
    sizes = [manifest["gguf"][t]["bytes"] for t in REAL_TYPES]
    assert sizes == sorted(sizes, reverse=True)
    assert manifest["gguf"]["Q4_K_M"]["tensor_types"].keys() & {"Q4_K", "Q6_K"}
    assert (folder / ".medqa-tinyllama-output").is_file() and len(
        (folder / "answers.jsonl").read_text().splitlines()) == REAL_QUESTIONS


def test_merged_folder_carries_the_adapters_chat_contract(real_export):
    import torch
    from transformers import AutoModelForCausalLM

    from training.chat import read_contract
    from training.tokenizer import load_tokenizer

    config, folder, _ = real_export
    merged, adapter = folder / "merged", config.run_dir / "adapter"
    assert read(merged, "generation_config.json") | {"transformers_version": None} == \
        read(adapter, "generation_config.json") | {"transformers_version": None}
    assert read_contract(merged) == read_contract(adapter)
    assert load_tokenizer(merged).chat_template == load_tokenizer(adapter).chat_template
    model = AutoModelForCausalLM.from_pretrained(merged)  # plain transformers, no peft
    assert model.dtype == torch.float16 and not any("lora" in name for name, _ in model.named_parameters())


def test_gguf_metadata_carries_the_template_and_stop_tokens(real_export):
    import gguf

    from training.chat import end_of_turn, stop_token_ids
    from training.tokenizer import load_tokenizer

    _, folder, _ = real_export
    tokenizer = load_tokenizer(folder / "merged")
    for path in sorted((folder / "gguf").glob("*.gguf")):
        reader = gguf.GGUFReader(path)
        assert reader.get_field("tokenizer.chat_template").contents() == tokenizer.chat_template
        assert reader.get_field("tokenizer.ggml.eot_token_id").contents() == \
            tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)) == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert reader.get_field("tokenizer.ggml.eos_token_id").contents() in stop_token_ids(tokenizer)


def test_llama_cpp_chat_completion_answers_and_stops(real_export):
    """What a llama-cpp-python user runs: the GGUF's own template, greedy, stopping at <|im_end|>."""
    from llama_cpp import Llama

    from training.chat import build_messages, read_contract

    _, folder, _ = real_export
    contract = read_contract(folder / "merged")
    llm = Llama(model_path=str(next((folder / "gguf").glob("*-Q4_K_M.gguf"))), n_ctx=1024, verbose=False)
    reply = llm.create_chat_completion(build_messages(contract.system_prompt, "What is the first-line treatment "
                                                      "for anaphylaxis?"), temperature=0.0, max_tokens=200)
    llm.close()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop" and len(choice["message"]["content"].split()) >= 3, choice


def test_card_facts_come_from_the_folder_alone(real_export, tmp_path):
    from training.export import card_facts

    _, folder, _ = real_export
    copy = shutil.copytree(folder, tmp_path / "copy", ignore=shutil.ignore_patterns("*.gguf", "*.safetensors"))
    facts = card_facts(copy, "someone/real-medqa-GGUF")
    assert [f["type"] for f in facts["gguf"]] == list(REAL_TYPES)
    q4 = facts["gguf"][-1]
    assert q4["run"] == {"llama.cpp": "llama-cli -hf someone/real-medqa-GGUF:Q4_K_M",
                         "ollama": "ollama run hf.co/someone/real-medqa-GGUF:Q4_K_M"}
    assert q4["bytes"] > 0 and "vs_adapter" in q4["rougeL"] and "nmse" in q4["logits"]


# ---------------------------------------------------------------- TinyLlama-shaped: Zephyr


def test_zephyr_export_tokenizes_every_conversation_as_transformers(tinyllama_export):
    """TinyLlama's tokenizer (legacy=false) puts '▁' at the start of the text only; llama.cpp's SentencePiece
    tokenizer, left as converted, before the text after every special token too (one token more after each
    `</s>`). The GGUF says add_space_prefix=false and its template renders the leading space: the prompt tokens
    from the template stored in the file are transformers' on every conversation, answers read the same
    detokenized by llama.cpp and by transformers, and generation stops at `</s>`."""
    report = read(tinyllama_export, "verification.json")
    assert report["failures"] == [], report["failures"]
    manifest = read(tinyllama_export, "export.json")
    for quant_type in ZEPHYR_TYPES:
        result = report["gguf"][quant_type]
        template, greedy = result["template"], result["greedy"]
        assert template["equal"] == template["conversations"] == report["questions"]["conversations"] > 4
        assert greedy["detokenized_equal"] == ZEPHYR_QUESTIONS and greedy["stopped_elsewhere"] == 0
        assert greedy["runaway"] == 0
        stopped = greedy["greedy_questions"] - greedy["hit_token_limit"]
        assert greedy["stopped_at_end_of_turn"] == stopped, greedy
        assert manifest["gguf"][quant_type]["tokenizer"]["add_space_prefix"] is False
        assert manifest["gguf"][quant_type]["chat_template_sha256"] != manifest["chat"]["chat_template_sha256"]
    assert report["gguf"]["F16"]["greedy"]["greedy_equal"] == ZEPHYR_QUESTIONS


def test_zephyr_gguf_carries_tinyllamas_tokenizer_template_and_stop_token(tinyllama_export):
    import gguf

    folder = tinyllama_export
    assert (folder / "merged" / "tokenizer.model").is_file()
    reader = gguf.GGUFReader(folder / "gguf" / "short-F16.gguf")
    field = lambda key: reader.get_field(key).contents()  # noqa: E731
    assert field("tokenizer.ggml.model") == "llama" and field("tokenizer.ggml.eot_token_id") == 2  # </s>
    # the template renders the one leading space that llama.cpp's tokenizer no longer adds (add_space_prefix)
    assert field("tokenizer.ggml.add_space_prefix") is False
    assert field("tokenizer.chat_template") == "{{ ' ' }}" + (folder / "merged" / "chat_template.jinja").read_text()


def test_a_tokenizer_llama_cpp_splits_differently_is_refused(tiny_base, sample_flashcards, tmp_path):
    """The tiny base's tokenizer has merges but no SentencePiece model: llama.cpp's converter gives its tokens
    placeholder scores, so llama.cpp splits words differently. The template check finds it: exit 6, not kept."""
    config = train_run(tmp_path, tiny_base, sample_flashcards, 32, max_steps=2, eval_steps=2, save_steps=2,
                       generation={"max_new_tokens": 8})
    code, _, err = export(config, tmp_path / "exports", "questions=2", "formats=F16")
    assert code == 6 and "F16 chat template tokens equal on 0/" in err and "'llama_cpp': [" in err, err[-2000:]
    assert not (tmp_path / "exports" / "short").exists()


# ---------------------------------------------------------------- an earlier export is kept


def test_ctrl_c_mid_export_keeps_the_earlier_one_whole(tinyllama_run, tmp_path):
    """Ctrl-C while the new export is being written (its F16 file there, Q8_0 under way): exit 130, one line,
    the earlier export byte-identical, no staging folder left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from reliability_support import REPO_ROOT, check_one_line_error, interactive_signals

    config, folder = tinyllama_run, tmp_path / "exports" / "short"
    code, _, err = export(config, folder.parent, "formats=F16", "verify=false")
    assert code == 0, err[-2000:]
    before = digests(folder.parent)
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:  # a file, not a pipe: progress bars must never block the export
        process = subprocess.Popen(
            [sys.executable, "-m", "training", "export", "--set", f"runs_dir={config.runs_dir}",
             "--set", f"output_dir={folder.parent}", "--set", "formats=F16,Q8_0", "--set", "verify=false"],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=interactive_signals)
        deadline = time.monotonic() + 600
        while not list(folder.parent.glob(".short.tmp-*/gguf/*.gguf")) and process.poll() is None:
            assert time.monotonic() < deadline, "the export never reached its GGUF step"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=300)
    check_one_line_error(process.returncode, log.read_text(), 130, "interrupted")
    assert digests(folder.parent) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["short"]
