"""Evaluation on the tiny base: generation, perplexity, MedQA scoring (both methods), plots and the CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from common.errors import ConfigError, DataError
from training import metric_registry as registry
from training import medqa
from training.chat import format_example, format_prompt
from training.cli import COMMANDS, main
from training.provenance import sha256_file

EVALUATE_ONLY = {"evaluate": COMMANDS["evaluate"]}
REPO_ROOT = Path(__file__).resolve().parent.parent  # the CLI without importing the other commands
SYSTEM = "You are a careful medical assistant."
QUESTIONS = [
    "What is the function of insulin?",
    "Define tachycardia.",
    "Which nerve innervates the diaphragm, and why does diaphragmatic irritation refer pain to the shoulder?",
    "Hb?",
    "What does ACE stand for in ACE inhibitor?",
]
ANSWERS = ["It lowers blood glucose.", "A heart rate above 100 per minute.", "The phrenic nerve (C3-C5).",
           "Hemoglobin.", "Angiotensin-converting enzyme."]
MEDQA_ROW = {
    "question": "A 25-year-old man has crushing chest pain. Which enzyme rises first?",
    "options": {"A": "Troponin I", "B": "Lactate dehydrogenase", "C": "Alkaline phosphatase", "D": "Amylase"},
    "answer_idx": "A",
}


@pytest.fixture(scope="module")
def tiny(tiny_base):
    from training.generation import load_model

    return load_model(str(tiny_base), None, None)


def manual_completion_nll(model, tokenizer, prompt: str, completion: str) -> tuple[float, int]:
    """Independent reference: one unpadded sequence at a time, every position's log_softmax."""
    from training.generation import prompt_completion_ids

    ids, start = prompt_completion_ids(tokenizer, prompt, completion)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return -sum(log_probs[j - 1, ids[j]].item() for j in range(start, len(ids))), len(ids) - start


@pytest.mark.slow
def test_batched_generation_equals_one_at_a_time(tiny):
    from training.generation import generate

    model, tokenizer = tiny
    prompts = [format_prompt(tokenizer, SYSTEM, q) for q in QUESTIONS]
    batched = generate(model, tokenizer, prompts, batch_size=3, max_new_tokens=16)
    single = [generate(model, tokenizer, [p], batch_size=1, max_new_tokens=16)[0] for p in prompts]
    assert batched == single
    assert all(batched) and len(set(batched)) > 1
    # The GPU path: a static cache, the short last batch filled up to the batch size (len(QUESTIONS) % 3 != 0).
    assert len(prompts) % 3
    assert generate(model, tokenizer, prompts, batch_size=3, max_new_tokens=16, static_cache=True) == single


@pytest.mark.slow
def test_perplexity_equals_a_per_example_loop(tiny):
    import math

    from training.generation import completion_log_likelihoods, prompt_completion_ids
    from training.metrics import perplexity

    model, tokenizer = tiny
    prompts = [format_prompt(tokenizer, SYSTEM, q) for q in QUESTIONS]
    completions = [a + tokenizer.eos_token for a in ANSWERS]
    ours = completion_log_likelihoods(model, tokenizer, prompts, completions, batch_size=2)
    manual = [manual_completion_nll(model, tokenizer, p, c) for p, c in zip(prompts, completions)]
    assert [n for _, n in ours] == [n for _, n in manual]
    assert [nll for nll, _ in ours] == pytest.approx([nll for nll, _ in manual], rel=1e-5)
    # The completion ends with eos, and eos counts as an answer token.
    ids, _ = prompt_completion_ids(tokenizer, prompts[0], completions[0])
    assert ids[-1] == tokenizer.eos_token_id
    expected = math.exp(sum(nll for nll, _ in manual) / sum(n for _, n in manual))
    assert perplexity(*zip(*ours)).value() == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_medqa_picks_the_highest_length_normalised_option(tiny):
    model, tokenizer = tiny
    [result] = medqa.score_questions(model, tokenizer, [MEDQA_ROW], SYSTEM, batch_size=3)
    prompt = medqa.build_prompt(tokenizer, SYSTEM, MEDQA_ROW)
    expected = {}
    for letter, text in MEDQA_ROW["options"].items():
        nll, n = manual_completion_nll(model, tokenizer, prompt, text)
        expected[letter] = -nll / n
    assert result["option_mean_log_prob"] == pytest.approx(expected, rel=1e-5)
    assert result["predicted"] == max(expected, key=expected.get)
    assert result["correct"] == (result["predicted"] == "A")


def test_pick_option_uses_the_mean_not_the_sum():
    # Summed, the long option D would lose (-12 < -3); per token it is the most likely.
    assert medqa.pick_option({"A": -3.0, "B": -2.5, "C": -4.0, "D": -0.5}) == "D"


@pytest.mark.slow
def test_medqa_on_five_real_questions(shared_data, tiny):
    path = shared_data / "eval" / "medqa_usmle_4options_test.jsonl"
    questions = medqa.load_questions(str(path), limit=5)
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:5]]
    assert [q["answer_idx"] for q in questions] == [r["answer_idx"] for r in raw]
    model, tokenizer = tiny
    results = medqa.score_questions(model, tokenizer, questions, SYSTEM, batch_size=8)
    assert len(results) == 5
    for result, row in zip(results, raw):
        assert result["predicted"] in medqa.LETTERS
        assert result["correct"] == (result["predicted"] == row["answer_idx"])
        assert all(v < 0 for v in result["option_mean_log_prob"].values())


def test_medqa_bad_rows_are_data_errors(tmp_path):
    path = tmp_path / "medqa.jsonl"
    path.write_text(json.dumps(MEDQA_ROW) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"medqa.jsonl:2: invalid JSON"):
        medqa.load_questions(str(path))
    path.write_text(json.dumps({**MEDQA_ROW, "answer_idx": "E"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 1: 'answer_idx' must be one of A, B, C, D"):
        medqa.load_questions(str(path))


def test_plots_render_from_fixed_metrics(tmp_path):
    import matplotlib.image

    from training import plots

    results = {
        "base": {"bleu": {"value": 3.1, "ci_low": 2.0, "ci_high": 4.5}, "rougeL": {"value": 0.12, "ci_low": 0.1, "ci_high": 0.14},
                 "perplexity": {"value": 14.0, "ci_low": 12.5, "ci_high": 15.8}},
        "exp1": {"bleu": {"value": 9.4, "ci_low": 7.9, "ci_high": 11.0}, "rougeL": {"value": 0.25, "ci_low": 0.22, "ci_high": 0.28},
                 "perplexity": {"value": 5.2, "ci_low": 4.8, "ci_high": 5.7}},
    }
    runs = {"exp1": {"train_loss": [{"step": s, "epoch": s / 10, "loss": 2 / s} for s in range(1, 11)],
                     "eval_loss": [{"step": 5, "epoch": 0.5, "loss": 0.6}, {"step": 10, "epoch": 1.0, "loss": 0.4}]}}
    metrics_png = plots.plot_metrics(results, tmp_path / "plots" / "metrics.png")
    loss_png = plots.plot_loss_curves(runs, tmp_path / "plots" / "loss_curves.png")
    height, width, _ = matplotlib.image.imread(metrics_png).shape
    assert plots.grid_shape(3) == (1, 3) and plots.grid_shape(7) == (2, 4)
    assert (width, height) == (round(plots.PANEL_SIZE[0] * 3 * plots.FIGURE_DPI), round(plots.PANEL_SIZE[1] * plots.FIGURE_DPI))
    height, width, _ = matplotlib.image.imread(loss_png).shape
    assert (width, height) == (round(plots.LOSS_SIZE[0] * plots.FIGURE_DPI), round(plots.LOSS_SIZE[1] * plots.FIGURE_DPI))
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["loss_curves.png", "metrics.png"]


# --- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_base):
    """A prepared dataset, one trained-looking adapter (random non-zero LoRA B) and a MedQA file."""
    from datasets import Dataset, DatasetDict
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.chat import write_contract
    from training.config import ExperimentConfig, dump

    root = tmp_path_factory.mktemp("eval-workspace")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    rows = [{"id": f"{i:016x}", "question": q, "answer": a, **format_example(tokenizer, SYSTEM, q, a)}
            for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))]
    split = Dataset.from_list(rows)
    DatasetDict(train=split, validation=split, test=split).save_to_disk(str(root / "data"))
    (root / "data" / "data_report.json").write_text(json.dumps({"system_prompt": SYSTEM, "fingerprint": "f" * 64}))

    run_dir = root / "runs" / "exp1"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_base)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    model.save_pretrained(run_dir / "adapter")
    tokenizer.save_pretrained(run_dir / "adapter")
    config = ExperimentConfig(name="exp1", base_model=str(tiny_base), base_revision=None,
                              generation={"max_new_tokens": ADAPTER_MAX_NEW_TOKENS, "repetition_penalty": 1.2})
    write_contract(run_dir / "adapter", tokenizer, SYSTEM, config.generation)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dump(config)))
    curve = [{"step": s, "epoch": s / 4, "loss": 3.0 / s} for s in (1, 2, 3, 4)]
    (run_dir / "metrics.json").write_text(json.dumps({"train_loss": curve, "eval_loss": curve[1::2]}))

    (root / "medqa.jsonl").write_text("\n".join(json.dumps(MEDQA_ROW) for _ in range(3)) + "\n")
    return root


ADAPTER_MAX_NEW_TOKENS = 6  # the adapter's saved generation settings, which evaluation must use


def _evaluate(root, *extra):
    settings = [f"data_dir={root / 'data'}", f"runs_dir={root / 'runs'}", f"output_dir={root / 'eval'}",
                f"medqa={root / 'medqa.jsonl'}", "batch_size=2", "bootstrap_resamples=200", *extra]
    return main(["evaluate", "--config-dir", str(root / "no-configs"),
                 *[arg for setting in settings for arg in ("--set", setting)]], commands=EVALUATE_ONLY)


@pytest.mark.slow
def test_evaluate_cli_end_to_end(workspace):
    assert _evaluate(workspace, "limit=4") == 0
    out = workspace / "eval"
    base = json.loads((out / "base" / "metrics.json").read_text())
    tuned = json.loads((out / "exp1" / "metrics.json").read_text())
    medqa_file = workspace / "medqa.jsonl"
    for metrics in (base, tuned):
        assert metrics["n"] == 4 and metrics["medqa_n"] == 3
        for name in registry.keys():
            assert metrics[name]["ci_low"] <= metrics[name]["value"] <= metrics[name]["ci_high"], name
            assert metrics["n_per_metric"][name] == (3 if name.startswith("medqa") else 4)
        for name in [m.key for m in registry.METRICS if m.population is registry.MEDQA and m.stderr]:
            assert metrics[name]["stderr"] is not None
        assert "nltk_bleu" not in metrics
        assert metrics["provenance"]["versions"]["sacrebleu"]
        # Decoded as the adapter's saved settings say; the base the same way.
        decoding = metrics["decoding"]
        assert (decoding["max_new_tokens"], decoding["do_sample"], decoding["repetition_penalty"]) == (
            ADAPTER_MAX_NEW_TOKENS, False, 1.2)
        assert decoding["stop_tokens"] == ["</s>"]
        records = [json.loads(line) for line in (out / metrics["model"] / "predictions.jsonl").read_text().splitlines()]
        assert metrics["references_over_max_new_tokens"] == sum(
            r["scores"]["reference_tokens"] > ADAPTER_MAX_NEW_TOKENS for r in records) > 0
        assert metrics["medqa_source"]["sha256"] == sha256_file(medqa_file) and metrics["medqa_source"]["n"] == 3
        assert metrics["metric_settings"]["bleu"].startswith("sacrebleu corpus BLEU, signature nrefs:1|")
        assert metrics["intervals"] == {"method": "BCa bootstrap", "confidence": 0.95,
                                        "resamples": 200, "seed": 42}
    assert tuned["decoding"]["from"] == "adapter exp1" and "exp1" in base["decoding"]["from"]
    assert base["paired_vs_base"] is None
    assert tuned["adapter"]["sha256"] and tuned["base_model"]["id"] == base["base_model"]["id"]
    # The merged adapter really changes the model.
    assert tuned["perplexity"]["value"] != pytest.approx(base["perplexity"]["value"])
    paired = tuned["paired_vs_base"]["perplexity"]
    assert paired["diff"] == pytest.approx(tuned["perplexity"]["value"] - base["perplexity"]["value"])
    assert paired["ci_low"] <= paired["diff"] <= paired["ci_high"]

    check_example_answers(workspace, out, base, tuned)

    records = [json.loads(line) for line in (out / "exp1" / "predictions.jsonl").read_text().splitlines()]
    assert [r["question"] for r in records] == QUESTIONS[:4]
    assert [r["reference"] for r in records] == ANSWERS[:4]
    assert set(records[0]["scores"]) >= {"bleu", "rouge1", "rouge2", "rougeL", "nll", "answer_tokens", "perplexity"}

    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["models"]) == ["base", "exp1"]
    table = (out / "comparison.md").read_text()
    assert "| base | 4 / 3 | greedy, max_new_tokens 6, repetition_penalty 1.2 |" in table
    assert "| exp1 | 4 / 3 |" in table and "Fine-tuned minus base" in table
    assert set(tuned["paired_vs_base"]) == set(registry.keys())  # same decoding: every metric paired
    assert (out / "plots" / "metrics.png").stat().st_size > 0 and (out / "plots" / "loss_curves.png").stat().st_size > 0
    assert not list(out.glob(".*"))  # no leftover partial folders


def check_example_answers(workspace: Path, out: Path, base: dict, tuned: dict) -> None:
    """The example questions are answered by every model, decoded exactly as its test answers (the adapter's
    saved settings); the adapter's metrics.json names the test questions its card shows; run.json counts the
    base's parameters."""
    from training.config import README_QUESTIONS
    from training.generation import generate, load_model
    from training.layout import EvalRoot

    root = EvalRoot(out)
    for name, metrics in (("base", base), ("exp1", tuned)):
        adapter = workspace / "runs" / "exp1" / "adapter" if name == "exp1" else None
        model, tokenizer = load_model(metrics["base_model"]["id"], None, adapter)
        assert metrics["base_model"]["parameters"] == sum(p.numel() for p in model.parameters())
        examples = root.model(name).examples()
        assert [e["question"] for e in examples] == list(README_QUESTIONS)
        alone = generate(model, tokenizer, [format_prompt(tokenizer, SYSTEM, q) for q in README_QUESTIONS], 1,
                         ADAPTER_MAX_NEW_TOKENS, sampling={"repetition_penalty": 1.2})
        assert [e["prediction"] for e in examples] == alone
    records = root.model("exp1").predictions()
    ranked = sorted(records, key=lambda r: (-r["scores"]["rougeL"], r["id"]))
    assert base["examples"] is None and tuned["examples"]["score"] == "rougeL"
    assert [pick["id"] for pick in tuned["examples"]["test"]] == list(dict.fromkeys(
        r["id"] for r in (ranked[0], ranked[(len(ranked) - 1) // 2], ranked[-1])))


@pytest.mark.slow
def test_evaluate_rejects_unknown_models_and_missing_data(workspace, capsys):
    assert _evaluate(workspace, "models=base,exp2") == 2
    err = capsys.readouterr().err
    assert "no model 'exp2'" in err and "did you mean 'exp1'" in err
    assert main(["evaluate", "--config-dir", str(workspace), "--set", f"data_dir={workspace / 'nothing'}",
                 "--set", f"runs_dir={workspace / 'runs'}", "--set", "medqa=null"], commands=EVALUATE_ONLY) == 3
    assert "run `python -m training prepare` first" in capsys.readouterr().err


def test_set_wins_over_eval_yaml(tmp_path):
    import argparse

    from training import evaluate

    (tmp_path / "eval.yaml").write_text("batch_size: 4\nmax_new_tokens: 64\nlimit: 10\nmedqa: some/dataset\n")
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["--config-dir", str(tmp_path), "--set", "max_new_tokens=32", "--set", "limit=20",
                              "--set", "limit=5", "--set", "medqa=null", "--set", "models=base, exp1"])
    config = evaluate.resolve_config(args)
    assert (config.batch_size, config.max_new_tokens, config.limit) == (4, 32, 5)
    assert config.medqa is None and config.models == ["base", "exp1"]


def test_eval_config_defaults_leave_decoding_to_the_adapter_and_score_all_medqa_on_a_gpu():
    from common.yaml_config import load_config, validate
    from training.config import MEDQA_REVISION, EvalConfig

    for config in (EvalConfig(), load_config(EvalConfig, REPO_ROOT / "configs" / "eval.yaml")):
        assert config.max_new_tokens is None and config.medqa_limit == "auto"
        assert config.medqa_revision == MEDQA_REVISION and len(MEDQA_REVISION) == 40
    assert load_config(EvalConfig, REPO_ROOT / "configs" / "demo" / "eval.yaml").max_new_tokens is None
    with pytest.raises(ConfigError, match="medqa_limit"):
        validate(EvalConfig, {"medqa_limit": 0}, "eval.yaml")


def test_base_decodes_as_the_adapters_and_differing_adapters_are_refused(tmp_path, tiny_base):
    from transformers import AutoTokenizer

    from training.chat import write_contract
    from training.config import GenerationConfig
    from training.eval_run import ModelSpec, plan_decoding
    from training.layout import BASE

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    specs = [ModelSpec(BASE, str(tiny_base), None)]
    for name, tokens in (("a", 48), ("b", 48), ("c", 96)):
        (tmp_path / name).mkdir()
        write_contract(tmp_path / name, tokenizer, SYSTEM, GenerationConfig(max_new_tokens=tokens, repetition_penalty=1.1))
        specs.append(ModelSpec(name, str(tiny_base), None, tmp_path / name))
    plan = plan_decoding(specs[:3], specs, None)
    assert plan[BASE] == {**plan["a"], "from": "the adapters' settings (a, b)"}
    assert (plan["a"]["max_new_tokens"], plan["a"]["repetition_penalty"], plan["a"]["temperature"]) == (48, 1.1, None)
    assert plan_decoding(specs[:2], specs, 8)[BASE]["max_new_tokens"] == 8  # the quick-run override
    with pytest.raises(ConfigError, match="the adapters decode differently"):
        plan_decoding(specs, specs, None)
    with pytest.raises(ConfigError, match="decode differently"):  # base alone: compared with every adapter
        plan_decoding(specs[:1], specs, None)
    assert plan_decoding(specs[:1], specs[:1], None)[BASE]["from"] == "project defaults (no adapter)"


# --- MedQA, lm-evaluation-harness's medqa_4options ----------------------------------------------

def harness_doc(row: dict) -> dict:
    """The row as GBaker/MedQA-USMLE-4-options-hf (the harness's dataset) holds it."""
    return {"sent1": row["question"], **{f"ending{i}": row["options"][k] for i, k in enumerate("ABCD")},
            "label": "ABCD".index(row["answer_idx"])}


def harness_doc_to_text(doc: dict) -> str:
    """lm_eval/tasks/medqa/preprocess_medqa.py doc_to_text, as written there."""
    option_choices = {"A": doc["ending0"], "B": doc["ending1"], "C": doc["ending2"], "D": doc["ending3"]}
    answers = "".join(f"{k}. {v}\n" for k, v in option_choices.items())
    return f"Question: {doc['sent1']}\n{answers}Answer:"


def harness_process_results(lls: list[float], choices: list[str], gold: int) -> dict[str, float]:
    """The harness's multiple_choice process_results (lm_eval/api/task.py), for acc and acc_norm."""
    completion_len = np.array([float(len(i)) for i in choices])
    return {"acc": 1.0 if np.argmax(lls) == gold else 0.0,
            "acc_norm": 1.0 if np.argmax(np.array(lls) / completion_len) == gold else 0.0}


def test_harness_prompt_is_the_tasks_doc_to_text():
    assert medqa.harness_prompt(MEDQA_ROW) == harness_doc_to_text(harness_doc(MEDQA_ROW))
    assert medqa.harness_prompt(MEDQA_ROW).endswith("D. Amylase\nAnswer:")


def test_harness_acc_and_acc_norm_equal_the_harness_definition_on_fixed_logliks():
    rng = np.random.default_rng(5)
    # Letters (the task's choices) and, to exercise the normalisation, choices of different lengths.
    for choices in (list(medqa.HARNESS_CHOICES), ["yes", "no", "maybe so", "z"]):
        for _ in range(200):
            lls = list(rng.normal(-8, 3, 4).round(1))  # rounded: ties happen, argmax keeps the first
            gold = int(rng.integers(4))
            expected = harness_process_results(lls, choices, gold)
            assert float(medqa.harness_pick(lls, choices) == gold) == expected["acc"]
            assert float(medqa.harness_pick(lls, choices, normalise=True) == gold) == expected["acc_norm"]
    rows = [{"answer_idx": "B", "harness_loglik": {"A": -3.0, "B": -1.0, "C": -2.0, "D": -9.0}},
            {"answer_idx": "A", "harness_loglik": {"A": -3.0, "B": -1.0, "C": -2.0, "D": -9.0}}]
    assert medqa.harness_correct(rows, normalise=False) == medqa.harness_correct(rows, normalise=True) == [1.0, 0.0]


@pytest.mark.slow
def test_harness_logliks_follow_the_harness_encoding(tiny):
    """Each choice's log-likelihood: tokens of tok(context + " X") after len(tok(context)), one sequence at a time."""
    model, tokenizer = tiny
    [result] = medqa.score_questions(model, tokenizer, [MEDQA_ROW], SYSTEM, batch_size=3)
    context = harness_doc_to_text(harness_doc(MEDQA_ROW))
    expected = {}
    for letter in "ABCD":
        whole = tokenizer(context + " " + letter)["input_ids"]
        start = len(tokenizer(context)["input_ids"])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
        expected[letter] = sum(log_probs[j - 1, whole[j]].item() for j in range(start, len(whole)))
    assert result["harness_loglik"] == pytest.approx(expected, rel=1e-5)
    assert result["harness_predicted"] == max(expected, key=expected.get)


@pytest.mark.slow
def test_medqa_defaults_to_a_subsample_on_cpu_and_records_what_was_scored(shared_data):
    from training.config import EvalConfig
    from training.eval_run import load_medqa

    path = shared_data / "eval" / "medqa_usmle_4options_test.jsonl"
    if torch.cuda.is_available():
        pytest.skip("the CPU default is what is tested here")
    questions, source = load_medqa(EvalConfig(medqa=str(path)))
    assert len(questions) == medqa.CPU_LIMIT == source["n"] == source["limit"]
    assert source["type"] == "file" and source["sha256"] == sha256_file(path)
    questions, source = load_medqa(EvalConfig(medqa=str(path), medqa_limit=None))
    assert len(questions) == 1273 and source["limit"] is None


def test_medqa_loads_from_a_hub_dataset(hub_server, hub_token, tmp_path):
    from datasets import Dataset

    from common.errors import HubError

    repo = hub_server.repo_id("medqa")
    rows = [MEDQA_ROW, {**MEDQA_ROW, "question": "Second question?", "answer_idx": "C"}]
    Dataset.from_list([{**row, "meta_info": "step1"} for row in rows]).push_to_hub(repo, split="test")
    questions = medqa.load_questions(repo, split="test")
    assert questions == rows
    assert medqa.load_questions(repo, limit=1, split="test") == rows[:1]
    with pytest.raises(HubError, match=f"cannot load MedQA dataset .*{hub_server.user}/missing-medqa"):
        medqa.load_questions(f"{hub_server.user}/missing-medqa")


def test_grouped_decode_attention_equals_sdpa():
    """The decode step's attention without copied key/value heads computes what transformers' sdpa computes."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from training.generation import grouped_decode_attention

    generator = torch.Generator().manual_seed(3)
    batch, kv_heads, groups, length, dim = 3, 2, 4, 11, 8
    query = torch.randn(batch, kv_heads * groups, 1, dim, generator=generator)
    key, value = (torch.randn(batch, kv_heads, length, dim, generator=generator) for _ in range(2))
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    mask[0, ..., :4] = False  # left padding
    mask[2, ..., :7] = False
    module = SimpleNamespace(num_key_value_groups=groups, is_causal=True, training=False)
    for attention_mask in (mask, None):
        expected, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=0.3)
        got, _ = grouped_decode_attention(module, query, key, value, attention_mask, scaling=0.3)
        assert got.shape == expected.shape == (batch, 1, kv_heads * groups, dim)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_evaluation_model_decodes_as_plain_sdpa(tiny):
    from transformers import AutoModelForCausalLM

    from training.generation import DECODE_ATTENTION, generate

    model, tokenizer = tiny
    assert model.config._attn_implementation == DECODE_ATTENTION
    plain = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=torch.float32).eval()
    plain.generation_config = model.generation_config
    assert plain.config._attn_implementation == "sdpa" and plain.config.num_key_value_heads < plain.config.num_attention_heads
    prompts = [format_prompt(tokenizer, SYSTEM, q) for q in QUESTIONS]
    assert generate(model, tokenizer, prompts, 3, 16) == generate(plain, tokenizer, prompts, 3, 16)
