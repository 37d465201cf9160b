"""What made an artifact: code commit, library versions, hardware, file hashes."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from training.config import REPO_ROOT

LIBRARIES = (
    "torch", "transformers", "peft", "trl", "accelerate", "datasets", "huggingface_hub",
    "tokenizers", "bitsandbytes", "sacrebleu", "rouge-score", "gradio", "gguf",
)


# A model folder's weights (tokenizer, config and card files may be rewritten without changing them).
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def base_model_record(base: str, revision: str | None) -> dict[str, Any]:
    """Which base weights a run used: a Hub id at its revision (a commit pins them), or a local folder with
    the sha256 of its weight files (export refuses to merge into other weights)."""
    from common.hub_ids import is_hub_id

    record: dict[str, Any] = {"id": base, "revision": revision}
    if not is_hub_id(base):
        weights = sorted(p for pattern in WEIGHT_FILES for p in Path(base).glob(pattern) if p.is_file())
        record["weights_sha256"] = {p.name: sha256_file(p) for p in weights}
    return record


# A copy of the tree without its .git (what the GPU machine runs) names the commit it was copied from in the
# file this variable points to: code_commit()'s record, written by the checkout that sent the copy.
SENT_FROM_ENV = "CODE_COMMIT_FILE"


def code_commit() -> dict[str, Any]:
    """The git commit of this checkout, and whether it had uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return sent_from()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return sent_from()


def sent_from() -> dict[str, Any]:
    """Outside a git checkout: the commit a copy of the tree was sent from, where its sender recorded one."""
    try:
        record = json.loads(Path(os.environ[SENT_FROM_ENV]).read_text())
        return {"commit": record["commit"], "dirty": record["dirty"], "copied_tree": True}
    except (KeyError, OSError, ValueError, TypeError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    # Only an artifact made with torch can have used a GPU; importing it here just to ask would cost
    # `prepare` (which never loads torch) seconds.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info


def stamp() -> dict[str, Any]:
    """Provenance common to every artifact."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": code_commit(),
        "versions": library_versions(),
        "hardware": hardware(),
    }

