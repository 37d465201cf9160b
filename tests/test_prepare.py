"""prepare: reading sources, every cleaning rule, grouped splits, determinism, bad input."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from common.atomic import OWNER_MARKER
from common.errors import EXIT_DATA, DataError, HubError
from common.yaml_config import load_config
from training.clean import DROP_REASONS, Row, clean_rows, clean_text, question_id
from training.config import DataConfig
from training.layout import DATA_REPORT as REPORT_FILE
from training.prepare import SPLITS, prepare, split_by_question, subsample
from training.sources import read_source

from conftest import REPO_ROOT

QA = {"question": "What is the antidote for heparin overdose?", "answer": "Protamine sulfate."}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def data_config(tmp_path, source, tokenizer, **overrides) -> DataConfig:
    settings = dict(source=str(source), revision=None, tokenizer=str(tokenizer), tokenizer_revision=None,
                    output_dir=str(tmp_path / "out"), max_examples="all")
    return DataConfig(**{**settings, **overrides})


def file_digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != REPORT_FILE}


def load_splits(folder):
    from datasets import load_from_disk

    return load_from_disk(str(folder))


# ---- cleaning rules ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("Cafe\u0301 au lait spots", "Caf\u00e9 au lait spots"),  # NFC
        ("zero\u200bwidth\u200d and\ufeff bom\u00ad", "zerowidth and bom"),  # invisible characters
        ("  tabs\tand   runs  ", "tabs and runs"),  # horizontal whitespace
        ("line one  \r\n\n\n\n  line two", "line one\n\nline two"),  # line breaks kept, one blank line at most
        ("<b>Bold</b> and <i>E. coli</i>", "Bold and E. coli"),  # inline tags
        ("first<br/>second<p class=\"x\">third</p>", "first\nsecond\nthird"),  # block tags become line breaks
        ("H<sub>2</sub>O and <font color=red>red</font>", "H2O and red"),
        ("&lt;5 mm &amp; &#62;10 mm", "<5 mm & >10 mm"),  # entities decoded
        ("**Answer:** yes, __very__ *much*", "Answer: yes, very much"),  # markdown emphasis
        ("**stray marker", "stray marker"),
        ("## Heading\ntext", "Heading\ntext"),
        # legitimate text survives
        ("Stones <5 mm pass; >10 mm need care", "Stones <5 mm pass; >10 mm need care"),
        ("if a<b and c>d then", "if a<b and c>d then"),
        ("5 * 3 * 2 = 30", "5 * 3 * 2 = 30"),
        ("The ____ nerve innervates it", "The ____ nerve innervates it"),
        ("AT&T &copy stays", "AT&T &copy stays"),
    ],
)
def test_clean_text(raw, cleaned):
    assert clean_text(raw) == cleaned


def test_clean_rows_drops_and_counts_every_reason():
    rows = [
        ("", "an answer here"),  # empty question
        ("<b></b> \u200b", "an answer here"),  # empty once cleaned
        ("A question here?", "   "),  # empty answer
        ("Short?", "an answer here"),  # too short
        ("A question here?", "x" * 101),  # too long
        ("What is the antidote for heparin?", "Protamine sulfate."),
        ("what is the  ANTIDOTE for <b>heparin</b>?", "protamine   sulfate."),  # duplicate once normalised
        ("What is the antidote for heparin?", "Protamine sulfate, IV."),  # same question, new answer: kept
    ]
    kept, dropped = clean_rows([q for q, _ in rows], [a for _, a in rows], min_chars=10, max_chars=100)
    assert dict(dropped) == {"empty_question": 2, "empty_answer": 1, "too_short": 1, "too_long": 1, "duplicate": 1}
    assert set(dropped) == set(DROP_REASONS)
    assert [row.answer for row in kept] == ["Protamine sulfate.", "Protamine sulfate, IV."]
    assert kept[0].id == kept[1].id == question_id("what is the antidote  for heparin?")
    assert len(kept) + sum(dropped.values()) == len(rows)


def many_rows(n_questions=60, answers_per_question=3):
    return [Row(question_id(f"Question number {q}?"), f"Question number {q}?", f"Answer {a} to {q}.")
            for q in range(n_questions) for a in range(answers_per_question)]


def test_split_keeps_each_question_in_one_split():
    rows = many_rows()
    splits = split_by_question(rows, (0.8, 0.1, 0.1), seed=7)
    ids = {name: {row.id for row in split_rows} for name, split_rows in splits.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"] and not ids["validation"] & ids["test"]
    assert sorted((r for split_rows in splits.values() for r in split_rows), key=repr) == sorted(rows, key=repr)
    assert [len(splits[name]) for name in SPLITS] == [144, 18, 18]
    assert split_by_question(rows, (0.8, 0.1, 0.1), seed=8) != splits  # the seed matters


def test_subsample_is_seeded_and_ignores_input_order():
    rows = many_rows(answers_per_question=1)
    sample, dropped = subsample(rows, 25, seed=3)
    assert len(sample) == 25 and dropped == len(rows) - 25
    assert subsample(list(reversed(rows)), 25, seed=3) == (sample, dropped)
    assert subsample(rows, 25, seed=4)[0] != sample
    assert subsample(rows, "all", seed=3)[1] == 0


@pytest.mark.parametrize("n_questions, answers_per_question", [(2, 1), (1, 4)])
def test_too_few_questions_to_split(n_questions, answers_per_question):
    rows = many_rows(n_questions, answers_per_question)
    with pytest.raises(DataError, match=f"{len(rows)} rows with {n_questions} distinct questions? are too few to split"):
        split_by_question(rows, (0.8, 0.1, 0.1), seed=0)


# ---- prepare end to end (sample flashcards + tiny base tokenizer) ------------------------
def test_prepare_sample(tmp_path, sample_flashcards, tiny_base):
    from training.tokenizer import load_tokenizer

    config = data_config(tmp_path, sample_flashcards, tiny_base)
    report = prepare(config)
    data = load_splits(config.output_dir)
    assert list(data) == list(SPLITS)
    assert set(data["train"].column_names) == {"id", "question", "answer", "messages", "prompt", "completion"}
    assert report["splits"] == {name: len(data[name]) for name in SPLITS}
    assert sum(report["splits"].values()) == report["rows_out"]
    assert report["rows_in"] == report["rows_out"] + sum(report["dropped"].values()) >= 120
    assert report["sources"][0]["sha256"] == hashlib.sha256(sample_flashcards.read_bytes()).hexdigest()
    assert report["lengths"]["answer"]["tokens"]["max"] >= report["lengths"]["answer"]["tokens"]["median"] > 0
    assert not {r["id"] for r in data["train"]} & {r["id"] for r in data["test"]}

    tokenizer = load_tokenizer(tiny_base)
    row = data["validation"][0]
    assert row["messages"][0] == {"role": "system", "content": config.system_prompt}
    assert row["completion"] == row["answer"] + tokenizer.eos_token
    assert row["prompt"] + row["completion"] + "\n" == tokenizer.apply_chat_template(row["messages"], tokenize=False)


def test_prepare_is_byte_identical_and_replaces_output(tmp_path, sample_flashcards, tiny_base):
    first = data_config(tmp_path, sample_flashcards, tiny_base, output_dir=str(tmp_path / "a"), max_examples=100)
    second = first.model_copy(update={"output_dir": tmp_path / "b"})
    second.output_dir.mkdir()
    (second.output_dir / "stale.txt").write_text("from an older run")
    (second.output_dir / OWNER_MARKER).write_text("an older output of prepare\n")  # ours: may be replaced
    report_a, report_b = prepare(first), prepare(second)
    assert report_a["fingerprint"] == report_b["fingerprint"]
    assert file_digests(first.output_dir) == file_digests(second.output_dir)
    assert "stale.txt" not in file_digests(second.output_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp or old folders left
    assert report_a["splits"] == {"train": 80, "validation": 10, "test": 10}


def test_prepare_real_flashcards_with_real_tokenizer(tmp_path, shared_data, real_flashcards, real_tokenizer):
    config = data_config(tmp_path, real_flashcards, shared_data / "tokenizer", max_examples=200)
    report = prepare(config)
    assert report["rows_out"] == 200 and report["dropped"]["empty_question"] + report["dropped"]["empty_answer"] > 0
    row = load_splits(config.output_dir)["train"][0]
    text_ids = real_tokenizer(row["prompt"] + row["completion"]).input_ids
    prompt_ids = real_tokenizer(row["prompt"]).input_ids
    assert text_ids[: len(prompt_ids)] == prompt_ids and text_ids[-1] == real_tokenizer.eos_token_id


def test_nothing_left_is_a_data_error_and_keeps_old_output(tmp_path, tiny_base):
    source = write_jsonl(tmp_path / "short.jsonl", [{"question": "Why?", "answer": "No."}, {"question": "", "answer": "x"}])
    config = data_config(tmp_path, source, tiny_base)
    config.output_dir.mkdir()
    (config.output_dir / "keep.txt").write_text("previous output")
    (config.output_dir / OWNER_MARKER).write_text("an older output of prepare\n")
    with pytest.raises(DataError, match=r"no rows left after cleaning 2 input rows \(dropped: empty_question 1, too_short 1\)"):
        prepare(config)
    assert (config.output_dir / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "short.jsonl"]


# ---- sources -----------------------------------------------------------------------------
def test_reads_every_format_and_column_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "list.json").write_text(json.dumps([{"instruction": "x", "input": QA["question"], "output": QA["answer"]}]))
    write_jsonl(tmp_path / "rows.jsonl", [QA])
    (tmp_path / "rows.csv").write_text(f'q,a\n"{QA["question"]}","{QA["answer"]}"\n')
    pq.write_table(pa.Table.from_pylist([QA]), tmp_path / "rows.parquet")
    for name, columns in [("list.json", None), ("rows.jsonl", None), ("rows.csv", {"q": "question", "a": "answer"}),
                          ("rows.parquet", None)]:
        rows = read_source(str(tmp_path / name), columns=columns)
        assert (rows.questions, rows.answers) == ([QA["question"]], [QA["answer"]]), name
        assert rows.info["type"] == "file" and len(rows.info["sha256"]) == 64


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"question": "q", "answer": "a"}\n\n{"question": "q2", "answer": \n', r"bad.jsonl: line 3: malformed JSON"),
        ("bad.json", '[{"question": "q",\n "answer" "a"}]', r"bad.json: line 2 column 11: malformed JSON"),
        ("cols.jsonl", '{"prompt": "q", "response": "a"}\n',
         r"cols.jsonl: missing columns: need question/answer or input/output, or set `columns` \(found: prompt, response\)"),
        ("row.jsonl", '{"question": "q", "answer": "a"}\n{"question": "q2"}\n', r"row.jsonl: line 2: missing column 'answer'"),
        ("latin1.csv", b"question,answer\nq,a\ncaf\xe9,a\n", r"latin1.csv: line 3: undecodable bytes"),
        ("notes.txt", "question: a", r"notes.txt: unknown format '.txt'"),
        ("empty.jsonl", "\n  \n", r"empty.jsonl: empty file"),
        ("empty.parquet", b"", r"empty.parquet: empty file"),
        ("broken.parquet", b"PAR1 not really", r"broken.parquet: not a readable Parquet file"),
        ("dict.json", '{"question": "q"}', r"dict.json: expected a JSON list of objects, got dict"),
        ("scalars.json", '[1, 2]', r"scalars.json: row 1: expected an object"),
        ("list.jsonl", '{"question": ["q"], "answer": "a"}\n', r"list.jsonl: line 1: column 'question' holds list"),
        ("extra.csv", "question,answer\nq,a,b\n", r"extra.csv: line 2: more values than the header"),
        ("missing.jsonl", None, r"missing.jsonl: file not found"),
    ],
)
def test_bad_input_is_one_line_data_error(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_source(str(path))
    assert "\n" not in str(info.value)


def test_columns_mapping_names_missing_columns(tmp_path):
    source = write_jsonl(tmp_path / "rows.jsonl", [QA])
    with pytest.raises(DataError, match=r"missing columns q \(found: question, answer\)"):
        read_source(str(source), columns={"q": "question", "answer": "answer"})


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "What is the antidote for heparin?", "answer": "Protamine sulfate."}', "{oops"],
         "line 2: malformed JSON"),
        (['{"q": "What?", "a": "This."}'], "missing columns: need question/answer or input/output"),
    ],
)
def test_cli_bad_input_exits_with_data_code(tmp_path, lines, message):
    source = tmp_path / "cards.jsonl"
    source.write_text("\n".join(lines) + "\n")
    config = tmp_path / "data.yaml"
    config.write_text(f"source: {source}\nrevision: null\ntokenizer: unused\noutput_dir: {tmp_path / 'out'}\n")
    result = subprocess.run([sys.executable, "-m", "training", "prepare", "--config", str(config)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_DATA
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {source}: ") and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_options_override_config(tmp_path, sample_flashcards, tiny_base):
    from training.cli import main

    config = tmp_path / "data.yaml"
    config.write_text(f"source: {sample_flashcards}\nrevision: null\ntokenizer: {tiny_base}\ntokenizer_revision: null\n")
    argv = ["prepare", "--config", str(config), "--set", "max_examples=50", "--set", f"output_dir={tmp_path / 'out'}",
            "--set", "seed=5"]
    assert main(argv, commands={"prepare": ("training.prepare", "")}) == 0
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert (report["rows_out"], report["seed"]) == (50, 5)
    assert load_config(DataConfig, config, ["max_examples=all"]).max_examples == "all"


# ---- the Hub (local server) --------------------------------------------------------------
def test_prepare_from_hub_dataset_at_revision(tmp_path, hub_server, hub_token, sample_flashcards, tiny_base):
    from datasets import Dataset
    from huggingface_hub import HfApi

    repo_id = hub_server.repo_id("flashcards")
    raw = [json.loads(line) for line in sample_flashcards.read_text().splitlines()]
    Dataset.from_list(raw[:60]).push_to_hub(repo_id, token=hub_token)
    first_commit = HfApi(token=hub_token).list_repo_commits(repo_id, repo_type="dataset")[0].commit_id
    Dataset.from_list(raw).push_to_hub(repo_id, token=hub_token)  # main moves on; the pinned revision must not

    config = data_config(tmp_path, repo_id, tiny_base, revision=first_commit)
    report = prepare(config)
    assert report["rows_in"] == 60
    assert report["sources"] == [{"type": "hub", "id": repo_id, "revision": first_commit,
                                  "requested_revision": first_commit}]
    with pytest.raises(HubError, match="revision 'no-such-branch' not found"):
        prepare(config.model_copy(update={"revision": "no-such-branch"}))


def test_missing_hub_dataset_is_a_hub_error(hub_server, hub_token):
    with pytest.raises(HubError, match="no such local file, and not found on the Hub"):
        read_source(hub_server.repo_id("absent"), revision="main")
