"""The model card's example answers and small truths: which test questions are shown (by rule, from the
files), every answer shown as exactly its text (no HTML, no links that run, on the local Hub's card page and in
a real browser), the base's real size, and the published base in the hyperparameter table."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import yaml

from space_support import chromium_page, needs_chromium
from training.config import README_QUESTIONS, EvalConfig, ExperimentConfig, dump
from training.layout import EvalRoot, RunDir, RunsDir, write_jsonl

HOSTILE = [
    '<script>window.pwned=1</script> Insulin | glucagon \\| both',
    '[click here](javascript:window.pwned=1) ![x](https://example.com/x.png) <img src=x onerror="window.pwned=1">',
    '**Metformin** _first_ `line` &lt;b&gt; &amp; <https://example.com/a>\n\n# heading\n- list item\n> quote',
]
QUESTIONS = [f"Question {i}: what does <b>drug {i}</b> do?" for i in range(5)]
REFERENCES = [f"Reference {i} & [link](javascript:alert({i}))" for i in range(5)]
# Per-example ROUGE-L of the adapter, ranked q3 (0.9), q1, q2 (0.5 each: ties by id), q0, q4 (0.1): median q2.
ADAPTER_ROUGE = [0.3, 0.5, 0.5, 0.9, 0.1]
PARAMETERS = 134_515_008  # SmolLM2-135M-Instruct, tied embeddings counted once


def answers(name: str) -> list[str]:
    if name == "base":
        return [f"Base answer {i} <i>plain</i>" for i in range(5)]
    return [HOSTILE[0], HOSTILE[1], "A fine answer.", HOSTILE[2], "Wrong: see http://example.com/x"]


def write_phase_one(root: Path, name: str, base: str) -> None:
    """eval/<name>/ as evaluate's phase 1 leaves it (fixed rows, no model): what a card is built from."""
    folder = EvalRoot(root).model(name)
    folder.path.mkdir(parents=True)
    rouge = ADAPTER_ROUGE if name != "base" else [0.2] * 5
    write_jsonl(folder.predictions_file, [
        {"id": f"q{i}", "question": QUESTIONS[i], "reference": REFERENCES[i], "prediction": answers(name)[i],
         "scores": {"bleu": 1.0, "nltk_sentence_bleu": 0.1, "rouge1": rouge[i], "rouge2": rouge[i], "rougeL": rouge[i],
                    "rougeLsum": rouge[i], "nll": 3.0 + i, "answer_tokens": 5, "reference_tokens": 6}}
        for i in range(5)])
    write_jsonl(folder.examples_file, [
        {"question": question, "prediction": (HOSTILE[k] if name != "base" else f"Base says {k} <script>x</script>")}
        for k, question in enumerate(README_QUESTIONS)])
    folder.run_file.write_text(json.dumps({
        "model": name, "n": 5, "medqa_n": 0, "base_model": {"id": base, "revision": None, "parameters": PARAMETERS},
        "decoding": {"max_new_tokens": 8, "do_sample": False, "temperature": None, "top_p": None,
                     "repetition_penalty": 1.0, "stop_tokens": ["<|im_end|>"], "seed": None, "from": "adapter exp1"},
        "data": {"split": "test"}, "config": {"confidence": 0.95}}))


@pytest.fixture
def built(tmp_path):
    """A card of exp1 against the base, from eval/ folders summarised by phase 2, the base published as a Hub id."""
    from hub.artifacts import Experiment, Inputs
    from hub.cards import Where, adapter_card
    from training.eval_report import summarise
    from training.layout import DataDir

    local_base = str(tmp_path / "real-base")  # the runs trained on a local folder, published under a Hub id
    run = RunDir(tmp_path / "runs" / "exp1")
    run.path.mkdir(parents=True)
    run.metrics_file.write_text(json.dumps({"train_loss": [], "eval_loss": [], "best_eval_loss": 1.0}))
    run.provenance_file.write_text(json.dumps({"base_model": {"id": local_base, "revision": None}}))
    run.config_file.write_text(yaml.safe_dump(dump(ExperimentConfig(name="exp1", base_model=local_base,
                                                                    base_revision=None))))
    for name in ("base", "exp1"):
        write_phase_one(tmp_path / "eval", name, local_base)
    summarise(tmp_path / "eval", EvalConfig(bootstrap_resamples=50, runs_dir=tmp_path / "runs"))
    runs, evaluation = RunsDir(tmp_path / "runs"), EvalRoot(tmp_path / "eval")
    exp = Experiment(runs.run("exp1"), evaluation.model("exp1"), runs.run("exp1").config())
    inputs = Inputs(DataDir(tmp_path / "data"), {"system_prompt": "Be careful."}, [exp], "exp1", evaluation)
    where = Where("tester/adapter", "tester/data", None, "exp/", "apache-2.0", "tester/SmolLM2-135M-Instruct", "a" * 40)
    card = adapter_card(exp, inputs, where, branch="exp/exp1", is_main=False, load_revision="exp/exp1", plots=[])
    return tmp_path, card


def example_rows(card_text: str) -> list[list[str]]:
    """The (reference, base, exp1) cells of every example table, in order."""
    section = card_text.split("### Example answers", 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("| reference |")]


def test_test_questions_are_chosen_by_rule_best_median_worst_ties_by_id():
    from training.example_answers import choose

    def rows(scores):
        return [{"id": f"q{i}", "scores": {"rougeL": s}} for i, s in enumerate(scores)]

    picked = choose(rows(ADAPTER_ROUGE))
    assert picked["score"] == "rougeL"
    assert [(p["rank"], p["id"], p["rougeL"]) for p in picked["test"]] == [
        ("best", "q3", 0.9), ("median", "q2", 0.5), ("worst", "q4", 0.1)]
    assert [p["id"] for p in choose(rows([0.2, 0.7]))["test"]] == ["q1", "q0"]  # best and worst; the median is best
    assert [p["rank"] for p in choose(rows([0.4]))["test"]] == ["best"]
    assert choose([])["test"] == []


def test_card_shows_the_example_questions_then_the_chosen_test_questions(built):
    from hub.cards import inert

    root, card = built
    text = card.text
    evaluation = EvalRoot(root / "eval")
    recorded = evaluation.model("exp1").metrics()["examples"]
    assert [p["id"] for p in recorded["test"]] == ["q3", "q2", "q4"]
    assert evaluation.model("base").metrics()["examples"] is None
    base, tuned = evaluation.model("base"), evaluation.model("exp1")
    expected = [[inert(None, "– (none)"), inert(b["prediction"]), inert(t["prediction"])]
                for b, t in zip(base.examples(), tuned.examples())]
    predictions = {name: {r["id"]: r for r in folder.predictions()}
                   for name, folder in (("base", base), ("exp1", tuned))}
    expected += [[inert(predictions["exp1"][i]["reference"]), inert(predictions["base"][i]["prediction"]),
                  inert(predictions["exp1"][i]["prediction"])] for i in ("q3", "q2", "q4")]
    assert example_rows(text) == expected
    assert len(expected) == 5
    for question in [*README_QUESTIONS, QUESTIONS[3], QUESTIONS[2], QUESTIONS[4]]:
        assert f". {inert(question)}**" in text
    assert "Test question `q3`: the fine-tuned model's best ROUGE-L on the test split (0.900; base 0.200)." in text
    assert "<script>" not in text.split("### Example answers", 1)[1]  # every model text is escaped in the Markdown


def test_card_states_the_base_size_and_names_the_published_base(built):
    root, card = built
    assert "A 135M-parameter model trained on" in card.text and "1.1B" not in card.text
    row = next(line for line in card.text.splitlines() if line.startswith("| `base_model` |"))
    assert row.startswith("| `base_model` | `tester/SmolLM2-135M-Instruct` |")
    assert f"trained on a local copy, `{root / 'real-base'}`" in row
    assert next(line for line in card.text.splitlines() if line.startswith("| `base_revision` |")).startswith(
        f"| `base_revision` | `{'a' * 40}` |")
    assert card.data.base_model == "tester/SmolLM2-135M-Instruct"


def test_parameter_counts_read_as_the_card_states_them():
    from hub.cards import parameters_text

    assert [parameters_text(n) for n in (PARAMETERS, 1_100_048_384, 13_015_864_320, 1_024_000, 999, None)] == [
        "135M", "1.1B", "13B", "1M", "999", None]


@pytest.fixture
def card_page(built, hub_server):
    """The card committed to the local Hub and its page, as a browser gets it."""
    import requests
    from huggingface_hub import HfApi

    _, card = built
    repo = hub_server.repo_id("examples-card")
    api = HfApi(token=hub_server.write_token)
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id=repo)
    url = f"{hub_server.url}/{repo}/blob/main/README.md"
    return url, requests.get(url, timeout=30)


def visible(text: str) -> str:
    """What a reader sees of a text in a table cell: its words, whitespace collapsed."""
    return " ".join(text.split())


def test_model_text_on_the_card_page_is_text_only(card_page):
    url, page = card_page
    assert page.status_code == 200
    section = page.text.split("Example answers", 1)[1].split("<h2>", 1)[0]
    cells = re.findall(r"<td>(.*?)</td>", section, re.S)
    assert len(cells) == 5 * 3 and not [cell for cell in cells if "<" in cell]  # text only: no element in a cell
    for answer in HOSTILE:
        assert visible(answer) in [html.unescape(cell) for cell in cells]
    assert "<script" not in section and "<img" not in section and "javascript:" not in " ".join(
        re.findall(r'(?:href|src)="([^"]*)"', section))


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_a_browser_shows_the_answers_as_text_and_runs_nothing(card_page):
    url, _ = card_page
    with chromium_page(url) as page:
        tables = page.locator("table").filter(has_text="reference")
        assert tables.count() == 5
        cells = [visible(t) for t in page.locator("td").all_inner_texts()]
        for answer in [*HOSTILE, "Base says 0 <script>x</script>", "Reference 3 & [link](javascript:alert(3))"]:
            assert visible(answer) in cells
        assert page.evaluate("window.pwned") is None
        assert page.locator("td a, td img, td script").count() == 0
        assert page.get_by_text(README_QUESTIONS[0]).count() == 1
