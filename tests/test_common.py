"""common/: the shared kernel (errors, atomic writes, the CLI runner, the Hub-error mapping, Hub id or
path) depends on no other package of the project, and the local Hub server needs nothing of training."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.hub_ids import is_hub_id

REPO_ROOT = Path(__file__).resolve().parent.parent


def project_imports(folder: Path) -> dict[str, set[str]]:
    """file -> top-level project packages it imports (at module level or inside functions)."""
    found = {}
    for path in sorted(folder.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[path.relative_to(REPO_ROOT).as_posix()] = names & {"common", "training", "hub", "space", "bench"}
    return found


@pytest.mark.parametrize("folder, allowed", [("common", {"common"}), ("offline/server", {"common", "offline"})])
def test_the_kernel_and_the_hub_server_import_no_training(folder, allowed):
    imports = project_imports(REPO_ROOT / folder)
    assert imports and {path: names - allowed for path, names in imports.items() if names - allowed} == {}


@pytest.mark.parametrize("name, hub_id", [
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", True),  # a dot in the name is no file suffix
    ("GBaker/MedQA-USMLE-4-options", True),
    ("./models/base", False), ("../base", False), (".cache/base", False), ("/abs/base", False),
    ("~/base", False), ("runs/exp1/adapter", False),  # more than owner/name: a path
    ("gpt2", False),  # no owner: a local folder name
    ("owner/flashcards.json", False),  # a data file's suffix
    ("own er/name", False),
])
def test_hub_id_or_local_path(name, hub_id):
    assert is_hub_id(name, (".json", ".jsonl")) is hub_id


def test_an_existing_folder_is_local_even_shaped_like_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not is_hub_id("owner/name")
    assert is_hub_id("owner/other")
