"""The Hub token never leaves the environment.

The whole pipeline ran through the CLIs (prepare -> train -> evaluate -> push -> deploy-space,
tests/reliability_support.py) with a recognisable token in HF_TOKEN. It must appear in no
step's output, no server log line, no local artifact, no file of any branch or tag of any
pushed repository, no Space variable, and no error message.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from reliability_support import SECRET_PREFIX, run_hub

pytestmark = pytest.mark.slow


def files_holding(secret: str, *roots: Path) -> list[str]:
    needle = secret.encode()
    return [str(p) for root in roots if root.exists() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_token_is_in_no_output_and_no_server_log(cli_pipeline):
    assert cli_pipeline.token.startswith(SECRET_PREFIX)
    assert set(cli_pipeline.outputs) == {"prepare", "train", "evaluate", "push", "deploy-space", "hub server log"}
    assert "/api/whoami-v2 200" in cli_pipeline.outputs["hub server log"]  # the log was really captured
    leaked = [step for step, text in cli_pipeline.outputs.items() if cli_pipeline.token in text]
    assert leaked == []


def test_token_is_in_no_local_artifact_or_cache(cli_pipeline):
    """data/, runs/ (checkpoints, provenance, tensorboard), eval/, configs, and the Hub client cache."""
    assert files_holding(cli_pipeline.token, cli_pipeline.work, Path(os.environ["HF_HOME"])) == []
    assert (cli_pipeline.work / "runs" / "alpha" / "provenance.json").is_file()  # the tree really is there


def test_token_is_in_no_pushed_file_of_any_branch_or_tag(cli_pipeline, hub_server, tmp_path):
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(token=hub_server.write_token)
    downloaded = 0
    for kind, repo in cli_pipeline.repos.items():
        refs = api.list_repo_refs(repo, repo_type=kind if kind != "adapter" else None)
        for ref in [*refs.branches, *refs.tags]:
            folder = Path(snapshot_download(repo, repo_type=kind if kind != "adapter" else None,
                                            revision=ref.target_commit, local_dir=tmp_path / kind / ref.ref,
                                            token=hub_server.write_token))
            downloaded += sum(1 for p in folder.rglob("*") if p.is_file())
    assert downloaded > 20  # dataset splits and card, adapter branch / main / tag, Space files
    assert files_holding(cli_pipeline.token, tmp_path) == []
    stored = [p for p in Path(hub_server.data_dir).rglob("*") if p.is_file() and p.name != "tokens.json"]
    assert stored and files_holding(cli_pipeline.token, *stored) == []
    variables = api.get_space_variables(cli_pipeline.repos["space"])
    assert variables and all(cli_pipeline.token not in v.value for v in variables.values())


def test_token_is_in_no_error_message(cli_pipeline, hub_server, monkeypatch):
    """Failures that involve the token: no write access to a namespace, and a token the Hub rejects."""
    config_dir = str(cli_pipeline.config_dir)
    monkeypatch.setenv("HF_TOKEN", cli_pipeline.token)
    code, output = run_hub("deploy-space", "--config-dir", config_dir, "--set", "namespace=someone-else")
    assert code == 4 and "cannot write to 'someone-else'" in output and cli_pipeline.token not in output

    rejected = f"{SECRET_PREFIX}_not_registered_0123456789"
    monkeypatch.setenv("HF_TOKEN", rejected)
    code, output = run_hub("push", "--config-dir", config_dir)
    assert code == 4 and "invalid or expired" in output and rejected not in output
