"""`python -m hub push` with an export: the best experiment's merged weights and GGUF files on their own repos,
`main` of each moved only once the pushed commits passed the export's checks again, read back with the real
clients (huggingface_hub, transformers, llama-cpp-python's `Llama.from_pretrained`) from the local Hub server.

The Zephyr tiny model (TinyLlama's real tokenizer) trained and exported once for the session (export_support).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from export_support import ZEPHYR_TYPES
from reliability_support import check_one_line_error, run_hub

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed: `make setup` builds it (requirements-llama-cpp.txt)"),
]


def hub_config(folder: Path, run, exports: Path, hub_server, **settings) -> tuple[Path, dict]:
    """hub.yaml for the run, with fresh repo names; the repo ids by kind."""
    name = lambda prefix: hub_server.repo_id(prefix).split("/", 1)[1]  # noqa: E731
    repos = {"dataset_repo": name("data"), "adapter_repo": name("adapter"), "merged_repo": name("merged"),
             "gguf_repo": name("gguf") + "-GGUF", **settings.pop("repos", {})}
    config = {"namespace": hub_server.user, "data_dir": str(run.data_dir), "runs_dir": str(run.runs_dir),
              "eval_dir": str(folder / "eval"), "exports_dir": str(exports), "export_verify_questions": 2,
              **repos, **settings}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hub.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder, {k.removesuffix("_repo"): f"{hub_server.user}/{v}" for k, v in repos.items()}


@pytest.fixture(scope="module")
def pushed(tinyllama_run, tinyllama_export, hub_server, tmp_path_factory):
    config_dir, ids = hub_config(tmp_path_factory.mktemp("hub-config"), tinyllama_run, tinyllama_export.parent,
                                 hub_server, publish_exports=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", hub_server.write_token)
        code, output = run_hub("push", "--config-dir", str(config_dir))
    assert code == 0, output
    return config_dir, ids, output


def test_push_publishes_the_export_on_its_own_repos_main_moved_once_verified(pushed, tinyllama_export):
    from huggingface_hub import HfApi, ModelCard

    _, ids, output = pushed
    api = HfApi()
    adapter_commit = api.repo_info(ids["adapter"], revision="exp/short").sha
    gguf_files = {f"short-{t}.gguf" for t in ZEPHYR_TYPES}
    for kind, expected in (("merged", {"model.safetensors", "tokenizer.model", "chat_contract.json"}),
                           ("gguf", gguf_files | {"params"})):
        branch = set(api.list_repo_files(ids[kind], revision="exp/short"))
        assert expected | {"README.md", "export.json", "verification.json"} <= branch
        assert set(api.list_repo_files(ids[kind], revision="main")) == branch
        main = api.list_repo_commits(ids[kind], revision="main")[0]
        assert main.title.startswith("Promote short") and main.title.endswith("verified")
        card = ModelCard.load(ids[kind])
        assert card.data.base_model_relation == ("merge" if kind == "merged" else "quantized")
        assert adapter_commit in card.text and ids["adapter"] in card.text
        assert ids[kind] in output
    gguf_card = ModelCard.load(ids["gguf"]).text
    assert card.data.base_model == ids["merged"]
    assert f"llama-cli -hf {ids['gguf']}:Q8_0" in gguf_card and f"ollama run hf.co/{ids['gguf']}:Q8_0" in gguf_card
    for quant_type in ZEPHYR_TYPES:  # the table: size, NMSE, greedy and ROUGE-L against the adapter, per type
        assert f"| {quant_type} | `short-{quant_type}.gguf` |" in gguf_card
    params = json.loads(Path(api.hf_hub_download(ids["gguf"], "params")).read_text())
    assert params["stop"] == ["</s>"] and params["num_predict"] == 24


def test_the_pushed_gguf_and_merged_weights_run_from_the_hub(pushed):
    """What the cards tell users to run, against the local Hub: llama-cpp-python's from_pretrained (through
    huggingface_hub), and transformers without peft."""
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    _, ids, _ = pushed
    llm = Llama.from_pretrained(ids["gguf"], filename="*-Q8_0.gguf", n_ctx=512, verbose=False)
    reply = llm.create_chat_completion([{"role": "user", "content": "What causes scurvy?"}], temperature=0.0,
                                       max_tokens=24)
    llm.close()
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert AutoModelForCausalLM.from_pretrained(ids["merged"]).num_parameters() > 0


def test_a_broken_export_is_pushed_to_its_branch_but_main_does_not_move(
        tinyllama_run, tinyllama_export, hub_server, tmp_path, monkeypatch):
    """Merged weights that no longer match the GGUF and the adapter (the embedding scaled after export): the
    check at the pushed commits fails, exit 6 in one line, and `main` of neither export repo gets the files."""
    from huggingface_hub import HfApi
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(tinyllama_export, tmp_path / "exports" / "short")
    weights = broken / "merged" / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.embed_tokens.weight"] *= 3
    save_file(tensors, weights, metadata={"format": "pt"})
    config_dir, ids = hub_config(tmp_path / "config", tinyllama_run, broken.parent, hub_server)
    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)
    code, output = run_hub("push", "--config-dir", str(config_dir))
    check_one_line_error(code, output, 6, "failed verification, not promoted")
    api = HfApi()
    for kind in ("merged", "gguf"):
        assert "README.md" in api.list_repo_files(ids[kind], revision="exp/short")
        assert api.list_repo_files(ids[kind], revision="main") == [".gitattributes"], kind  # as created


def test_exports_absent_are_said_in_one_line_or_stop_the_push_when_required(tinyllama_run, hub_server, tmp_path):
    """publish_exports null: a dry run says in one line that there is no export and writes the rest; true: exit 3
    before anything is written."""
    empty = tmp_path / "no-exports"
    empty.mkdir()
    config_dir, _ = hub_config(tmp_path / "auto", tinyllama_run, empty, hub_server)
    code, output = run_hub("push", "--config-dir", str(config_dir), "--dry-run", str(tmp_path / "dry"))
    assert code == 0, output
    assert f"exports not published: {empty / 'short'} holds no export of short" in output
    written = sorted(p.name for p in (tmp_path / "dry").iterdir() if not p.name.startswith("."))  # not the marker
    assert written == ["adapter", "dataset"]
    config_dir, _ = hub_config(tmp_path / "required", tinyllama_run, empty, hub_server, publish_exports=True)
    code, output = run_hub("push", "--config-dir", str(config_dir), "--dry-run", str(tmp_path / "dry-required"))
    check_one_line_error(code, output, 3, "publish_exports: true")
    assert not (tmp_path / "dry-required").exists()


def test_dry_run_writes_the_exports_branch_and_main(tinyllama_run, tinyllama_export, hub_server, tmp_path):
    config_dir, _ = hub_config(tmp_path / "config", tinyllama_run, tinyllama_export.parent, hub_server)
    out = tmp_path / "dry"
    code, output = run_hub("push", "--config-dir", str(config_dir), "--dry-run", str(out))
    assert code == 0, output
    for kind in ("merged", "gguf"):
        branch, main = out / kind / "exp" / "short", out / kind / "main"
        assert sorted(p.name for p in branch.iterdir()) == sorted(p.name for p in main.iterdir())
    assert (out / "gguf" / "main" / "short-Q8_0.gguf").stat().st_size == \
        (tinyllama_export / "gguf" / "short-Q8_0.gguf").stat().st_size
