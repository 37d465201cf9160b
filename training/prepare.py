"""`python -m training prepare`: read, clean, subsample, split and chat-format the flashcards.

Output (ARCHITECTURE.md, "data/processed/"): a DatasetDict with train/validation/test and
`data_report.json`. Rows sharing a normalised question form one group that lands in exactly
one split, so no test question is ever seen in training. The same input, config and seed give
byte-identical split files; the output folder is replaced in one rename, never half-written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
from pathlib import Path
from typing import Any

from common.atomic import check_replaceable, replace_dir, write_json_atomic
from common.errors import DataError
from common.yaml_config import load_config
from training.chat import format_examples
from training.clean import Row, clean_rows, clean_text, drop_reason
from training.config import CONFIG_DIR, DataConfig, dump
from training.layout import DATA_REPORT
from training.provenance import stamp
from training.sources import SourceRows, read_source
from training.tokenizer import load_tokenizer

SPLITS = ("train", "validation", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "data.yaml", help="DataConfig YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_examples=all --set output_dir=DIR (repeatable)")


def run(args: argparse.Namespace) -> int:
    config = load_config(DataConfig, args.config, args.overrides)
    import datasets

    datasets.disable_progress_bars()  # the summary table below says what happened
    report = prepare(config)
    print_summary(report, config.output_dir)
    return 0


def prepare(config: DataConfig) -> dict[str, Any]:
    """Run the whole pipeline and write `config.output_dir`; returns the data report."""
    check_replaceable(config.output_dir)  # before the work: a folder of the user's is refused, not replaced
    sources = [read_source(config.source, config.revision, config.columns)]
    sources += [read_source(spec, None, config.columns) for spec in config.extra_sources]
    questions = [q for source in sources for q in source.questions]
    answers = [a for source in sources for a in source.answers]

    rows, dropped = clean_rows(questions, answers, config.min_chars, config.max_chars)
    rows, over_limit = subsample(rows, config.max_examples, config.seed)
    dropped["over_max_examples"] = over_limit
    if not rows:
        raise DataError(f"{source_names(sources)}: no rows left after cleaning {len(questions)} input rows "
                        f"(dropped: {_nonzero(dropped)}): {first_drops(sources, config)}")
    try:
        splits = split_by_question(rows, config.split, config.seed)
    except DataError as exc:
        raise DataError(f"{source_names(sources)}: {exc}") from None

    tokenizer_revision = None if Path(config.tokenizer).is_dir() else config.tokenizer_revision  # a folder has none
    tokenizer = load_tokenizer(config.tokenizer, tokenizer_revision)
    records = {name: format_rows(tokenizer, config.system_prompt, split_rows) for name, split_rows in splits.items()}
    report = {
        "rows_in": len(questions),
        "rows_out": len(rows),
        "dropped": dict(dropped),
        "splits": {name: len(split_rows) for name, split_rows in splits.items()},
        "lengths": length_stats(tokenizer, rows),
        "sources": [source.info for source in sources],
        "seed": config.seed,
        "config": dump(config),
        "tokenizer": {"name": str(config.tokenizer), "revision": tokenizer_revision},
        "system_prompt": config.system_prompt,
        "fingerprint": fingerprint(records),
        "provenance": stamp(),
    }
    write_output(config.output_dir, records, report)
    return report


def source_names(sources: list[SourceRows]) -> str:
    return ", ".join(str(s.info.get("path") or f"dataset {s.info.get('id')}") for s in sources)


def row_locations(source: SourceRows) -> list[str]:
    """Where each row came from ("<file>: line N"); Hub rows by their number."""
    if len(source.where) == len(source.questions):
        return source.where
    return [f"{source_names([source])} row {n}" for n in range(1, len(source.questions) + 1)]


def first_drops(sources: list[SourceRows], config: DataConfig) -> str:
    """The first row dropped for each reason, so an error names the file and line (error path only)."""
    firsts: dict[str, str] = {}
    for source in sources:
        for where, question, answer in zip(row_locations(source), source.questions, source.answers):
            reason = drop_reason(clean_text(question), clean_text(answer), config.min_chars, config.max_chars)
            if reason and reason not in firsts:
                firsts[reason] = where
    return ", ".join(f"first {reason} at {where}" for reason, where in firsts.items()) or "no row dropped"


def subsample(rows: list[Row], max_examples: int | str, seed: int) -> tuple[list[Row], int]:
    """A seeded sample of question groups (independent of input order); returns (kept, dropped count)."""
    groups = shuffled_groups(rows, seed)
    flat = [row for group in groups for row in group]
    if max_examples == "all" or len(flat) <= max_examples:
        return flat, 0
    return flat[:max_examples], len(flat) - max_examples


def shuffled_groups(rows: list[Row], seed: int) -> list[list[Row]]:
    by_id: dict[str, list[Row]] = {}
    for row in rows:
        by_id.setdefault(row.id, []).append(row)
    groups = [sorted(by_id[key], key=lambda r: (r.answer, r.question)) for key in sorted(by_id)]
    random.Random(seed).shuffle(groups)
    return groups


def split_by_question(rows: list[Row], fractions: tuple[float, float, float], seed: int) -> dict[str, list[Row]]:
    """Whole question groups go to test, then validation, until each reaches its share; the rest train."""
    groups = shuffled_groups(rows, seed + 1)
    targets = {name: max(1, round(fraction * len(rows))) for name, fraction in zip(SPLITS, fractions)}
    splits: dict[str, list[Row]] = {name: [] for name in SPLITS}
    pending = iter(groups)
    for name in ("test", "validation"):
        while len(splits[name]) < targets[name] and (group := next(pending, None)):
            splits[name] += group
    splits["train"] = [row for group in pending for row in group]
    if not all(splits.values()):
        raise DataError(f"{len(rows)} rows with {len(groups)} distinct questions are too few to split "
                        f"{list(fractions)} by question (a split would be empty)")
    return splits


def format_rows(tokenizer, system_prompt: str, rows: list[Row]) -> list[dict[str, Any]]:
    formatted = format_examples(tokenizer, system_prompt, [(row.question, row.answer) for row in rows])
    return [{"id": row.id, "question": row.question, "answer": row.answer, **example}
            for row, example in zip(rows, formatted)]


def length_stats(tokenizer, rows: list[Row]) -> dict[str, Any]:
    """Characters and tokens (without special tokens) of questions and answers."""
    stats: dict[str, Any] = {}
    for name in ("question", "answer"):
        texts = [getattr(row, name) for row in rows]
        tokens = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        stats[name] = {"chars": summarise([len(t) for t in texts]), "tokens": summarise([len(t) for t in tokens])}
    return stats


def summarise(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 2),
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def fingerprint(records: dict[str, list[dict]]) -> str:
    digest = hashlib.sha256()
    for name in SPLITS:
        digest.update(name.encode())
        for record in records[name]:
            digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()


def write_output(output_dir: Path, records: dict[str, list[dict]], report: dict[str, Any]) -> None:
    """The DatasetDict and its report, swapped in whole: never half-written."""
    def fill(tmp: Path) -> None:
        to_dataset_dict(records, report["fingerprint"]).save_to_disk(str(tmp))
        write_json_atomic(tmp / DATA_REPORT, report)

    replace_dir(output_dir, fill)


def to_dataset_dict(records: dict[str, list[dict]], data_fingerprint: str):
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, DatasetInfo, Features, List, NamedSplit, Value
    from datasets.table import InMemoryTable

    features = Features({
        "id": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "messages": List({"role": Value("string"), "content": Value("string")}),
        "prompt": Value("string"),
        "completion": Value("string"),
    })
    splits = {}
    for name in SPLITS:
        table = pa.Table.from_pylist(records[name], schema=features.arrow_schema)
        # A fingerprint derived from the content (not a random one) keeps state.json byte-identical.
        split_fingerprint = hashlib.sha256(f"{data_fingerprint}:{name}".encode()).hexdigest()[:16]
        splits[name] = Dataset(InMemoryTable(table), info=DatasetInfo(features=features), split=NamedSplit(name),
                               fingerprint=split_fingerprint)
    return DatasetDict(splits)


def print_summary(report: dict[str, Any], output_dir: Path) -> None:
    tokens = report["lengths"]["answer"]["tokens"]
    lines = [
        f"rows in        {report['rows_in']:>8}",
        *(f"  dropped {reason:<17}{count:>6}" for reason, count in report["dropped"].items() if count),
        f"rows out       {report['rows_out']:>8}",
        *(f"  {name:<12}{count:>10}" for name, count in report["splits"].items()),
        f"answer tokens  median {tokens['median']}, p95 {tokens['p95']}, max {tokens['max']}",
        f"fingerprint    {report['fingerprint'][:16]}",
        f"written to     {output_dir}",
    ]
    print("\n".join(lines))


def _nonzero(counts) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in counts.items() if count) or "nothing"
