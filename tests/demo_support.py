"""Running `python -m offline demo` in a throwaway copy of the repo, so a test or benchmark never
touches the developer's own artifacts/ folder."""
from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_TREE = ("common", "training", "hub", "offline", "space", "configs")


def copy_repo(dest: Path) -> Path:
    """The code and configs the demo runs on; nothing generated."""
    for name in DEMO_TREE:
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
