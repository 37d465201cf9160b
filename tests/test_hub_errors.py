"""The Hub unreachable or misbehaving: every command ends in one `error:` line naming repo@revision, exit 4.

Conditions are made on this machine, with real traffic: the session's local Hub server is
swapped, for the Hub's host and port only, for a closed loopback port (refused) or a loopback
listener that accepts and never answers (timeout) by redirecting `socket.getaddrinfo`, or name
resolution fails there (as it does with no network); the server's fault injection answers 5xx,
429 or 412, or drops connections; offline mode is huggingface_hub's and datasets' own switch.
Nothing is sent off the machine. Commands run in-process (tests/reliability_support.py).

Time is compressed, not faked: timeouts are set small and huggingface_hub's backoff does not
sleep between its retries (every retry is still sent).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import HUB_PORT
from reliability_support import check_one_line_error, faults, run_in_process, write_hub_yaml
from space_support import free_port
from common.errors import EXIT_HUB, EXIT_VERIFY, HubError

HUB_HOSTS = {"127.0.0.1", "localhost"}
MEDQA_ROW = {"question": "Which organ secretes insulin?", "answer_idx": "B",
             "options": {"A": "Liver", "B": "Pancreas", "C": "Spleen", "D": "Kidney"}}


# ---- the conditions ------------------------------------------------------------------------------

@pytest.fixture
def quick_clock(monkeypatch):
    """Small timeouts (read at import by huggingface_hub) and no sleeping between its retries."""
    from huggingface_hub import constants, file_download
    from huggingface_hub.utils import _http

    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.5)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.2)
    monkeypatch.setattr(file_download, "_ETAG_RETRY_TIMEOUT", 0.5)
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    monkeypatch.setattr("common.hub_errors.time", types.SimpleNamespace(sleep=lambda seconds: None))


@contextlib.contextmanager
def hub_address(monkeypatch, resolve):
    """Connections to the Hub's host:port go where `resolve(real_getaddrinfo, args)` says."""
    from huggingface_hub import close_session

    real = socket.getaddrinfo

    def redirected(host, port, *args, **kwargs):
        if host in HUB_HOSTS and str(port) == str(HUB_PORT):
            return resolve(real, host, args, kwargs)
        return real(host, port, *args, **kwargs)

    close_session()  # no kept-alive connection to the real server may bypass the redirect
    with monkeypatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", redirected)
        try:
            yield
        finally:
            close_session()


@contextlib.contextmanager
def refused(monkeypatch, hub_server):
    closed = free_port()  # bound once, then released: nothing listens there
    with hub_address(monkeypatch, lambda real, host, args, kwargs: real(host, closed, *args, **kwargs)):
        yield


@contextlib.contextmanager
def never_answers(monkeypatch, hub_server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # the kernel accepts; nobody ever reads or answers
    port = listener.getsockname()[1]
    try:
        with hub_address(monkeypatch, lambda real, host, args, kwargs: real(host, port, *args, **kwargs)):
            yield
    finally:
        listener.close()


@contextlib.contextmanager
def no_name_resolution(monkeypatch, hub_server):
    def fail(real, host, args, kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with hub_address(monkeypatch, fail):
        yield


def injected(**rule):
    @contextlib.contextmanager
    def condition(monkeypatch, hub_server):
        from huggingface_hub import close_session

        close_session()
        faults(hub_server, "POST", [{"path": ".*", **rule}])
        try:
            yield
        finally:
            faults(hub_server, "DELETE")
            close_session()

    return condition


@contextlib.contextmanager
def offline(monkeypatch, hub_server):
    """HF_HUB_OFFLINE=1 as huggingface_hub and datasets read it at import."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with monkeypatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        yield


CONDITIONS = {
    "connection-refused": (refused, "connection refused"),
    "never-answers": (never_answers, "timed out"),
    "name-resolution-fails": (no_name_resolution, "name resolution failed"),
    "server-error-503": (injected(action="status", status=503), "server error HTTP 503"),
    "server-error-500": (injected(action="status", status=500), "server error HTTP 500"),
    "rate-limited-429": (injected(action="status", status=429), "rate limited"),
    "connection-dropped": (injected(action="drop"), "dropped the connection"),
    "offline-without-cache": (offline, "offline mode (HF_HUB_OFFLINE=1) and no copy in the local cache"),
}


# ---- the commands --------------------------------------------------------------------------------

@dataclass
class Command:
    package: str
    build: object  # (tmp_path, world) -> (argv, repo@revision the line must name)


@dataclass
class World:
    hub_server: object
    pipeline: object  # reliability_support.CliPipeline: prepared data, a trained run, pushed repos
    tiny_base: Path
    fresh: str  # a suffix no repository or cache entry has yet: "offline without a cache" is really so


def prepare_argv(tmp_path: Path, world: World):
    repo = f"{world.hub_server.user}/cards-{world.fresh}"
    config = {"source": repo, "revision": None, "tokenizer": str(world.tiny_base), "tokenizer_revision": None,
              "output_dir": str(tmp_path / "processed")}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return ["prepare", "--config", str(tmp_path / "data.yaml")], f"{repo}@main"


def train_argv(tmp_path: Path, world: World):
    repo = f"{world.hub_server.user}/base-{world.fresh}"
    experiment = yaml.safe_load((world.pipeline.config_dir / "experiments" / "alpha.yaml").read_text())
    experiment.update(base_model=repo, base_revision="main", runs_dir=str(tmp_path / "runs"))
    (tmp_path / "hub-base.yaml").write_text(yaml.safe_dump(experiment), encoding="utf-8")
    return ["train", "--experiment", str(tmp_path / "hub-base.yaml")], f"{repo}@main"


def evaluate_argv(tmp_path: Path, world: World, medqa: bool):
    base, medqa_id = (f"{world.hub_server.user}/{kind}-{world.fresh}" for kind in ("base", "medqa"))
    settings = [f"data_dir={world.pipeline.work / 'data' / 'processed'}", f"runs_dir={tmp_path / 'no-runs'}",
                f"output_dir={tmp_path / 'eval'}", "models=base", "limit=2", "max_new_tokens=2",
                f"base_model={base}", "base_revision=main"]
    settings += [f"medqa={medqa_id}", "medqa_revision=main"] if medqa else ["medqa=null"]
    argv = ["evaluate"] + [arg for setting in settings for arg in ("--set", setting)]
    return argv, f"{medqa_id}@main" if medqa else f"{base}@main"


def hub_argv(command: str, *extra: str):
    def build(tmp_path: Path, world: World):
        config_dir = write_hub_yaml(tmp_path / "configs", world.pipeline.work, world.hub_server.user,
                                    world.pipeline.suffix)
        first = world.pipeline.repos["dataset" if command == "push" else "space"]
        return [command, *extra, "--config-dir", str(config_dir)], first

    return build


COMMANDS = {
    "prepare-hub-source": Command("training", prepare_argv),
    "train-hub-base": Command("training", train_argv),
    "evaluate-medqa-download": Command("training", lambda tmp, world: evaluate_argv(tmp, world, medqa=True)),
    "evaluate-hub-base": Command("training", lambda tmp, world: evaluate_argv(tmp, world, medqa=False)),
    "push-check": Command("hub", hub_argv("push", "--check")),
    "push": Command("hub", hub_argv("push")),
    "deploy-space": Command("hub", hub_argv("deploy-space")),
}


@pytest.fixture
def world(hub_server, cli_pipeline, tiny_base, monkeypatch) -> World:
    import uuid

    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)
    return World(hub_server, cli_pipeline, tiny_base, uuid.uuid4().hex[:8])


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_fails_in_one_line_naming_the_repo(command, condition, world, quick_clock, tmp_path,
                                                         monkeypatch):
    make_condition, happened = CONDITIONS[condition]
    argv, target = COMMANDS[command].build(tmp_path, world)
    with make_condition(monkeypatch, world.hub_server):
        code, _, stderr = run_in_process(COMMANDS[command].package, *argv)
    line = check_one_line_error(code, stderr, EXIT_HUB, happened)
    assert target in line, line
    assert world.hub_server.write_token not in stderr


# ---- beyond the matrix ------------------------------------------------------------------------------

def test_prepare_with_a_closed_hub_endpoint_in_a_fresh_process(tmp_path, tiny_base, hub_server):
    """The issue's report, exactly: HF_ENDPOINT at a closed port, a new process, `python -m training prepare`."""
    from reliability_support import cli

    config = {"source": "medalpaca/medical_meadow_medical_flashcards", "revision": None,
              "tokenizer": str(tiny_base), "tokenizer_revision": None, "output_dir": str(tmp_path / "out")}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = cli("training", "prepare", "--config", tmp_path / "data.yaml",
                 env={"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(tmp_path / "hf")})
    line = check_one_line_error(result.returncode, result.stderr, EXIT_HUB, "connection refused")
    assert "medalpaca/medical_meadow_medical_flashcards@main" in line


@pytest.fixture
def cached_repos(hub_server, tiny_base, monkeypatch, tmp_path):
    """A flashcards dataset, a base model and a MedQA dataset, each downloaded once (so cached)."""
    import uuid

    from datasets import Dataset
    from huggingface_hub import HfApi

    from training.medqa import load_questions
    from training.sources import read_hub
    from training.preflight import hub_model_problem

    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)
    suffix = uuid.uuid4().hex[:8]
    api = HfApi(token=hub_server.write_token)
    cards, base, medqa = (f"{hub_server.user}/{kind}-{suffix}" for kind in ("cards", "base", "medqa"))
    api.create_repo(cards, repo_type="dataset")
    rows = "".join(json.dumps({"question": f"What is finding {n}?", "answer": f"Finding {n} is a sign of "
                                                                               f"condition {n}."}) + "\n"
                   for n in range(30))
    api.upload_file(path_or_fileobj=rows.encode(), path_in_repo="cards.jsonl", repo_id=cards, repo_type="dataset")
    api.create_repo(base)
    api.upload_file(path_or_fileobj=(tiny_base / "config.json").read_bytes(), path_in_repo="config.json",
                    repo_id=base)
    Dataset.from_list([MEDQA_ROW]).push_to_hub(medqa, split="test", token=hub_server.write_token)
    read_hub(cards, None)
    assert hub_model_problem(base, "main") is None
    load_questions(medqa, split="test", revision="main")
    return cards, base, medqa


def test_offline_with_a_cached_copy_works(cached_repos, quick_clock, monkeypatch, tmp_path):
    from training.medqa import load_questions, source_record
    from training.sources import read_hub
    from training.preflight import hub_model_problem

    cards, base, medqa = cached_repos
    hub_model_problem.cache_clear()
    with offline(monkeypatch, None):
        assert len(read_hub(cards, None).questions) == 30
        assert hub_model_problem(base, "main") is None
        assert source_record(medqa, "test", "main")["revision"]
        assert load_questions(medqa, split="test", revision="main")[0]["answer_idx"] == "B"


def test_hub_down_with_a_cached_copy_still_prepares(cached_repos, quick_clock, monkeypatch):
    from training.sources import read_hub

    cards, _, _ = cached_repos
    with refused(monkeypatch, None):
        assert len(read_hub(cards, None).questions) == 30


def test_verification_that_cannot_reach_the_hub_is_one_line_naming_the_revision(hub_server, quick_clock,
                                                                                  monkeypatch):
    from hub.verify import verify_revision
    from common.errors import VerificationError

    repo, revision = f"{hub_server.user}/adapter-unreached", "0123456789abcdef0123456789abcdef01234567"
    with refused(monkeypatch, hub_server), pytest.raises(VerificationError) as caught:
        verify_revision(repo, revision, f"{hub_server.user}/base-unreached", None, hub_server.write_token)
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_VERIFY and "\n" not in message
    assert f"{repo}@{revision[:12]} failed verification, not promoted (connection refused" in message


def test_demo_base_upload_fails_in_one_line(hub_server, quick_clock, monkeypatch):
    from offline import demo

    monkeypatch.setattr(os, "environ", dict(os.environ))  # upload_base exports the demo's Hub environment
    with refused(monkeypatch, hub_server), pytest.raises(HubError) as caught:
        demo.upload_base({"HF_TOKEN": hub_server.write_token}, f"{hub_server.user}/demo-base")
    assert re.match(rf"cannot upload the base model to {hub_server.user}/demo-base@main: connection refused",
                    str(caught.value))


# ---- a dataset commit that races another one (412) ----------------------------------------------------

def fresh_dataset_push(world: World, tmp_path: Path) -> tuple[Path, str]:
    """A hub.yaml whose dataset repo is new (so its commits really happen); the pushed adapter repo as before."""
    config_dir = write_hub_yaml(tmp_path / "configs", world.pipeline.work, world.hub_server.user,
                                world.pipeline.suffix, dataset_repo=f"data-{world.fresh}")
    return config_dir, f"{world.hub_server.user}/data-{world.fresh}"


def dataset_commits(repo: str, **rule) -> list[dict]:
    return [{"method": "POST", "path": f"^/api/datasets/{re.escape(repo)}/commit/", "action": "status",
             "status": 412, **rule}]


def test_dataset_push_retries_a_412_from_a_concurrent_commit(world, quick_clock, tmp_path):
    from huggingface_hub import HfApi

    config_dir, repo = fresh_dataset_push(world, tmp_path)
    faults(world.hub_server, "POST", dataset_commits(repo, times=2))  # the splits' commit, then its retry
    try:
        code, out, err = run_in_process("hub", "push", "--config-dir", str(config_dir))
        left = faults(world.hub_server, "GET")["rules"]
    finally:
        faults(world.hub_server, "DELETE")
    assert code == 0, err[-3000:]
    assert left == []  # both 412s were answered, and the push went through them
    files = set(HfApi().list_repo_files(repo, repo_type="dataset"))
    assert "README.md" in files and any(name.endswith(".parquet") for name in files)


def test_dataset_push_that_keeps_losing_the_race_is_one_line(world, quick_clock, tmp_path):
    config_dir, repo = fresh_dataset_push(world, tmp_path)
    faults(world.hub_server, "POST", dataset_commits(repo))
    try:
        code, _, err = run_in_process("hub", "push", "--config-dir", str(config_dir))
    finally:
        faults(world.hub_server, "DELETE")
    line = check_one_line_error(code, err, EXIT_HUB, "another commit changed the branch at the same time (HTTP 412)")
    assert f"{repo}@main" in line


# ---- the mapping itself ---------------------------------------------------------------------------------

def test_errors_that_are_not_the_hubs_keep_their_traceback():
    from common.hub_errors import hub_errors

    with pytest.raises(KeyError):
        with hub_errors("tester/x", "main", "cannot read"):
            raise KeyError("a bug")


def test_tokens_never_reach_the_line():
    from common.hub_errors import redact

    assert redact("Bearer hf_abcdefghijklmnop failed") == "Bearer hf_*** failed"
