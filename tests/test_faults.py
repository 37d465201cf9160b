"""Faults: the Hub failing under `hub push`, a push killed mid-way, a full or unwritable disk.

Hub faults are injected into the local Hub server (`POST /_local/faults`) while `hub push`
republishes the CLI pipeline's artifacts (tests/reliability_support.py) with slightly changed
adapter weights, so that every case really uploads and commits. The rule: a push either
completes after retries, or leaves every ref it could not finish at its previous commit, and
`main` / `best-<N>` only ever point at a revision that passed verification.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from reliability_support import (
    EXPERIMENT, REPO_ROOT, check_one_line_error, faults, run_hub, run_in_process, write_hub_yaml,
)
from common.atomic import OWNER_MARKER
from common.errors import EXIT_ENV, EXIT_HUB, EXIT_VERIFY

BRANCH = f"exp/{EXPERIMENT}"
WEIGHTS = "adapter_model.safetensors"


# Faults the client rides out: all of them are injected into one push, which must still complete.
RETRIED_FAULTS = {
    "503-on-preupload-twice": {"method": "POST", "path": "^/api/models/{adapter}/preupload/", "action": "status",
                               "status": 503, "times": 2},
    "connection-dropped-mid-lfs-upload": {"method": "PUT", "path": "^/_local/lfs/", "action": "drop", "times": 1},
    "500-on-lfs-upload-once": {"method": "PUT", "path": "^/_local/lfs/", "action": "status", "status": 500, "times": 1},
    "slow-downloads-during-verification": {"method": "GET", "path": "^/{adapter}/resolve/", "action": "delay",
                                           "seconds": 1.0, "times": 3},
}

# Faults that last: the push must fail in one line and move nothing it did not finish and verify.
FAILING_FAULTS = {
    "500-on-every-commit": ({"method": "POST", "path": "^/api/models/{adapter}/commit/", "action": "status",
                             "status": 500}, EXIT_HUB),
    "connection-dropped-on-every-commit": ({"method": "POST", "path": "^/api/models/{adapter}/commit/",
                                            "action": "drop"}, EXIT_HUB),
    "403-on-lfs-upload": ({"method": "PUT", "path": "^/_local/lfs/", "action": "status", "status": 403}, EXIT_HUB),
    "verification-download-fails": ({"method": "GET", "path": "^/{adapter}/resolve/", "action": "status",
                                     "status": 500}, EXIT_VERIFY),
}


# ---- helpers -----------------------------------------------------------------------------------

@contextlib.contextmanager
def injected(hub_server, rules: list[dict]):
    faults(hub_server, "POST", rules)
    try:
        yield
    finally:
        faults(hub_server, "DELETE")


def refs(repo: str) -> dict:
    from huggingface_hub import HfApi

    found = HfApi().list_repo_refs(repo)
    return {"branches": {b.name: b.target_commit for b in found.branches},
            "tags": {t.name: t.target_commit for t in found.tags}}


def read_at(repo: str, revision: str, filename: str) -> bytes:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, filename, revision=revision)).read_bytes()


def tweaked_runs(source: Path, dest: Path, seed: int) -> Path:
    """A copy of runs/ whose adapter weights differ slightly (still a valid adapter): a real change to push."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    generator = torch.Generator().manual_seed(seed)
    for weights in dest.glob(f"*/adapter/{WEIGHTS}"):
        tensors = load_file(weights)
        save_file({k: v + 1e-3 * torch.randn(v.shape, generator=generator) for k, v in tensors.items()}, weights,
                  metadata={"format": "pt"})
    return dest


@pytest.fixture
def changed_push(cli_pipeline, hub_server, tmp_path, monkeypatch, request):
    """A hub.yaml for the pipeline's repositories with changed weights; returns (config dir, weights bytes)."""
    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)
    runs = tweaked_runs(cli_pipeline.work / "runs", tmp_path / "runs", seed=zlib.crc32(request.node.name.encode()))
    config_dir = write_hub_yaml(tmp_path / "configs", cli_pipeline.work, hub_server.user, cli_pipeline.suffix,
                                runs_dir=str(runs))
    return config_dir, (runs / EXPERIMENT / "adapter" / WEIGHTS).read_bytes()


def assert_promoted(adapter: str, before: dict, weights: bytes) -> None:
    """The branch holds the new weights; main is that verified revision and carries a new best-<N> tag."""
    after = refs(adapter)
    branch_head, main = after["branches"][BRANCH], after["branches"]["main"]
    assert branch_head != before["branches"][BRANCH] and read_at(adapter, branch_head, WEIGHTS) == weights
    assert read_at(adapter, main, WEIGHTS) == weights
    assert json.loads(read_at(adapter, main, "experiments.json"))["verified_revision"] == branch_head
    new_tags = {name: sha for name, sha in after["tags"].items() if name not in before["tags"]}
    assert list(new_tags.values()) == [main], after


# ---- Hub faults during `hub push` ----------------------------------------------------------------

def for_repo(rule: dict, adapter: str) -> dict:
    return {**rule, "path": rule["path"].replace("{adapter}", re.escape(adapter))}


@pytest.mark.slow
def test_push_rides_out_transient_faults(cli_pipeline, hub_server, changed_push):
    config_dir, weights = changed_push
    adapter = cli_pipeline.repos["adapter"]
    before = refs(adapter)
    with injected(hub_server, [for_repo(rule, adapter) for rule in RETRIED_FAULTS.values()]):
        code, output = run_hub("push", "--config-dir", str(config_dir))
        left = faults(hub_server, "GET")["rules"]
    assert code == 0, output
    assert left == []  # every fault really fired, and the push went through them
    assert_promoted(adapter, before, weights)


@pytest.mark.slow
@pytest.mark.parametrize("case", FAILING_FAULTS)
def test_failed_push_moves_nothing_unfinished_or_unverified(case, cli_pipeline, hub_server, changed_push):
    config_dir, weights = changed_push
    adapter = cli_pipeline.repos["adapter"]
    rule, exit_code = FAILING_FAULTS[case]
    before = refs(adapter)
    with injected(hub_server, [for_repo(rule, adapter)]):
        code, output = run_hub("push", "--config-dir", str(config_dir))
    after = refs(adapter)

    check_one_line_error(code, output, exit_code, adapter)
    assert cli_pipeline.token not in output and hub_server.write_token not in output
    assert after["tags"] == before["tags"] and after["branches"]["main"] == before["branches"]["main"]
    if exit_code == EXIT_HUB:  # the commit never landed: every branch where it was
        assert after == before
    else:  # the branch commit landed whole, but was not promoted
        assert read_at(adapter, after["branches"][BRANCH], WEIGHTS) == weights
        assert "failed verification, not promoted" in output


@pytest.mark.slow
def test_failed_tag_after_promotion_is_completed_by_the_next_push(cli_pipeline, hub_server, changed_push):
    """main moved to a verified revision but tagging failed: re-running the push adds the missing tag."""
    config_dir, weights = changed_push
    adapter = cli_pipeline.repos["adapter"]
    before = refs(adapter)
    with injected(hub_server, [{"method": "POST", "path": f"^/api/models/{re.escape(adapter)}/tag/",
                                "action": "status", "status": 500}]):
        code, output = run_hub("push", "--config-dir", str(config_dir))
    check_one_line_error(code, output, EXIT_HUB, "cannot tag")
    assert refs(adapter)["tags"] == before["tags"]
    code, output = run_hub("push", "--config-dir", str(config_dir))
    assert code == 0, output
    assert_promoted(adapter, before, weights)


KILL_DELAY_S = 20


@pytest.mark.slow
def test_push_killed_mid_way_then_rerun_completes(cli_pipeline, hub_server, changed_push):
    """SIGKILL while `python -m hub push` waits on a slow Hub; the re-run (no faults) finishes the job."""
    config_dir, weights = changed_push
    adapter = cli_pipeline.repos["adapter"]
    before = refs(adapter)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    slow = {"method": "POST", "path": f"^/api/models/{re.escape(adapter)}/preupload/", "action": "delay",
            "seconds": KILL_DELAY_S, "times": 1}
    with injected(hub_server, [slow]):
        push = subprocess.Popen([sys.executable, "-m", "hub", "push", "--config-dir", str(config_dir)], cwd=REPO_ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while faults(hub_server, "GET")["rules"] and push.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)  # the rule disappears when the push reaches it: it is now stuck mid-way
            assert push.poll() is None, f"push ended before the slow call: {push.stderr.read()[-2000:]}"
            push.send_signal(signal.SIGKILL)
        finally:
            push.kill()
            stderr = push.communicate(timeout=60)[1]
    assert push.returncode == -signal.SIGKILL, stderr[-2000:]
    assert refs(adapter) == before  # killed before its commit: nothing moved

    code, output = run_hub("push", "--config-dir", str(config_dir))
    assert code == 0, output
    assert_promoted(adapter, before, weights)


# ---- training and data on a full or unwritable disk -----------------------------------------------

@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A tiny tmpfs at `folder` (needs root and mount); skips the test where that is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                             text=True) if shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() if mounted else 'no mount command'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


DISK_CASES = ["runs-dir-on-full-disk", "runs-dir-read-only", "runs-dir-under-a-file", "prepare-output-on-full-disk"]


@pytest.mark.parametrize("case", DISK_CASES)
def test_full_or_unwritable_disk_is_one_line_before_work_starts(case, cli_pipeline, tmp_path):
    experiment = cli_pipeline.config_dir / "experiments" / f"{EXPERIMENT}.yaml"
    previous = tmp_path / "disk" / "processed"
    stack = contextlib.ExitStack()
    with stack:
        if case == "prepare-output-on-full-disk":
            stack.enter_context(tmpfs(tmp_path / "disk", "size=16k"))
            previous.mkdir()
            (previous / "keep.txt").write_text("previous output")
            (previous / OWNER_MARKER).write_text("an earlier output of prepare\n")  # so prepare may replace it
            argv = ["prepare", "--config", str(cli_pipeline.config_dir / "data.yaml"), "--set", f"output_dir={previous}"]
            expected, fragment = EXIT_ENV, "No space left on device"
        else:
            if case == "runs-dir-on-full-disk":
                runs = stack.enter_context(tmpfs(tmp_path / "disk", "size=1m")) / "runs"
                fragment = "MiB free"
            elif case == "runs-dir-read-only":
                runs = stack.enter_context(tmpfs(tmp_path / "disk", "ro,size=1m")) / "runs"
                fragment = "Read-only file system"
            else:
                (tmp_path / "a-file").write_text("not a folder")
                runs, fragment = tmp_path / "a-file" / "runs", "Not a directory"
            argv = ["train", "--experiment", str(experiment), "--set", f"runs_dir={runs}"]
            expected = EXIT_ENV
        code, stdout, stderr = run_in_process("training", *argv)
        check_one_line_error(code, stderr, expected, fragment)
        if case == "prepare-output-on-full-disk":
            assert sorted(p.name for p in previous.iterdir()) == [OWNER_MARKER, "keep.txt"]  # survives whole
            assert sorted(p.name for p in previous.parent.iterdir()) == ["processed"]  # no temp folder left
        else:
            assert "resuming" not in stdout and not list(Path(tmp_path).rglob("checkpoint-*"))  # refused up front
