"""Provenance of a copy of the tree without its .git (the GPU machine's): the commit it was sent from."""
import json
import os
import shutil
import subprocess
import sys

from training.config import REPO_ROOT
from training.provenance import SENT_FROM_ENV, code_commit


def run_in_copy(tmp_path, sent_from=None):
    """code_commit() in a copy of the packages outside any git checkout, with or without a sender's record."""
    copy = tmp_path / "tree"
    if not copy.exists():
        for package in ("training", "common"):
            shutil.copytree(REPO_ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != SENT_FROM_ENV}
    env.update(PYTHONPATH=str(copy), GIT_CEILING_DIRECTORIES=str(tmp_path))
    if sent_from:
        env[SENT_FROM_ENV] = str(sent_from)
    out = subprocess.run([sys.executable, "-c", "import json; from training.provenance import code_commit; "
                          "print(json.dumps(code_commit()))"], cwd=copy, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_a_copied_tree_records_the_commit_it_was_sent_from(tmp_path):
    # what bench/gpu_carry.py carries: code_commit() of the sending checkout (this one when it has its .git)
    here = code_commit()
    record = here if here["commit"] else {"commit": "3a615e66497ece156d6c8b41889881854bb40f76", "dirty": False}
    sent = tmp_path / "code.json"
    sent.write_text(json.dumps(record))
    assert run_in_copy(tmp_path, sent) == {**record, "copied_tree": True}


def test_a_copied_tree_without_a_record_says_it_does_not_know(tmp_path):
    assert run_in_copy(tmp_path) == {"commit": None, "dirty": None}
    assert run_in_copy(tmp_path, tmp_path / "absent.json") == {"commit": None, "dirty": None}
