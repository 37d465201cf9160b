"""Reading question/answer rows from a Hub dataset (at a revision) or a local file.

Local files: a JSON list of objects, JSON Lines, CSV (with a header) or Parquet. Columns are
`question`/`answer`, or medalpaca's `instruction`/`input`/`output` (question = input, answer =
output), or any names mapped with `columns`. Bad input raises DataError naming the file, the
line or row, and the problem.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from common.errors import ConfigError, DataError
from common.hub_errors import hub_errors
from common.hub_ids import is_hub_id
from training.provenance import sha256_file

FILE_FORMATS = (".json", ".jsonl", ".csv", ".parquet")
# Column pairs recognised without a `columns` mapping, in order of preference.
KNOWN_COLUMNS = ({"question": "question", "answer": "answer"}, {"input": "question", "output": "answer"})
# A flashcard is one flat object: deeper nesting is not data, and would exhaust the JSON parser's stack.
MAX_JSON_DEPTH = 32
# A number is read as text; one this long is not a flashcard (Python refuses ints over 4,300 digits anyway).
MAX_NUMBER_DIGITS = 100
_JSON_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


@dataclass
class SourceRows:
    """Rows read from one source, plus what the data report records about where they came from."""

    info: dict[str, Any]
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "<file>: line N" per row, for error messages


def read_source(spec: str, revision: str | None = None, columns: dict[str, str] | None = None) -> SourceRows:
    """A Hub dataset id (`owner/name`, not an existing path), else a local file."""
    if is_hub_id(spec, FILE_FORMATS):
        return read_hub(spec, revision, columns)
    return read_file(Path(spec), columns)


# ---- local files -------------------------------------------------------------------------
def read_file(path: Path, columns: dict[str, str] | None = None) -> SourceRows:
    if path.is_dir() or path.suffix.lower() not in FILE_FORMATS:
        raise DataError(f"{path}: unknown format '{path.suffix or path.name}' (expected {', '.join(FILE_FORMATS)})")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    records = _parquet_records(path) if suffix == ".parquet" else _text_records(path, suffix)
    rows = SourceRows({"type": "file", "path": str(path), "sha256": sha256_file(path)})
    mapping = None
    for where, record in records:
        if mapping is None:
            mapping = resolve_columns(list(record), columns, str(path))
        question, answer = _pick(record, mapping, f"{path}: {where}")
        rows.questions.append(question)
        rows.answers.append(answer)
        rows.where.append(f"{path}: {where}")
    if mapping is None:
        raise DataError(f"{path}: no rows")
    return rows


def _text_records(path: Path, suffix: str) -> Iterator[tuple[str, dict]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: undecodable bytes, not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if suffix == ".json":
        return _json_records(path, text)
    if suffix == ".jsonl":
        return _jsonl_records(path, text)
    return _csv_records(path, text)


def _bounded_json(text: str, path: Path, line: int | None = None) -> Any:
    """json.loads with nesting at most MAX_JSON_DEPTH and numbers of at most MAX_NUMBER_DIGITS digits;
    `line` is the file line `text` starts at (JSON Lines), None for a whole file."""
    def at(offset: int) -> str:
        return f"line {(line or 1) + text.count(chr(10), 0, offset)}"

    depth = 0
    for token in _JSON_STRING_OR_BRACKET.finditer(text):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(token.group(), 0)
        if depth > MAX_JSON_DEPTH:
            raise DataError(f"{path}: {at(token.start())}: JSON nested deeper than {MAX_JSON_DEPTH} levels "
                            "(expected objects with question/answer fields)")

    def number(digits: str, convert):
        if len(digits) > MAX_NUMBER_DIGITS:
            raise DataError(f"{path}: {at(max(text.find(digits), 0))}: a number of {len(digits):,} characters "
                            f"(at most {MAX_NUMBER_DIGITS}); quote it if it is text")
        return convert(digits)

    return json.loads(text, parse_int=lambda s: number(s, int), parse_float=lambda s: number(s, float))


def _json_records(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    try:
        data = _bounded_json(text, path)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__} (JSON Lines files end in .jsonl)")
    for number, record in enumerate(data, 1):
        yield f"row {number}", _as_object(record, path, f"row {number}")


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = _bounded_json(line, path, number)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        yield f"line {number}", _as_object(record, path, f"line {number}")


def _csv_records(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        for record in reader:
            if None in record:  # more cells than header names
                raise DataError(f"{path}: line {reader.line_num}: more values than the header has columns")
            yield f"line {reader.line_num}", record
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None


def _parquet_records(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    for number, record in enumerate(table.to_pylist(), 1):
        yield f"row {number}", record


def _as_object(record: Any, path: Path, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where}: expected an object with question/answer fields, got {type(record).__name__}")
    return record


# ---- columns -----------------------------------------------------------------------------
def resolve_columns(found: list[str], columns: dict[str, str] | None, where: str) -> dict[str, str]:
    """Map source column -> question/answer: the user's mapping, else a known pair."""
    if columns:
        if sorted(columns.values()) != ["answer", "question"]:
            raise DataError(f"{where}: `columns` must map one source column to question and one to answer, got {columns}")
        missing = [name for name in columns if name not in found]
        if missing:
            raise DataError(f"{where}: missing columns {', '.join(missing)} (found: {', '.join(found) or 'none'})")
        return dict(columns)
    for known in KNOWN_COLUMNS:
        if all(name in found for name in known):
            return dict(known)
    raise DataError(
        f"{where}: missing columns: need question/answer or input/output, or set `columns` "
        f"(found: {', '.join(found) or 'none'})"
    )


def _pick(record: dict, mapping: dict[str, str], where: str) -> tuple[str, str]:
    values = {}
    for source_name, target in mapping.items():
        if source_name not in record:
            raise DataError(f"{where}: missing column '{source_name}' (found: {', '.join(record) or 'none'})")
        values[target] = _as_text(record[source_name], where, source_name)
    return values["question"], values["answer"]


def _as_text(value: Any, where: str, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # empty cells (None, or NaN from pandas-written files) are dropped by cleaning, and counted there
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: column '{name}' holds {type(value).__name__}, expected text")


# ---- Hub ---------------------------------------------------------------------------------
def read_hub(repo_id: str, revision: str | None, columns: dict[str, str] | None = None) -> SourceRows:
    """Every split of a Hub dataset at `revision`, recorded with the commit it resolved to."""
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError

    action, missing = "cannot download dataset", "no such local file, and not found on the Hub (or no read access)"
    try:
        with hub_errors(repo_id, revision, action, missing=missing, also=(OSError,)):
            # The commit, from the Hub or (offline, Hub down) the local cache: the report names what was read.
            commit = HfApi().resolve_revision(repo_id, repo_type="dataset", revision=revision).resolved
            loaded = datasets.load_dataset(repo_id, revision=commit)
    except HFValidationError:
        raise ConfigError(f"source '{repo_id}': neither an existing local file nor a valid Hub dataset id "
                          "(namespace/name)") from None
    rows = SourceRows({"type": "hub", "id": repo_id, "revision": commit, "requested_revision": revision})
    where = f"dataset {repo_id}@{revision}"
    for split, dataset in loaded.items():
        mapping = resolve_columns(dataset.column_names, columns, f"{where} split {split}")
        by_target = {target: name for name, target in mapping.items()}
        for number, (question, answer) in enumerate(
            zip(dataset[by_target["question"]], dataset[by_target["answer"]]), 1
        ):
            rows.questions.append(_as_text(question, f"{where} split {split} row {number}", by_target["question"]))
            rows.answers.append(_as_text(answer, f"{where} split {split} row {number}", by_target["answer"]))
    if not rows.questions:
        raise DataError(f"{where}: no rows")
    return rows
