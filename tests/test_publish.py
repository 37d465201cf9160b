"""`python -m hub push` and `deploy-space` against the local Hub server, read back with the real clients.

The inputs come from the real pipeline on tiny data (sample flashcards, tiny base, two two-step
experiments, evaluation on a few examples). The module pushes three times in order: only the
worse experiment, then everything (one new experiment), then everything again (nothing new), and
records the refs after each push for the tests to compare.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from reliability_support import run_hub

from common.errors import EXIT_VERIFY, HubError
from hub.auth import preflight

MEDQA_ROWS = [
    {"question": "Which vitamin deficiency causes scurvy?", "answer_idx": "C",
     "options": {"A": "Vitamin A", "B": "Vitamin D", "C": "Vitamin C", "D": "Vitamin K"}},
    {"question": "Which organ secretes insulin?", "answer_idx": "B",
     "options": {"A": "Liver", "B": "Pancreas", "C": "Spleen", "D": "Kidney"}},
]


@pytest.fixture(scope="session")
def pipeline(tiny_base, sample_flashcards, tmp_path_factory) -> Path:
    """data/processed, runs/{alpha,beta}, eval/ made by prepare, train and evaluate on tiny data."""
    from training.config import DataConfig, EvalConfig, ExperimentConfig
    from training.evaluate import evaluate
    from training.prepare import prepare
    from training.train import train_experiment, update_best

    work = tmp_path_factory.mktemp("publish-inputs")
    data_dir = work / "data" / "processed"
    prepare(DataConfig(source=str(sample_flashcards), revision=None, tokenizer=str(tiny_base),
                       tokenizer_revision=None, max_examples=40, output_dir=data_dir))
    for name, learning_rate in (("alpha", 1e-5), ("beta", 5e-3)):
        train_experiment(ExperimentConfig(
            name=name, base_model=str(tiny_base), base_revision=None, data_dir=data_dir, runs_dir=work / "runs",
            learning_rate=learning_rate, max_steps=2, eval_steps=2, logging_steps=1, save_steps=100,
            per_device_batch_size=2, effective_batch_size=2, max_seq_length=96, quantization="none",
            precision="fp32", lora={"r": 4, "alpha": 8},
        ))
    update_best(work / "runs")
    medqa = work / "medqa.jsonl"
    medqa.write_text("".join(json.dumps(row) + "\n" for row in MEDQA_ROWS), encoding="utf-8")
    evaluate(EvalConfig(data_dir=data_dir, runs_dir=work / "runs", output_dir=work / "eval", limit=3,
                        max_new_tokens=4, medqa=str(medqa), medqa_limit=2, bootstrap_resamples=20))
    return work


@dataclass
class Published:
    namespace: str
    dataset: str
    adapter: str
    space: str
    config_dir: Path
    best: str
    other: str
    refs: list[dict] = field(default_factory=list)  # after each push
    outputs: list[str] = field(default_factory=list)  # stdout + stderr of each command


def write_hub_config(folder: Path, pipeline: Path, **settings) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"data_dir": str(pipeline / "data" / "processed"), "runs_dir": str(pipeline / "runs"),
              "eval_dir": str(pipeline / "eval"), "space_hardware": "t4-small", **settings}
    (folder / "hub.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def snapshot_refs(published: Published) -> dict:
    from huggingface_hub import HfApi

    api = HfApi()
    refs = api.list_repo_refs(published.adapter)
    return {
        "dataset": api.repo_info(published.dataset, repo_type="dataset").sha,
        "branches": {b.name: b.target_commit for b in refs.branches},
        "tags": {t.name: t.target_commit for t in refs.tags},
    }


@pytest.fixture(scope="module")
def published(pipeline, hub_server, tmp_path_factory) -> Published:
    name = lambda prefix: hub_server.repo_id(prefix).split("/", 1)[1]  # noqa: E731 - fresh repo names
    best = json.loads((pipeline / "runs" / "best.json").read_text())["experiment"]
    other = next(n for n in ("alpha", "beta") if n != best)
    repos = {"dataset_repo": name("data"), "adapter_repo": name("adapter"), "space_repo": name("space")}
    config_dir = write_hub_config(tmp_path_factory.mktemp("hub-config"), pipeline, namespace=hub_server.user, **repos)
    published = Published(hub_server.user, f"{hub_server.user}/{repos['dataset_repo']}",
                          f"{hub_server.user}/{repos['adapter_repo']}", f"{hub_server.user}/{repos['space_repo']}",
                          config_dir, best, other)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", hub_server.write_token)
        for extra in (["--experiments", other], [], []):
            code, output = run_hub("push", "--config-dir", str(config_dir), *extra)
            assert code == 0, output
            published.outputs.append(output)
            published.refs.append(snapshot_refs(published))
    return published


@pytest.mark.slow
def test_dataset_repo_loads_as_the_prepared_splits(published, pipeline):
    from datasets import DatasetDict, load_dataset
    from huggingface_hub import DatasetCard

    revision = published.refs[-1]["dataset"]
    remote = load_dataset(published.dataset, revision=revision)
    local = DatasetDict.load_from_disk(str(pipeline / "data" / "processed"))
    assert set(remote) == {"train", "validation", "test"}
    for split in local:
        assert remote[split]["id"] == local[split]["id"]
        assert remote[split]["prompt"] == local[split]["prompt"]
    card = DatasetCard.load(published.dataset, repo_type="dataset")
    report = json.loads((pipeline / "data" / "processed" / "data_report.json").read_text())
    assert card.data.license == "apache-2.0" and card.data.language == "en"
    assert card.data.dataset_info  # push_to_hub's metadata survives the card
    assert f"Rows in: {report['rows_in']}, rows out: {report['rows_out']}" in card.text
    assert report["fingerprint"] in card.text


@pytest.mark.slow
def test_every_experiment_branch_loads_with_peft_and_generates(published, tiny_base):
    import torch
    from huggingface_hub import HfApi
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for experiment in ("alpha", "beta"):
        branch = f"exp/{experiment}"
        files = set(HfApi().list_repo_files(published.adapter, revision=branch))
        assert {"adapter_model.safetensors", "adapter_config.json", "chat_contract.json", "tokenizer_config.json",
                "config.yaml", "metrics.json", "eval_metrics.json", "predictions_sample.jsonl", "provenance.json",
                "plots/loss_curves.png", "plots/metrics.png", "README.md"} <= files
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_base)), published.adapter,
                                          revision=branch)
        tokenizer = AutoTokenizer.from_pretrained(published.adapter, revision=branch)
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What causes scurvy?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert output.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.slow
def test_main_is_the_best_experiment_verified_and_tagged(published, pipeline):
    from huggingface_hub import hf_hub_download

    refs = published.refs[-1]
    main = refs["branches"]["main"]
    assert refs["tags"] == {"best-1": main}
    on_main = Path(hf_hub_download(published.adapter, "adapter_model.safetensors", revision=main)).read_bytes()
    assert on_main == (pipeline / "runs" / published.best / "adapter" / "adapter_model.safetensors").read_bytes()
    summary = json.loads(Path(hf_hub_download(published.adapter, "experiments.json", revision=main)).read_text())
    assert summary["best"] == published.best
    assert summary["verified_revision"] == refs["branches"][f"exp/{published.best}"]


@pytest.mark.slow
def test_model_card_metadata_and_model_index_carry_the_metrics(published, pipeline):
    from huggingface_hub import HfApi, ModelCard, hf_hub_download

    card = ModelCard.load(published.adapter)  # main
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.language, data.license) == ("peft", "text-generation", "en", "apache-2.0")
    assert published.dataset in data.datasets
    evaluated = json.loads((pipeline / "eval" / published.best / "metrics.json").read_text())
    by_type = {r.metric_type: r.metric_value for r in data.eval_results}
    assert set(by_type) == {"bleu", "sentence_bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "perplexity",
                            "accuracy", "acc", "acc_norm", "acc_over_answer_orders", "answer_order_consistency"}
    assert by_type["bleu"] == pytest.approx(evaluated["bleu"]["value"], abs=1e-4)
    assert by_type["accuracy"] == pytest.approx(evaluated["medqa_accuracy"]["value"], abs=1e-4)
    verified = published.refs[-1]["branches"][f"exp/{published.best}"]
    assert f'PeftModel.from_pretrained(base, "{published.adapter}", revision="{verified}")' in card.text
    assert "Medical disclaimer" in card.text and "| alpha |" in card.text and "| beta |" in card.text
    files = HfApi().list_repo_files(published.adapter)
    assert all(link in files for link in ("plots/loss_curves.png", "plots/metrics.png"))
    assert "![loss curves](plots/loss_curves.png)" in card.text
    assert "| batching | 2 sequences per optimizer step (2 per device x 1 accumulation, 1 process) |" in card.text
    from training.config import ExperimentConfig, field_rows

    for name, _, description in field_rows(ExperimentConfig(name="any")):  # the table is the config's fields
        assert f"| `{name}` | " in card.text and description in card.text, name
    assert "| `lora.r` | `4` | LoRA rank" in card.text
    branch_card = ModelCard.load(hf_hub_download(published.adapter, "README.md", revision=f"exp/{published.other}"))
    assert f'revision="exp/{published.other}"' in branch_card.text
    assert {r.metric_type for r in branch_card.data.eval_results} >= {"bleu", "perplexity"}


@pytest.mark.slow
def test_one_new_experiment_moves_only_what_changed(published):
    first, second = published.refs[0], published.refs[1]
    assert first["branches"].keys() == {"main", f"exp/{published.other}"} and first["tags"] == {}
    assert second["dataset"] == first["dataset"]
    assert second["branches"][f"exp/{published.other}"] == first["branches"][f"exp/{published.other}"]
    assert f"exp/{published.best}" in second["branches"]
    assert second["branches"]["main"] != first["branches"]["main"] and set(second["tags"]) == {"best-1"}


@pytest.mark.slow
def test_identical_second_push_makes_no_commit(published):
    from huggingface_hub import HfApi

    assert published.refs[2] == published.refs[1]
    lines = [line for line in published.outputs[2].splitlines() if line.startswith(published.namespace + "/")]
    assert len(lines) == 4 and all(line.split()[-1] == "no" for line in lines)  # dataset, 2 branches, main
    assert len(HfApi().list_repo_commits(published.adapter)) == 2  # initial + one promotion


@pytest.mark.slow
def test_broken_adapter_is_not_promoted(published, pipeline, hub_server, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    runs = tmp_path / "runs"
    shutil.copytree(pipeline / "runs", runs)
    (runs / published.best / "adapter" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    adapter = hub_server.repo_id("broken")
    config_dir = write_hub_config(tmp_path / "cfg", pipeline, namespace=published.namespace, runs_dir=str(runs),
                                  dataset_repo=published.dataset.split("/")[1], adapter_repo=adapter.split("/")[1])
    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)

    code, output = run_hub("push", "--config-dir", str(config_dir), "--experiments", published.best)

    assert code == EXIT_VERIFY, output
    assert "failed verification, not promoted" in output.splitlines()[-1]
    refs = HfApi().list_repo_refs(adapter)
    assert refs.tags == []
    assert HfApi().list_repo_files(adapter, revision="main") == [".gitattributes"]  # main never moved


@pytest.mark.slow
def test_deploy_space_uploads_space_and_pins_the_verified_revision(published, tiny_base, hub_server, monkeypatch,
                                                                   tmp_path):
    from huggingface_hub import HfApi

    from hub.config import load_hub_config
    from hub.space_deploy import checkout_space
    from training.config import REPO_ROOT

    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)
    code, output = run_hub("deploy-space", "--config-dir", str(published.config_dir))
    assert code == 0, output
    published.outputs.append(output)
    assert f"Space: {hub_server.url}/spaces/{published.space}" in output
    api = HfApi()
    local = {p.relative_to(REPO_ROOT / "space").as_posix() for p in (REPO_ROOT / "space").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    assert set(api.list_repo_files(published.space, repo_type="space")) - {".gitattributes"} == local
    variables = {key: var.value for key, var in api.get_space_variables(published.space).items()}
    assert variables == {
        "BASE_MODEL": str(tiny_base), "BASE_REVISION": "main", "ADAPTER_REPO": published.adapter,
        "ADAPTER_REVISION": published.refs[-1]["tags"]["best-1"], "GRADIO_ANALYTICS_ENABLED": "False",
    }
    assert api.get_space_runtime(published.space).requested_hardware == "t4-small"
    assert api.space_info(published.space).sdk == "gradio"
    # what `make demo` runs the Space from: a fresh checkout and the variables
    checkout, read_back = checkout_space(load_hub_config(published.config_dir), tmp_path / "checkout",
                                         {"HF_ENDPOINT": hub_server.url, "HF_TOKEN": hub_server.write_token})
    assert (checkout / "app.py").read_bytes() == (REPO_ROOT / "space" / "app.py").read_bytes()
    assert read_back == variables
    card = api.space_info(published.space).card_data
    assert card.models == [str(tiny_base), published.adapter]
    assert published.dataset in card.datasets and card.sdk_version


@pytest.mark.slow
def test_token_is_in_no_pushed_file_and_no_output(published, hub_server):
    token = hub_server.write_token.encode()
    stored = [p for p in Path(hub_server.data_dir).rglob("*") if p.is_file() and p.name != "tokens.json"]
    assert stored and not [p for p in stored if token in p.read_bytes()]
    assert all(hub_server.write_token not in output for output in published.outputs)


@pytest.mark.slow
def test_dry_run_writes_each_branch_exactly_and_pushes_nothing(published, pipeline, tmp_path):
    from huggingface_hub import HfApi

    out = tmp_path / "dry"
    code, output = run_hub("push", "--config-dir", str(published.config_dir), "--dry-run", str(out))
    assert code == 0, output
    api = HfApi()
    for branch in ("main", "exp/alpha", "exp/beta"):
        local = {p.relative_to(out / "adapter" / branch).as_posix() for p in (out / "adapter" / branch).rglob("*")
                 if p.is_file()}
        assert local == set(api.list_repo_files(published.adapter, revision=branch)) - {".gitattributes"}
    assert {p.name for p in (out / "dataset" / "main" / "data").iterdir()} == {
        f"{split}-00000-of-00001.parquet" for split in ("train", "validation", "test")}
    assert snapshot_refs(published) == published.refs[-1]


@pytest.mark.parametrize("token, message", [
    (None, "no Hub token"),
    ("hf_not_a_real_token_123456", "invalid or expired"),
    ("read", "read-only token"),
])
def test_preflight_fails_fast_with_one_line(hub_server, monkeypatch, token, message):
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", hub_server.read_token if token == "read" else token)
    with pytest.raises(HubError, match=message) as caught:
        preflight([f"{hub_server.user}/anything"])
    assert "\n" not in str(caught.value)
    assert hub_server.read_token not in str(caught.value) and "hf_not_a_real_token" not in str(caught.value)


def test_push_check_runs_before_training_and_needs_a_write_token(hub_server, monkeypatch, tmp_path):
    """`make train push` calls `hub push --check` first, so a missing token fails before training."""
    (tmp_path / "hub.yaml").write_text(f"namespace: {hub_server.user}\n")
    monkeypatch.setenv("HF_TOKEN", hub_server.write_token)
    code, output = run_hub("push", "--check", "--config-dir", str(tmp_path))
    assert code == 0 and f"{hub_server.user}/tinyllama-medqa-lora" in output
    monkeypatch.setenv("HF_TOKEN", hub_server.read_token)
    code, output = run_hub("push", "--check", "--config-dir", str(tmp_path))
    assert code == 4 and output.startswith("error:") and output.count("\n") == 1


def test_card_states_how_a_step_was_batched():
    from hub.cards import batching_text

    packed = {"mode": "packed", "tokens_per_step": 65536, "rows_per_device": 64, "row_tokens": 512, "processes": 2,
              "mean_examples_per_step": 401.5, "intervals": {"eval_steps": 1, "save_steps": 1, "logging_steps": 1}}
    assert batching_text(packed) == ("packed: whole examples in rows of 512 tokens, up to 65,536 tokens per optimizer "
                                     "step (about 401.5 examples; 64 rows per device, 2 processes)")
    scaled = {**packed, "learning_rate": 0.0016, "lr_scaling": "linear"}
    assert batching_text(scaled).endswith("2 processes); learning rate 0.0016, the experiment's scaled linear with "
                                          "the step's examples (the size and rule that reached the notebook recipe's "
                                          "validation loss fastest)")
    assert batching_text(None) is None


@pytest.mark.slow
def test_every_number_on_the_card_is_recomputed_from_the_pushed_files(published, tmp_path):
    """Each branch's card tables and model-index, re-derived from that revision's eval/ files alone,
    with the interval settings the card states."""
    import re

    from huggingface_hub import ModelCard, ModelCardData, snapshot_download

    from hub.cards import EVAL_FOLDER, fmt_metric
    from training.config import EvalConfig
    from training.eval_report import summarise
    from training.layout import read_jsonl
    from training.metric_registry import METRICS

    for revision in (f"exp/{published.other}", "main"):
        folder = Path(snapshot_download(published.adapter, revision=revision, cache_dir=tmp_path / "cache"))
        card = ModelCard.load(folder / "README.md")
        level, resamples, seed = map(int, re.search(
            r"(\d+)% intervals in brackets \(BCa bootstrap over\s+examples, (\d+) resamples, seed (\d+)\)", card.text).groups())
        work = tmp_path / revision.replace("/", "-")
        shutil.copytree(folder / EVAL_FOLDER, work)
        summary = summarise(work, EvalConfig(bootstrap_resamples=resamples, seed=seed, confidence=level / 100,
                                             runs_dir=tmp_path / "no-runs"))
        header = next(line for line in card.text.splitlines() if line.startswith("| metric | n |"))
        models = [cell.strip() for cell in header.strip().strip("|").split("|")][2:]
        experiments = [m for m in models if m != "base"]
        assert models[0] == "base" and len(experiments) == (2 if revision == "main" else 1)
        checked = 0
        for key, label, fmt in ((m.key, m.label, m.fmt) for m in METRICS):
            if key not in summary["models"]["base"]:
                continue
            n = summary["n"]["base"]["medqa" if key.startswith("medqa") else "test"]
            cells = [fmt_metric(summary["models"][m][key], fmt) for m in models]
            assert f"| {label} | {n} | " + " | ".join(cells) + " |" in card.text, label
            diffs = [fmt_metric(summary["paired_vs_base"][m][key], fmt, "diff", signed=True) for m in experiments]
            assert f"| {label} | " + " | ".join(diffs) + " |" in card.text, label
            checked += 1
        assert checked == len(METRICS)  # every metric, MedQA's both methods included
        best_or_branch = published.best if revision == "main" else published.other
        by_name = {r.metric_name: r.metric_value for r in card.data.eval_results}
        for key, label in ((m.key, m.label) for m in METRICS if m.index_type):
            assert by_name[label] == round(summary["models"][best_or_branch][key]["value"], 4), label
        # How many references exceed the decoding cap, from the predictions and the stated max_new_tokens.
        cap = int(re.search(r"max_new_tokens (\d+), repetition_penalty", card.text).group(1))
        records = read_jsonl(work / best_or_branch / "predictions.jsonl")
        over = sum(r["scores"]["reference_tokens"] > cap for r in records)
        assert f"{over} of {len(records)} reference answers are longer than {cap} tokens" in card.text
        # model-index survives a round trip through huggingface_hub's card data
        assert ModelCardData(**card.data.to_dict()).eval_results == card.data.eval_results


@pytest.mark.slow
def test_every_card_shows_example_answers_from_its_own_eval_files(published, tmp_path):
    """At least 4 examples on each pushed card, base and fine-tuned side by side, re-derived here from that
    revision's eval/ files alone: the example questions (examples.jsonl), then the test questions at the
    adapter's best, median and worst ROUGE-L (predictions.jsonl), each with its reference."""
    from huggingface_hub import ModelCard, snapshot_download

    from hub.cards import EVAL_FOLDER, inert
    from training.config import README_QUESTIONS
    from training.layout import read_jsonl

    for revision, experiment in ((f"exp/{published.other}", published.other),
                                 (f"exp/{published.best}", published.best), ("main", published.best)):
        folder = Path(snapshot_download(published.adapter, revision=revision, cache_dir=tmp_path / "cache"))
        text = ModelCard.load(folder / "README.md").text
        base, tuned = folder / EVAL_FOLDER / "base", folder / EVAL_FOLDER / experiment
        base_examples, examples = read_jsonl(base / "examples.jsonl"), read_jsonl(tuned / "examples.jsonl")
        assert [e["question"] for e in base_examples] == [e["question"] for e in examples] == list(README_QUESTIONS)
        expected = [(None, b["prediction"], t["prediction"]) for b, t in zip(base_examples, examples)]
        rows, base_rows = read_jsonl(tuned / "predictions.jsonl"), read_jsonl(base / "predictions.jsonl")
        ranked = sorted(rows, key=lambda row: (-row["scores"]["rougeL"], row["id"]))
        chosen = dict.fromkeys(row["id"] for row in (ranked[0], ranked[(len(ranked) - 1) // 2], ranked[-1]))
        by_id, base_by_id = {row["id"]: row for row in rows}, {row["id"]: row for row in base_rows}
        expected += [(by_id[i]["reference"], base_by_id[i]["prediction"], by_id[i]["prediction"]) for i in chosen]
        assert len(expected) >= 4, revision
        assert text.count(f"| reference | base | {experiment} |") == len(expected), revision
        for reference, base_answer, answer in expected:
            assert f"| {inert(reference, '– (none)')} | {inert(base_answer)} | {inert(answer)} |" in text, revision
        for question in [*README_QUESTIONS, *(by_id[i]["question"] for i in chosen)]:
            assert f". {inert(question)}**" in text, revision


# ---- concurrent pushes ------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_concurrent_pushes_promote_once(pipeline, hub_server, tmp_path):
    """Two `hub push` processes at once, same artifacts: one commit per branch, one promotion, one tag."""
    import os
    import subprocess
    import sys

    from huggingface_hub import HfApi, hf_hub_download

    from reliability_support import REPO_ROOT

    name = lambda prefix: hub_server.repo_id(prefix).split("/", 1)[1]  # noqa: E731 - fresh repo names
    adapter = f"{hub_server.user}/{name('race')}"
    config_dir = write_hub_config(tmp_path / "cfg", pipeline, namespace=hub_server.user, dataset_repo=name("race-data"),
                                  adapter_repo=adapter.split("/")[1])
    env = {**os.environ, "HF_TOKEN": hub_server.write_token, "PYTHONPATH": str(REPO_ROOT)}
    pushes = [subprocess.Popen([sys.executable, "-m", "hub", "push", "--config-dir", str(config_dir)], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [push.communicate(timeout=900)[0] for push in pushes]
    assert [push.returncode for push in pushes] == [0, 0], "\n".join(output[-3000:] for output in outputs)

    api = HfApi()
    refs = api.list_repo_refs(adapter)
    branches = {b.name: b.target_commit for b in refs.branches}
    assert {t.name: t.target_commit for t in refs.tags} == {"best-1": branches["main"]}
    assert len(api.list_repo_commits(adapter)) == 2  # the repo's first commit, then one promotion
    for experiment in ("alpha", "beta"):
        assert len(api.list_repo_commits(adapter, revision=f"exp/{experiment}")) == 2, experiment
    best = json.loads(Path(hf_hub_download(adapter, "experiments.json", revision=branches["main"])).read_text())
    assert best["verified_revision"] == branches[f"exp/{best['best']}"]


def _at_once(count: int, work) -> list:
    """`work()` in `count` threads released together; their results in any order."""
    import threading

    barrier, results, errors = threading.Barrier(count), [], []

    def run():
        barrier.wait()
        try:
            results.append(work())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def _revisions(token: str):
    from huggingface_hub import HfApi

    from hub.revisions import Revisions

    return Revisions(HfApi(token=token), token)  # one client each, as two processes would have


def test_two_promotions_racing_for_a_tag_name_tag_the_commit_once(hub_server, hub_token):
    """Both list the tags before either creates best-1 (the creations are held back together): the loser
    of the race looks again, finds the commit tagged, and makes no second tag."""
    import re

    from huggingface_hub import HfApi

    from reliability_support import faults

    repo = hub_server.repo_id("tag-race")
    api = HfApi(token=hub_token)
    api.create_repo(repo)
    commit = api.upload_file(path_or_fileobj=b"weights", path_in_repo="adapter.bin", repo_id=repo).oid
    faults(hub_server, "POST", [{"method": "POST", "path": f"^/api/models/{re.escape(repo)}/tag/", "action": "delay",
                                 "seconds": 2, "times": 2}])
    try:
        made = _at_once(2, lambda: _revisions(hub_token).tag_promotion(repo, "main", commit, "verified"))
        held = faults(hub_server, "GET")["rules"]
    finally:
        faults(hub_server, "DELETE")
    assert held == []  # both creations were sent, and held back together
    assert sorted(made, key=str) == [None, "best-1"]
    assert {t.name: t.target_commit for t in api.list_repo_refs(repo).tags} == {"best-1": commit}
    assert _revisions(hub_token).tag_promotion(repo, "main", commit, "verified") is None  # and again: nothing


def test_a_superseded_promotion_is_not_tagged(hub_server, hub_token):
    from huggingface_hub import HfApi

    repo = hub_server.repo_id("superseded")
    api = HfApi(token=hub_token)
    api.create_repo(repo)
    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="adapter.bin", repo_id=repo).oid
    second = api.upload_file(path_or_fileobj=b"two", path_in_repo="adapter.bin", repo_id=repo).oid
    revisions = _revisions(hub_token)
    assert revisions.tag_promotion(repo, "main", first, "verified") is None  # main moved on to `second`
    assert revisions.tag_promotion(repo, "main", second, "verified") == "best-1"


def test_two_identical_commits_at_once_make_one(hub_server, hub_token, tmp_path):
    """Both name the same parent; the second is answered 412, looks again and finds nothing to change."""
    import re

    from huggingface_hub import HfApi

    from reliability_support import faults

    repo = hub_server.repo_id("commit-race")
    HfApi(token=hub_token).create_repo(repo)
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(b"\0" * 4096)
    files = {"adapter_model.safetensors": weights, "README.md": b"# card\n"}
    faults(hub_server, "POST", [{"method": "POST", "path": f"^/api/models/{re.escape(repo)}/commit/",
                                 "action": "delay", "seconds": 2, "times": 2}])
    try:
        heads = _at_once(2, lambda: _revisions(hub_token).commit(repo, "exp/a", files, "adapter"))
        held = faults(hub_server, "GET")["rules"]
    finally:
        faults(hub_server, "DELETE")
    api = HfApi()
    assert held == []  # both commits were sent, and held back together
    assert heads[0] == heads[1] == api.repo_info(repo, revision="exp/a").sha
    assert len(api.list_repo_commits(repo, revision="exp/a")) == 2  # the repo's first commit, then one
    assert _revisions(hub_token).holds(repo, "exp/a", files)
