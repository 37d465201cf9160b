"""RELIABILITY.md's table says how many cases each class has: the numbers must be the tests' own."""
from __future__ import annotations

import re
from pathlib import Path

from test_bad_inputs import CHAT_CASES, CONFIG_CASES, DATA_CASES, HUB_CASES
from test_data_safety import INPUT_LIMIT_CASES, OWNERSHIP_CASES, PRECHECK_CASES, PUSH_DISK_CASES
from test_faults import DISK_CASES, FAILING_FAULTS, RETRIED_FAULTS

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS = REPO_ROOT / "tests"

COUNTED = {  # table row -> the case list it summarises
    "Bad datasets": DATA_CASES,
    "Bad configs": CONFIG_CASES,
    "Bad repo ids, revisions and tokens": HUB_CASES,
    "Hostile chat input": CHAT_CASES,
    "Hub faults ridden out": RETRIED_FAULTS,
    "Hub faults that persist": FAILING_FAULTS,
    "Full or unwritable disk": DISK_CASES,
    "Output folders this project did not write": OWNERSHIP_CASES,
    "Values the trainer would reject": PRECHECK_CASES,
    "Input limits and where the error is": INPUT_LIMIT_CASES,
    "Full disk or TMPDIR while pushing": PUSH_DISK_CASES,
}


def table_rows() -> dict[str, tuple[int, str]]:
    """Row label -> (cases, tests cell)."""
    rows = {}
    for line in (REPO_ROOT / "RELIABILITY.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].isdigit():
            rows[cells[0].strip("`")] = (int(cells[1]), cells[3])
    return rows


def test_counts_match_the_parametrised_cases():
    rows = table_rows()
    assert {label: rows[label][0] for label in COUNTED} == {label: len(cases) for label, cases in COUNTED.items()}


def test_every_other_row_names_tests_that_exist():
    rows = table_rows()
    for label, (count, where) in rows.items():
        if label in COUNTED:
            continue
        named = re.findall(r"tests/(test_\w+\.py)(?:::(test_\w+))?", where)
        assert named, f"row {label!r} names no test"
        for filename, function in named:
            source = (TESTS / filename).read_text(encoding="utf-8")
            if function:
                assert f"def {function}(" in source, f"{filename}::{function} does not exist"
            else:  # a whole file: one test function per case
                assert len(re.findall(r"^def test_", source, re.MULTILINE)) == count, label


def test_bad_input_corpus_has_at_least_thirty_cases():
    assert sum(len(COUNTED[label]) for label in ("Bad datasets", "Bad configs", "Bad repo ids, revisions and tokens",
                                                  "Hostile chat input")) >= 30
