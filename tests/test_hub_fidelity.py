"""The local Hub server's integrity, security and fidelity to the real Hub (issue 17).

Driven through the real huggingface_hub, datasets and peft clients and the `hf` CLI; the
security items, which no well-behaved client would send, through plain HTTP (requests).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    DatasetCard,
    DatasetCardData,
    EvalResult,
    HfApi,
    HfFileSystem,
    ModelCard,
    ModelCardData,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RevisionNotFoundError
from huggingface_hub.utils.sha import git_hash

from offline.server import ensure_token, start_in_thread
from offline.server.metadata import HUB_LICENSES
from reliability_support import REPO_ROOT
from space_support import free_port

HF_CLI = REPO_ROOT / ".venv" / "bin" / "hf"
WEIGHTS = bytes(range(256)) * 16  # 4,096 bytes, sent through LFS (.safetensors)


@pytest.fixture
def api(hub_server, hub_token) -> HfApi:
    return HfApi()


@pytest.fixture(scope="module")
def repo(hub_server) -> str:
    """A model repo with a regular file and an LFS file, shared by the read-only checks."""
    repo_id = hub_server.repo_id("fidelity")
    api = HfApi(token=hub_server.write_token)
    api.create_repo(repo_id)
    api.create_commit(repo_id, operations=[CommitOperationAdd("notes.txt", b"hello"),
                                           CommitOperationAdd("w.safetensors", WEIGHTS)], commit_message="add")
    return repo_id


def _auth(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _raw_commit(hub_server, repo_id: str, lines: list, token: str | None = None) -> requests.Response:
    """An NDJSON commit as sent on the wire; `lines` are objects or raw strings."""
    header = {"key": "header", "value": {"summary": "raw commit"}}
    body = "\n".join(json.dumps(line) if not isinstance(line, str) else line for line in [header, *lines])
    return requests.post(f"{hub_server.url}/api/models/{repo_id}/commit/main", data=body.encode(),
                         headers={**_auth(token or hub_server.write_token), "Content-Type": "application/x-ndjson"})


def _file_line(path: str, data: bytes = b"x") -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def _blob_file(hub_server, sha256: str) -> Path:
    return Path(hub_server.data_dir) / "objects" / "blobs" / sha256


def _flip_bytes(path: Path) -> None:
    with open(path, "r+b") as fh:
        data = bytearray(fh.read(8))
        fh.seek(0)
        fh.write(bytes(b ^ 0xFF for b in data))


def _assert_hub_error(response: requests.Response, status: int) -> None:
    """The Hub's error shape: the status, a JSON {"error"} body and X-Error-Message."""
    assert response.status_code == status, response.text
    assert response.json()["error"] and response.headers["X-Error-Message"]


# ---- integrity -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["notes.txt", "w.safetensors"])
def test_a_blob_whose_bytes_changed_on_disk_is_not_served(api, hub_server, path, tmp_path, caplog):
    repo_id = hub_server.repo_id("damaged")
    data = b"hello damaged world" if path == "notes.txt" else WEIGHTS
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo_id)
    assert Path(hf_hub_download(repo_id, path, cache_dir=tmp_path / "a")).read_bytes() == data
    blob = _blob_file(hub_server, hashlib.sha256(data).hexdigest())
    _flip_bytes(blob)
    with caplog.at_level(logging.ERROR, logger="offline.server"), pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(repo_id, path, cache_dir=tmp_path / "b")
    assert err.value.response.status_code == 500
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and blob.name in lines[0] and path in lines[0]


def test_a_damaged_lfs_object_is_asked_for_again_and_repaired(api, hub_server, tmp_path):
    repo_id = hub_server.repo_id("repair")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="a.safetensors", repo_id=repo_id)
    _flip_bytes(_blob_file(hub_server, hashlib.sha256(WEIGHTS).hexdigest()))
    api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="b.safetensors", repo_id=repo_id)  # uploads it again
    for name in ("a.safetensors", "b.safetensors"):
        assert Path(hf_hub_download(repo_id, name, cache_dir=tmp_path)).read_bytes() == WEIGHTS


def _batch(hub_server, repo_id: str, oid: str, size: int) -> requests.Response:
    return requests.post(f"{hub_server.url}/{repo_id}.git/info/lfs/objects/batch",
                         headers={**_auth(hub_server.write_token), "Content-Type": "application/vnd.git-lfs+json"},
                         json={"operation": "upload", "transfers": ["basic"],
                               "objects": [{"oid": oid, "size": size}]})


@pytest.mark.parametrize("declared", [1000, 8192])
def test_an_lfs_upload_must_have_its_declared_size(hub_server, repo, declared):
    data = os.urandom(4096)
    oid = hashlib.sha256(data).hexdigest()
    href = _batch(hub_server, repo, oid, declared).json()["objects"][0]["actions"]["upload"]["href"]
    answer = requests.put(href, data=data)
    _assert_hub_error(answer, 413 if declared < len(data) else 400)
    assert not _blob_file(hub_server, oid).exists()


@pytest.mark.parametrize("size, writes", [(4_000, 1), (400_000, 40)])
def test_a_chunked_lfs_upload_past_its_declared_size_is_refused_mid_body(hub_server, repo, size, writes):
    """No Content-Length to refuse up front: the server stops past the declared size, drains the rest
    and answers 413, whether the body arrives whole (one small write) or spread out."""
    data = os.urandom(size)
    oid = hashlib.sha256(data).hexdigest()
    href = _batch(hub_server, repo, oid, 1000).json()["objects"][0]["actions"]["upload"]["href"]
    step = size // 10
    body = b"".join(b"%x\r\n%s\r\n" % (step, data[i:i + step]) for i in range(0, size, step)) + b"0\r\n\r\n"
    request = (f"PUT {urlsplit(href).path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
               "Connection: close\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", hub_server.handle.port), timeout=30) as conn:
        for i in range(0, len(request), len(request) // writes + 1):
            conn.sendall(request[i:i + len(request) // writes + 1])
        answer = b"".join(iter(lambda: conn.recv(65536), b""))
    status, _, rest = answer.partition(b"\r\n")
    assert status.split()[1] == b"413" and b'"error"' in rest and b"x-error-message" in rest.lower()
    assert not _blob_file(hub_server, oid).exists()
    assert not list(_blob_file(hub_server, oid).parent.glob(".upload-*"))  # no half-written upload left


def test_an_lfs_commit_declaring_another_size_is_refused(api, hub_server, repo):
    oid = hashlib.sha256(WEIGHTS).hexdigest()
    answer = _raw_commit(hub_server, repo, [{"key": "lfsFile", "value": {
        "path": "lying.safetensors", "algo": "sha256", "oid": oid, "size": 1000}}])
    _assert_hub_error(answer, 400)
    assert "lying.safetensors" not in api.list_repo_files(repo)


def test_regular_files_are_named_by_their_git_blob_sha(api, repo):
    entries = {e.path: e for e in api.list_repo_tree(repo)}
    assert entries["notes.txt"].blob_id == git_hash(b"hello")
    assert entries["w.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()


def test_lfs_files_copy_and_move_without_a_size(api, hub_server, tmp_path):
    repo_id = hub_server.repo_id("copy")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="w.safetensors", repo_id=repo_id)
    api.create_commit(repo_id, operations=[CommitOperationCopy("w.safetensors", "copy/w.safetensors")],
                      commit_message="copy")
    fs = HfFileSystem()
    fs.cp_file(f"{repo_id}/w.safetensors", f"{repo_id}/cp.safetensors")
    fs.mv(f"{repo_id}/cp.safetensors", f"{repo_id}/moved.safetensors")
    assert set(api.list_repo_files(repo_id)) >= {"w.safetensors", "copy/w.safetensors", "moved.safetensors"}
    assert "cp.safetensors" not in api.list_repo_files(repo_id)
    for name in ("copy/w.safetensors", "moved.safetensors"):
        assert Path(hf_hub_download(repo_id, name, cache_dir=tmp_path)).read_bytes() == WEIGHTS


# ---- security: bodies ------------------------------------------------------------------------

def _status_path(pid: int, key: str) -> int:
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1])  # kB


def _stream(total: int, chunk: int = 1 << 20):
    """`total` zero bytes, generated: requests sends them chunked (no Content-Length)."""
    for _ in range(total // chunk):
        yield b"\0" * chunk


class _Sized:
    """`total` zero bytes, generated, with a length: requests sends them with Content-Length."""

    def __init__(self, total: int):
        self.total = total

    def __len__(self):
        return self.total

    def __iter__(self):
        return _stream(self.total)


def test_oversized_and_anonymous_bodies_do_not_grow_the_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "offline", "serve", "--dir", str(tmp_path), "--port", str(port),
                             "--user", "big"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        token = _wait_for_server(tmp_path, url)
        HfApi(endpoint=url, token=token).create_repo("big/target")
        baseline = _status_path(proc.pid, "VmHWM")
        commit = f"{url}/api/models/big/target/commit/main"
        anonymous = requests.post(commit, data=_stream(300 << 20))  # chunked, no Authorization
        declared = requests.post(commit, data=_Sized(300 << 20), headers=_auth(token))
        growth_mb = (_status_path(proc.pid, "VmHWM") - baseline) / 1024
        faults = requests.post(f"{url}/_local/faults", json={"rules": []}, headers=_auth(token))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    _assert_hub_error(anonymous, 401)
    _assert_hub_error(declared, 413)
    assert growth_mb < 40, f"the server grew by {growth_mb:.0f} MB for 600 MB of refused bodies"
    assert faults.status_code == 404  # `offline serve` without --faults has no fault injection


def _wait_for_server(data_dir: Path, url: str) -> str:
    for _ in range(200):
        tokens = data_dir / "tokens.json"
        if tokens.exists():
            token = next(iter(json.loads(tokens.read_text())["tokens"]))
            try:
                HfApi(endpoint=url, token=token).whoami()
                return token
            except Exception:
                pass
        time.sleep(0.1)
    raise AssertionError("the local Hub server did not start")


def test_an_anonymous_body_over_the_limit_gets_413(hub_server):
    answer = requests.post(f"{hub_server.url}/api/validate-yaml", data=b"{" + b" " * (2 << 20) + b"}",
                           headers={"Content-Type": "application/json"})
    _assert_hub_error(answer, 413)


def test_a_bad_token_is_refused_before_the_body(hub_server, repo):
    answer = requests.post(f"{hub_server.url}/api/models/{repo}/commit/main", data=_Sized(8 << 20),
                           headers=_auth("hf_local_not-a-token"))
    _assert_hub_error(answer, 401)


MALFORMED = {
    "create repo: array body": ("POST", "/api/repos/create", "[]"),
    "create repo: numeric name": ("POST", "/api/repos/create", '{"name": 5}'),
    "create repo: not JSON": ("POST", "/api/repos/create", "{not json"),
    "preupload: array body": ("POST", "/api/models/{repo}/preupload/main", "[]"),
    "preupload: files not a list": ("POST", "/api/models/{repo}/preupload/main", '{"files": "x"}'),
    "preupload: numeric path": ("POST", "/api/models/{repo}/preupload/main", '{"files": [{"path": 3}]}'),
    "preupload: sample not base64": ("POST", "/api/models/{repo}/preupload/main",
                                     '{"files": [{"path": "a.txt", "sample": "%%%", "size": 1}]}'),
    "lfs batch: numeric oid": ("POST", "/{repo}.git/info/lfs/objects/batch",
                               '{"operation": "upload", "objects": [{"oid": 5, "size": 1}]}'),
    "lfs batch: objects not a list": ("POST", "/{repo}.git/info/lfs/objects/batch",
                                      '{"operation": "upload", "objects": {}}'),
    "commit: array line": ("POST", "/api/models/{repo}/commit/main", "[]"),
    "commit: numeric path": ("POST", "/api/models/{repo}/commit/main",
                             '{"key": "file", "value": {"path": 5, "content": ""}}'),
    "commit: content not base64": ("POST", "/api/models/{repo}/commit/main",
                                   '{"key": "file", "value": {"path": "a.txt", "content": "!!"}}'),
    "commit: lfs size a string": ("POST", "/api/models/{repo}/commit/main",
                                  '{"key": "lfsFile", "value": {"path": "a.bin", "oid": "' + "0" * 64
                                  + '", "size": "1"}}'),
    "branch: list starting point": ("POST", "/api/models/{repo}/branch/b1", '{"startingPoint": []}'),
    "tag: object tag": ("POST", "/api/models/{repo}/tag/main", '{"tag": {}}'),
    "settings: unknown gated mode": ("PUT", "/api/models/{repo}/settings", '{"gated": "sometimes"}'),
    "paths-info: numeric paths": ("POST", "/api/models/{repo}/paths-info/main", '{"paths": 5}'),
    "validate-yaml: numeric content": ("POST", "/api/validate-yaml", '{"content": 7}'),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_body_gets_400_in_the_hubs_shape(hub_server, repo, case, caplog):
    method, path, body = MALFORMED[case]
    content_type = "application/x-ndjson" if "/commit/" in path else "application/json"
    with caplog.at_level(logging.INFO, logger="offline.server"):
        answer = requests.request(method, hub_server.url + path.format(repo=repo), data=body.encode(),
                                  headers={**_auth(hub_server.write_token), "Content-Type": content_type})
    _assert_hub_error(answer, 400)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]  # no traceback


BAD_PATHS = ["../escape.txt", "a/../../b.txt", "/etc/passwd", "a//b.txt", "a/./b.txt", "folder/", ".git/config",
             "sub/.git/hooks/x", "back\\slash.txt", "ctrl\x01.txt", ""]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_a_path_the_hub_refuses_is_refused(api, hub_server, repo, path):
    head = api.model_info(repo).sha
    _assert_hub_error(_raw_commit(hub_server, repo, [_file_line(path)]), 400)
    assert api.model_info(repo).sha == head


def test_a_repo_with_odd_but_valid_paths_downloads_whole(api, hub_server, tmp_path):
    repo_id = hub_server.repo_id("paths")
    api.create_repo(repo_id)
    answer = _raw_commit(hub_server, repo_id, [_file_line("dir with space/é.txt"), _file_line("..dots..txt")])
    assert answer.status_code == 200, answer.text
    local = Path(snapshot_download(repo_id, cache_dir=tmp_path))
    assert (local / "dir with space" / "é.txt").read_bytes() == b"x" and (local / "..dots..txt").exists()


# ---- security: pages and files ---------------------------------------------------------------

HOSTILE_CARD = """---
license: apache-2.0
---
# Card
<script>alert(1)</script>
<img src=x onerror=alert(1)>
[js](javascript:alert(1)) [js2](JaVaScRiPt:alert(2)) [tab](java&#9;script:alert(3))
[data](data:text/html;base64,PHNjcmlwdD4=) [vb](vbscript:msgbox) <javascript:alert(4)>
[web](https://example.com/x) [mail](mailto:a@example.com) [plot](plots/loss.png)

![loss](plots/loss.png)
"""


@pytest.fixture(scope="module")
def card_page(hub_server) -> requests.Response:
    repo_id = hub_server.repo_id("hostile")
    api = HfApi(token=hub_server.write_token)
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=HOSTILE_CARD.encode(), path_in_repo="README.md", repo_id=repo_id)
    return requests.get(f"{hub_server.url}/{repo_id}/blob/main/README.md")


def test_card_page_has_no_raw_html(card_page):
    assert card_page.status_code == 200 and card_page.headers["Content-Type"].startswith("text/html")
    body = card_page.text
    assert "<script" not in body and "<img src=\"x\"" not in body and "<img src=x" not in body
    assert "&lt;script&gt;" in body  # shown as text


def test_card_page_keeps_only_safe_links(card_page):
    targets = re.findall(r'(?:href|src)="([^"]*)"', card_page.text)
    assert set(targets) == {"https://example.com/x", "mailto:a@example.com", "plots/loss.png"}


def test_card_page_runs_no_script(card_page):
    policy = card_page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert card_page.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name, content", [("page.html", b"<script>alert(1)</script>"),
                                           ("image.svg", b"<svg xmlns='http://www.w3.org/2000/svg' onload='x()'/>"),
                                           ("code.js", b"alert(1)")])
def test_active_user_files_are_served_inert(api, hub_server, name, content):
    repo_id = hub_server.repo_id("inert")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=content, path_in_repo=name, repo_id=repo_id)
    for view in ("resolve", "blob"):
        answer = requests.get(f"{hub_server.url}/{repo_id}/{view}/main/{name}")
        assert answer.status_code == 200 and answer.content == content
        assert answer.headers["Content-Disposition"].startswith("attachment"), view
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in answer.headers["Content-Security-Policy"]
        assert not re.match(r"(text/html|image/svg|application/xhtml|text/javascript|application/javascript)",
                            answer.headers["Content-Type"]), view


def test_a_plot_is_shown_inline_but_sandboxed(api, hub_server):
    repo_id = hub_server.repo_id("plot")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"\x89PNG\r\n\x1a\n" + bytes(32), path_in_repo="plots/loss.png", repo_id=repo_id)
    answer = requests.get(f"{hub_server.url}/{repo_id}/blob/main/plots/loss.png")
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["Content-Disposition"].startswith("inline")
    assert "sandbox" in answer.headers["Content-Security-Policy"]


def test_fault_injection_exists_only_when_the_server_is_started_with_it(tmp_path, hub_server):
    handle = start_in_thread(tmp_path / "hub")
    try:
        token = ensure_token(tmp_path / "hub", "owner", "write")
        rules = {"rules": [{"path": "/api/", "action": "status", "status": 503}]}
        assert requests.post(f"{handle.url}/_local/faults", json=rules, headers=_auth(token)).status_code == 404
        assert HfApi(endpoint=handle.url, token=token).whoami()["name"] == "owner"  # no rule was set
    finally:
        handle.close()
    enabled = requests.get(f"{hub_server.url}/_local/faults", headers=_auth(hub_server.write_token))
    assert enabled.status_code == 200  # the test session's server is started with faults=True


# ---- fidelity: card metadata -----------------------------------------------------------------

LICENSE_LIST = "[" + ", ".join(HUB_LICENSES) + ", array]"
BAD_METADATA = {
    "license: not-a-real-license": f'"license" must be one of {LICENSE_LIST}',
    "license: [mit, nope]": f'"license[1]" must be one of {LICENSE_LIST}',
    "model-index: {name: x}": '"model-index" must be an array',
    "model-index: [{name: x}]": '"model-index[0].results" is required',
    "model-index: [{name: x, results: [{task: {type: t}, dataset: {type: d, name: n, config: 3}, "
    "metrics: [{type: m, value: 1}]}]}]": '"model-index[0].results[0].dataset.config" must be a string',
    "model-index: [{name: x, results: [{task: {type: t}, dataset: {type: d, name: n}, metrics: [{type: m}]}]}]":
        '"model-index[0].results[0].metrics[0].value" is required',
    "base_model: ''": '"base_model" is not allowed to be empty',
    "base_model: 5": '"base_model" must be a string',
    "datasets: [null]": '"datasets[0]" must be a string',
    "datasets: [/var/hf/images/]":
        '"datasets[0]" with value "/var/hf/images/" is not valid. If possible, use a dataset id from https://hf.co/datasets.',
    "base_model: /tmp/tiny-base": '"base_model" with value "/tmp/tiny-base" is not valid. '
                                  'If possible, use a model id from https://hf.co/models.',
}


@pytest.mark.parametrize("yaml_text", list(BAD_METADATA))
def test_validate_yaml_refuses_what_the_hub_refuses_with_its_message(hub_server, yaml_text):
    answer = requests.post(f"{hub_server.url}/api/validate-yaml",
                           json={"content": f"---\n{yaml_text}\n---\n# card\n", "repoType": "model"})
    assert answer.status_code == 400
    assert [e["message"] for e in answer.json()["errors"]] == [BAD_METADATA[yaml_text]]


def test_model_card_validate_reports_the_hubs_license_error(hub_server):
    card = ModelCard("---\nlicense: not-a-real-license\n---\n# card\n")
    with pytest.raises(ValueError, match='- Error: "license" must be one of \\[apache-2.0, mit'):
        card.validate()


def test_upload_of_a_card_with_a_bad_license_is_refused(api, hub_server, repo):
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(path_or_fileobj=b"---\nlicense: apache2\n---\n", path_in_repo="README.md", repo_id=repo)


def test_a_commit_of_a_bad_card_is_refused_by_the_server_itself(api, hub_server, repo):
    answer = _raw_commit(hub_server, repo, [_file_line("README.md", b"---\nlicense: apache2\n---\n# x\n")])
    _assert_hub_error(answer, 400)
    assert '"license" must be one of' in answer.json()["error"]
    assert "README.md" not in api.list_repo_files(repo)


def test_cards_like_this_projects_validate(hub_server):
    results = [EvalResult(task_type="text-generation", dataset_type="medalpaca/medical_meadow_medical_flashcards",
                          dataset_name="flashcards", dataset_split="test", metric_type="rougeL", metric_value=0.41)]
    model = ModelCardData(license="apache-2.0", base_model="TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                          datasets=["medalpaca/medical_meadow_medical_flashcards", "tester/data"],
                          library_name="peft", pipeline_tag="text-generation", tags=["medical", "lora"],
                          model_name="adapter", eval_results=results)
    ModelCard(f"---\n{model.to_yaml()}\n---\n# adapter\n").validate()
    data = DatasetCardData(license="cc-by-4.0", language=["en"], task_categories=["question-answering"],
                           source_datasets=["medalpaca/medical_meadow_medical_flashcards"], tags=["medical"])
    DatasetCard(f"---\n{data.to_yaml()}\n---\n# data\n").validate()


def test_a_card_with_windows_line_ends_is_read_and_checked_as_the_hub_does(api, hub_server):
    """The front matter is found by huggingface_hub's REGEX_YAML_BLOCK (the Hub's own), CRLF included."""
    repo_id = hub_server.repo_id("crlf")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"---\r\nlicense: mit\r\ntags:\r\n- medical\r\n---\r\n# card\r\n",
                    path_in_repo="README.md", repo_id=repo_id)
    info = api.model_info(repo_id)
    assert (info.card_data.license, info.card_data.tags) == ("mit", ["medical"])
    assert {"medical", "license:mit"} <= set(info.tags)
    answer = _raw_commit(hub_server, repo_id, [_file_line("README.md", b"---\r\nlicense: apache2\r\n---\r\n# x\r\n")])
    _assert_hub_error(answer, 400)
    assert '"license" must be one of' in answer.json()["error"]


# ---- fidelity: revisions, gating, tags -------------------------------------------------------

def test_short_shas_resolve_like_the_hub(api, hub_server, repo, tmp_path):
    sha = api.model_info(repo).sha
    assert api.model_info(repo, revision=sha[:12]).sha == sha
    assert api.model_info(repo, revision=sha[:7]).sha == sha
    path = hf_hub_download(repo, "notes.txt", revision=sha[:12], cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"hello"
    local = snapshot_download(repo, revision=sha[:12], cache_dir=tmp_path / "snap")
    assert (Path(local) / "w.safetensors").read_bytes() == WEIGHTS


@pytest.mark.parametrize("make_revision", [lambda sha: sha[:6], lambda sha: "0000000", lambda sha: "f" * 40])
def test_a_prefix_too_short_or_unknown_is_not_a_revision(api, repo, make_revision):
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision=make_revision(api.model_info(repo).sha))


def test_another_repos_commit_is_not_a_revision_here(api, hub_server, repo):
    other = hub_server.repo_id("other")
    api.create_repo(other)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision=api.model_info(other).sha[:12])


def test_hf_cli_downloads_at_a_short_sha(hub_server, repo, tmp_path):
    sha = HfApi(token=hub_server.write_token).model_info(repo).sha
    env = {**os.environ, "HF_TOKEN": hub_server.write_token, "HF_HOME": str(tmp_path / "home")}
    done = subprocess.run([str(HF_CLI), "download", repo, "notes.txt", "--revision", sha[:12],
                           "--local-dir", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "notes.txt").read_bytes() == b"hello"


def test_hf_cli_upload_of_a_card_with_a_bad_license_fails(hub_server, repo, tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: not-a-real-license\n---\n# card\n")
    env = {**os.environ, "HF_TOKEN": hub_server.write_token, "HF_HOME": str(tmp_path / "home")}
    done = subprocess.run([str(HF_CLI), "upload", repo, str(card), "README.md"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and '"license" must be one of' in done.stdout + done.stderr


def test_load_dataset_at_a_short_sha(api, hub_server, tmp_path):
    from datasets import Dataset, load_dataset

    repo_id = hub_server.repo_id("data")
    Dataset.from_dict({"question": ["q1", "q2"], "answer": ["a1", "a2"]}).push_to_hub(repo_id)
    sha = api.dataset_info(repo_id).sha
    loaded = load_dataset(repo_id, revision=sha[:12], cache_dir=str(tmp_path))
    assert loaded["train"]["question"] == ["q1", "q2"]
    tags = api.dataset_info(repo_id).tags
    assert "format:parquet" in tags and "library:datasets" in tags


@pytest.mark.slow
def test_peft_loads_an_adapter_at_a_short_sha(api, hub_server, tiny_base, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base),
                             LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    # peft's card names the local base folder as base_model, which the Hub refuses
    (tmp_path / "adapter" / "README.md").unlink()
    repo_id = hub_server.repo_id("adapter")
    api.create_repo(repo_id)
    sha = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "adapter").oid
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), repo_id, revision=sha[:12])
    expected = {k: v for k, v in adapter.state_dict().items() if "lora_" in k}
    assert expected and all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


@pytest.fixture
def gated_repo(api, hub_server) -> str:
    repo_id = hub_server.repo_id("gated")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"secret weights", path_in_repo="w.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# gated\n", path_in_repo="README.md", repo_id=repo_id)
    api.update_repo_settings(repo_id, gated="auto")
    return repo_id


def test_a_gated_repo_refuses_anonymous_downloads_with_401(gated_repo, tmp_path):
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(gated_repo, "w.txt", token=False, cache_dir=tmp_path)
    assert err.value.response.status_code == 401
    assert err.value.response.headers["X-Error-Code"] == "GatedRepo"


def test_a_gated_repo_refuses_users_without_access_with_403_until_granted(api, hub_server, gated_repo, tmp_path):
    other = ensure_token(hub_server.data_dir, "outsider", "read")
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(gated_repo, "w.txt", token=other, cache_dir=tmp_path / "a")
    assert err.value.response.status_code == 403
    api.grant_access(gated_repo, "outsider")
    assert Path(hf_hub_download(gated_repo, "w.txt", token=other, cache_dir=tmp_path / "b")).read_bytes() == \
        b"secret weights"


def test_a_gated_repo_shows_its_info_and_card_to_everyone(api, hub_server, gated_repo, tmp_path):
    info = api.model_info(gated_repo, token=False)
    assert info.gated == "auto" and {s.rfilename for s in info.siblings} >= {"w.txt", "README.md"}
    assert requests.get(f"{hub_server.url}/{gated_repo}/blob/main/README.md").status_code == 200
    assert Path(hf_hub_download(gated_repo, "w.txt", cache_dir=tmp_path)).read_bytes() == b"secret weights"  # owner


def test_model_info_tags_come_from_the_card(api, hub_server):
    repo_id = hub_server.repo_id("tags")
    api.create_repo(repo_id)
    data = ModelCardData(license="apache-2.0", base_model="TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                         datasets=["tester/data"], library_name="peft", pipeline_tag="text-generation",
                         tags=["medical"], language=["en"])
    ModelCard(f"---\n{data.to_yaml()}\n---\n# adapter\n").push_to_hub(repo_id)
    api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="adapter_model.safetensors", repo_id=repo_id)
    tags = api.model_info(repo_id).tags
    assert {"peft", "safetensors", "medical", "text-generation", "en", "license:apache-2.0", "dataset:tester/data",
            "base_model:TinyLlama/TinyLlama-1.1B-Chat-v1.0",
            "base_model:adapter:TinyLlama/TinyLlama-1.1B-Chat-v1.0"} <= set(tags)
    assert len(tags) == len(set(tags))
