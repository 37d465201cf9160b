"""The local Hub server, driven by the real huggingface_hub / datasets / peft clients."""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    HfFileSystem,
    ModelCard,
    ModelCardData,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, paginate

from offline.server import ensure_token, start_in_thread


@pytest.fixture
def api(hub_server, hub_token) -> HfApi:
    return HfApi()


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _faults(hub_server, method: str, rules: list[dict] | None = None, token: str | None = None):
    return get_session().request(method, f"{hub_server.url}/_local/faults",
                                 headers=build_hf_headers(token=token or hub_server.write_token),
                                 json={"rules": rules or []})


def test_create_repo_is_idempotent_with_exist_ok(api, hub_server):
    repo = hub_server.repo_id()
    url = api.create_repo(repo)
    assert url.repo_id == repo and url.endpoint == hub_server.url
    assert api.create_repo(repo, exist_ok=True).repo_id == repo
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(repo)
    assert err.value.response.status_code == 409
    assert api.whoami()["name"] == hub_server.user


def test_upload_folder_then_unchanged_reupload_makes_no_commit(api, hub_server, tmp_path):
    repo = hub_server.repo_id()
    api.create_repo(repo)
    folder = _folder(tmp_path, {"notes.txt": b"hello", "weights/w.safetensors": bytes(range(256)) * 40})
    first = api.upload_folder(repo_id=repo, folder_path=folder)
    commits = api.list_repo_commits(repo)
    assert commits[0].commit_id == first.oid and len(commits) == 2
    api.upload_folder(repo_id=repo, folder_path=folder)
    assert [c.commit_id for c in api.list_repo_commits(repo)] == [c.commit_id for c in commits]

    entries = {e.path: e for e in api.list_repo_tree(repo, recursive=True)}
    assert entries["weights/w.safetensors"].lfs.size == 10240  # binary went through LFS batch + PUT
    assert entries["notes.txt"].lfs is None
    assert Path(hf_hub_download(repo, "weights/w.safetensors")).read_bytes() == bytes(range(256)) * 40


def test_branches_and_tags_with_slashes_download_at_each_revision(api, hub_server, tmp_path):
    repo = hub_server.repo_id()
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="value.txt", repo_id=repo)
    api.create_branch(repo, branch="exp/lr-1e-4")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="value.txt", repo_id=repo, revision="exp/lr-1e-4")
    api.create_tag(repo, tag="best/1", revision="exp/lr-1e-4")
    with pytest.raises(HfHubHTTPError):
        api.create_branch(repo, branch="exp/lr-1e-4")

    refs = api.list_repo_refs(repo)
    branch_sha = {b.name: b.target_commit for b in refs.branches}["exp/lr-1e-4"]
    assert {t.name: t.target_commit for t in refs.tags} == {"best/1": branch_sha}
    assert api.model_info(repo, revision="exp/lr-1e-4").sha == branch_sha
    main_sha = api.model_info(repo).sha
    assert main_sha != branch_sha

    for revision, expected in [("main", b"v1"), ("exp/lr-1e-4", b"v2"), ("best/1", b"v2"), (main_sha, b"v1")]:
        local = snapshot_download(repo, revision=revision, cache_dir=tmp_path / "cache")
        assert (Path(local) / "value.txt").read_bytes() == expected, revision


def test_errors_map_to_client_exceptions(api, hub_server):
    repo = hub_server.repo_id()
    api.create_repo(repo)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_server.repo_id("missing"))
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, ".gitattributes", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "absent.txt")
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo, path_in_repo="absent-folder"))


def test_private_repo_is_invisible_without_a_token_with_access(api, hub_server):
    repo = hub_server.repo_id("private")
    api.create_repo(repo, private=True)
    assert api.model_info(repo).private is True
    assert api.model_info(repo, token=hub_server.read_token).id == repo
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo, token=False)
    other = ensure_token(hub_server.data_dir, "someone-else", "write")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo, token=other)
    with pytest.raises(HfHubHTTPError) as err:  # a read token cannot push
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, token=hub_server.read_token)
    assert err.value.response.status_code == 403

    api.update_repo_settings(repo, private=False)
    assert api.model_info(repo, token=False).private is False
    api.delete_repo(repo)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo)


def test_stale_parent_commit_is_refused_with_412(api, hub_server):
    repo = hub_server.repo_id()
    api.create_repo(repo)
    stale = api.model_info(repo).sha
    head = api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=repo).oid
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(repo, operations=[CommitOperationAdd("b.txt", b"b")], commit_message="late",
                          parent_commit=stale)
    assert err.value.response.status_code == 412
    assert api.model_info(repo).sha == head


def test_concurrent_commits_to_one_branch_are_serialised(api, hub_server):
    repo = hub_server.repo_id()
    api.create_repo(repo)
    threads = [threading.Thread(target=api.upload_file, kwargs=dict(
        path_or_fileobj=f"{i}".encode(), path_in_repo=f"f{i}.txt", repo_id=repo)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {f"f{i}.txt" for i in range(4)} <= set(api.list_repo_files(repo))
    assert len(api.list_repo_commits(repo)) == 5


def test_range_requests(api, hub_server):
    repo = hub_server.repo_id()
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt", repo_id=repo)
    with HfFileSystem().open(f"{repo}/digits.txt", "rb", block_size=4) as fh:
        fh.seek(3)
        assert fh.read(4) == b"3456"
    url = hf_hub_url(repo, "digits.txt")
    headers = build_hf_headers()
    partial = get_session().get(url, headers={**headers, "Range": "bytes=-3"})
    assert (partial.status_code, partial.content, partial.headers["Content-Range"]) == (206, b"789", "bytes 7-9/10")
    assert get_session().get(url, headers={**headers, "Range": "bytes=20-"}).status_code == 416
    head = get_session().head(url, headers={**headers, "Accept-Encoding": "identity"})
    assert head.headers["Content-Length"] == "10" and len(head.headers["X-Repo-Commit"]) == 40


def test_tree_listing_paginates_with_link_header(api, hub_server, tmp_path):
    repo = hub_server.repo_id()
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=_folder(tmp_path, {f"d/{i}.txt": b"x" for i in range(5)}))
    url = f"{hub_server.url}/api/models/{repo}/tree/main"
    first = get_session().get(url, params={"recursive": True, "limit": 2}, headers=build_hf_headers())
    assert len(first.json()) == 2 and 'rel="next"' in first.headers["Link"]
    paths = [e["path"] for e in paginate(url, params={"recursive": True, "limit": 2}, headers=build_hf_headers())]
    assert paths == [".gitattributes", "d"] + [f"d/{i}.txt" for i in range(5)]


def test_restart_loses_nothing(tmp_path):
    data_dir = tmp_path / "hub"
    handle = start_in_thread(data_dir)
    api = HfApi(endpoint=handle.url, token=ensure_token(data_dir, "restarter", "write"))
    repo = "restarter/kept"
    api.create_repo(repo, private=True)
    api.create_commit(repo, operations=[CommitOperationAdd("w.safetensors", b"\0" * 64),
                                        CommitOperationAdd("a.txt", b"a")], commit_message="add")
    api.create_tag(repo, tag="v/1")
    before = (api.model_info(repo), api.list_repo_refs(repo), api.list_repo_commits(repo))
    handle.close()

    handle = start_in_thread(data_dir)
    try:
        api = HfApi(endpoint=handle.url, token=api.token)
        info, refs, commits = api.model_info(repo), api.list_repo_refs(repo), api.list_repo_commits(repo)
        assert (info.sha, info.private, refs, commits) == (before[0].sha, True, before[1], before[2])
        assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "a.txt", "w.safetensors"]
        path = hf_hub_download(repo, "w.safetensors", revision="v/1", endpoint=handle.url, token=api.token,
                               cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == b"\0" * 64
    finally:
        handle.close()


def test_a_server_started_in_process_on_any_port_can_be_named_by_hf_endpoint_afterwards(tmp_path):
    """huggingface_hub reads HF_ENDPOINT once, when first imported: starting the server must not import it."""
    import subprocess
    import sys

    script = f"""
import os
from offline.server import ensure_token, start_in_thread
handle = start_in_thread({str(tmp_path)!r})
os.environ.update(HF_ENDPOINT=handle.url, HF_TOKEN=ensure_token({str(tmp_path)!r}, "late", "write"))
from huggingface_hub import HfApi
print(HfApi().whoami()["name"])
handle.close()
"""
    env = {k: v for k, v in os.environ.items() if k != "HF_ENDPOINT"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout.strip() == "late", done.stderr[-2000:]


def test_injected_503_on_preupload_is_retried_and_upload_completes(api, hub_server):
    repo = hub_server.repo_id("faults")
    api.create_repo(repo)
    assert _faults(hub_server, "POST", token=hub_server.read_token).status_code == 403
    rules = [{"method": "POST", "path": "/preupload/", "action": "status", "status": 503, "times": 1},
             {"method": "PUT", "path": "^/_local/lfs/", "action": "drop", "times": 1}]
    assert _faults(hub_server, "POST", rules).status_code == 200
    try:
        api.upload_file(path_or_fileobj=b"\1" * 2048, path_in_repo="w.bin", repo_id=repo)
        left = _faults(hub_server, "GET").json()["rules"]
    finally:
        _faults(hub_server, "DELETE")
    assert left == []  # both faults fired, and the client went through them
    assert Path(hf_hub_download(repo, "w.bin")).read_bytes() == b"\1" * 2048


def test_tokens_never_appear_in_the_request_log(api, hub_server, caplog):
    with caplog.at_level(logging.INFO, logger="offline.server"):
        api.create_repo(hub_server.repo_id())
    assert any("/api/repos/create 200" in r.getMessage() for r in caplog.records)
    assert not any(hub_server.write_token in r.getMessage() for r in caplog.records)


def test_space_settings_are_recorded(api, hub_server):
    repo = hub_server.repo_id("space")
    api.create_repo(repo, repo_type="space", space_sdk="gradio", space_variables=[{"key": "A", "value": "1"}])
    api.add_space_variable(repo, "ADAPTER_REVISION", "abc", description="pinned")
    api.delete_space_variable(repo, "A")
    assert {k: v.value for k, v in api.get_space_variables(repo).items()} == {"ADAPTER_REVISION": "abc"}
    runtime = api.request_space_hardware(repo, "cpu-upgrade")
    assert runtime.requested_hardware == "cpu-upgrade"
    assert api.get_space_runtime(repo).stage == "NO_APP_FILE"
    api.upload_file(path_or_fileobj=b"import gradio", path_in_repo="app.py", repo_id=repo, repo_type="space")
    info = api.space_info(repo)
    assert (info.sdk, info.runtime.stage) == ("gradio", "RUNNING")


def test_model_card_push_and_load(api, hub_server):
    repo = hub_server.repo_id("card")
    api.create_repo(repo)
    data = ModelCardData(license="apache-2.0", base_model="TinyLlama/TinyLlama-1.1B-Chat-v1.0", tags=["medical"])
    ModelCard(f"---\n{data.to_yaml()}\n---\n# Medical QA adapter\n").push_to_hub(repo)
    card = ModelCard.load(repo)
    assert card.data.license == "apache-2.0" and card.data.tags == ["medical"]
    assert "# Medical QA adapter" in card.text
    assert api.model_info(repo).card_data.base_model == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def test_dataset_push_and_load_at_a_revision(api, hub_server, tmp_path):
    from datasets import Dataset, DatasetDict, load_dataset

    repo = hub_server.repo_id("data")
    splits = DatasetDict({
        "train": Dataset.from_dict({"question": [f"q{i}" for i in range(6)], "answer": [f"a{i}" for i in range(6)]}),
        "test": Dataset.from_dict({"question": ["qt"], "answer": ["at"]}),
    })
    splits.push_to_hub(repo, revision="exp/v1")
    assert "exp/v1" in {b.name for b in api.list_repo_refs(repo, repo_type="dataset").branches}
    loaded = load_dataset(repo, revision="exp/v1", cache_dir=str(tmp_path / "cache"))
    assert {name: loaded[name].to_list() for name in loaded} == {name: splits[name].to_list() for name in splits}
    files = api.list_repo_files(repo, repo_type="dataset", revision="exp/v1")
    assert "README.md" in files and any(f.endswith(".parquet") for f in files)


@pytest.mark.slow
def test_lora_adapter_on_a_branch_loads_with_peft(api, hub_server, tiny_base, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "README.md").unlink()  # its base_model is a local folder: the Hub refuses that card
    trained = {k: v.clone() for k, v in adapter.state_dict().items() if "lora_" in k}

    repo = hub_server.repo_id("adapter")
    api.create_repo(repo)
    api.create_branch(repo, branch="exp/r4")
    api.upload_folder(repo_id=repo, folder_path=tmp_path / "adapter", revision="exp/r4")
    assert "adapter_config.json" not in api.list_repo_files(repo)  # main is untouched

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), repo, revision="exp/r4")
    state = loaded.state_dict()
    assert trained and all(torch.equal(state[k], v) for k, v in trained.items())
    out = loaded.generate(input_ids=torch.tensor([[1, 5, 6]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
    config = json.loads(Path(hf_hub_download(repo, "adapter_config.json", revision="exp/r4")).read_text())
    assert config["r"] == 4


def test_a_failed_commit_leaves_the_branch_and_history_unchanged(tmp_path):
    from offline.server.storage import Store, StoreError

    store = Store(tmp_path)
    assert store.create_repo("model", "alice/atomic", {"private": False})
    head = store.resolve("model", "alice/atomic", "main").commit_id
    commits_before = sorted(p.name for p in store.commits.iterdir())
    with pytest.raises(StoreError):  # the second operation names an LFS object never uploaded
        operations = [{"op": "add", "path": "a.txt", "data": b"a"},
                      {"op": "lfs", "path": "w.bin", "oid": "0" * 64, "size": 1}]
        store.apply_commit("model", "alice/atomic", "main", operations, "half", "", "alice", None)
    assert store.resolve("model", "alice/atomic", "main").commit_id == head
    assert sorted(p.name for p in store.commits.iterdir()) == commits_before


def test_serve_command_answers_and_keeps_tokens_out_of_its_output(tmp_path):
    import subprocess
    import sys
    import time

    from space_support import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--dir", str(tmp_path), "--port", str(port),
                             "--user", "cli-user"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        token = name = None
        for _ in range(100):
            tokens = tmp_path / "tokens.json"
            if tokens.exists():
                token = next(iter(json.loads(tokens.read_text())["tokens"]))
                try:
                    name = HfApi(endpoint=f"http://127.0.0.1:{port}", token=token).whoami()["name"]
                    break
                except Exception:
                    pass
            time.sleep(0.1)
        assert name == "cli-user"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "GET /api/whoami-v2 200" in output and token not in output


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_hub_serve_and_demo_are_aliases_of_the_offline_commands(command, capsys):
    """`python -m hub serve|demo` (from before the move to offline/) take the options of `python -m offline ...`."""
    import re

    import hub.cli
    import offline.cli

    options = []
    for cli in (hub.cli, offline.cli):
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0
        options.append(sorted(set(re.findall(r"--[\w-]+", capsys.readouterr().out))))
    assert options[0] == options[1] and {"serve": "--port", "demo": "--hub-port"}[command] in options[0]
