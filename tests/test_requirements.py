"""Every package the shipped code imports is declared in requirements.txt (an install from it alone
must not meet an ImportError later, in the middle of a push)."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "training", "hub", "offline")  # space/ has its own requirements.txt (the Space build's)
PROJECT = {"common", "training", "hub", "offline", "space", "bench", "__future__"}
# llama.cpp's converter package, unpacked from the llama-cpp-python source package that
# requirements-llama-cpp.txt pins (training/export_runtime.py), not installed from an index
VENDORED = {"conversion"}
# Each file's packages are installed by `make setup`; llama.cpp's, built from source, has a file of its own.
REQUIREMENTS = ("requirements.txt", "requirements-llama-cpp.txt")


def imported_modules() -> dict[str, set[str]]:
    """top-level module -> files importing it (at module level or inside functions)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in PROJECT | VENDORED and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(path.relative_to(REPO_ROOT).as_posix())
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    text = "\n".join((REPO_ROOT / name).read_text(encoding="utf-8") for name in REQUIREMENTS)
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return {normalise(re.split(r"[<>=!~\[; ]", line)[0]) for line in lines if line}


def test_every_imported_package_is_declared():
    distributions = packages_distributions()
    missing = [f"{module} (imported by {', '.join(sorted(files))})" for module, files in sorted(imported_modules().items())
               if not {normalise(d) for d in distributions.get(module, [module])} & declared()]
    assert not missing, f"declare in {' or '.join(REQUIREMENTS)}: " + "; ".join(missing)


def test_the_hub_clients_http_stack_is_declared():
    assert {"httpx2", "httpcore2"} <= declared()
