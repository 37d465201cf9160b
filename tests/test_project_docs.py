"""The README tells the truth about the Makefile, and `make help` covers every target."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text()
MAKEFILE = (REPO_ROOT / "Makefile").read_text()

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def make(*args: str) -> str:
    # -o: treat the virtual environment as up to date, so a dry run prints only the target's own commands.
    result = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def phony_targets() -> list[str]:
    line = re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.M).group(1)
    return line.split()


def test_quick_start_is_two_make_commands_that_exist():
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    for command in commands:
        assert command.split()[1] in phony_targets()


def test_readme_command_table_matches_what_make_runs():
    rows = re.findall(r"^\| `make (\S+)` \| `(.+?)` \|$", README, re.M)
    assert len(rows) >= 8
    for target, command in rows:
        ran = make("-n", target).replace(".venv/bin/python", "python")
        assert command in ran.splitlines(), f"README says `make {target}` runs `{command}`; make runs:\n{ran}"


def test_make_help_lists_every_target_with_one_line():
    listed = dict(re.findall(r"^  make (\S+)\s+(.+)$", make("help"), re.M))
    assert sorted(listed) == sorted(phony_targets())
    assert all(len(text) > 10 for text in listed.values())


def test_train_checks_hub_access_first_when_push_follows():
    ran = make("-n", "train", "push").splitlines()
    check = ran.index(".venv/bin/python -m hub push --check --config-dir configs")
    first_work = next(i for i, line in enumerate(ran) if "-m training prepare" in line)
    assert check < first_work
