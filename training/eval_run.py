"""Evaluation, phase 1: run each model once and record what it did, in eval/<model>/.

The models are the base and every trained run (training.layout), each on the base it was trained on.
Answers are decoded with the adapter's saved generation settings (what the Space serves), and the
base decodes as the adapters it is compared with. Each model writes run.json (what ran, how),
predictions.jsonl (every answer with its per-example scores), medqa.jsonl (every MedQA answer) and
examples.jsonl (its answers to the example questions the model card shows), from which phase 2
(training/eval_report.py) derives every number.
"""
from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import replace_dir, write_json_atomic
from common.errors import ConfigError, DataError
from training.config import DECODING_KEYS, DEFAULT_SYSTEM_PROMPT, TINYLLAMA_ID, TINYLLAMA_REVISION, EvalConfig
from training.layout import BASE, DataDir, EvalDir, EvalRoot, RunsDir, write_jsonl

REQUIRED_COLUMNS = ("id", "question", "answer", "prompt", "completion")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_model: str
    base_revision: str | None
    adapter_dir: Path | None = None


def run_models(config: EvalConfig) -> None:
    """Run every selected model on the test split (and MedQA) and write its eval/<model>/ folder."""
    discovered = discover_models(config)
    specs = select_models(discovered, config.models)
    decoding = plan_decoding(specs, discovered, config.max_new_tokens)
    test = load_test_split(config)
    report = DataDir(config.data_dir).report_if_any()
    questions, medqa_source = load_medqa(config)
    for spec in specs:
        print(f"evaluating {spec.name} on {len(test)} examples" + (f" and {len(questions)} MedQA questions" if questions else ""))
        evaluate_model(spec, test, questions, report, config, decoding[spec.name], medqa_source)


# ---- which models, decoded how ------------------------------------------------------------------

def discover_models(config: EvalConfig) -> list[ModelSpec]:
    """The base model, then every trained run, each on the base it was trained on."""
    experiments = []
    for run in RunsDir(config.runs_dir).trained():
        run_config = run.config()
        experiments.append(ModelSpec(run.name, run_config.base_model, run_config.base_revision, run.adapter))
    base_model, base_revision = config.base_model, config.base_revision
    if base_model is None:
        bases = sorted({(e.base_model, e.base_revision) for e in experiments}, key=str)
        if len(bases) > 1:
            raise ConfigError(f"runs in {config.runs_dir} use different base models {bases}; set base_model in eval.yaml")
        base_model, base_revision = bases[0] if bases else (TINYLLAMA_ID, TINYLLAMA_REVISION)
    return [ModelSpec(BASE, base_model, base_revision), *experiments]


def select_models(specs: list[ModelSpec], wanted: list[str] | None) -> list[ModelSpec]:
    if not wanted:
        return specs
    known = {spec.name: spec for spec in specs}
    for name in wanted:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"available: {', '.join(known)}"
            raise ConfigError(f"--models: no model '{name}' (runs with an adapter, or 'base'; {hint})")
    return [known[name] for name in wanted]


def decoding_settings(adapter_dir: Path | None) -> dict[str, Any]:
    """How an adapter answers: the generation settings saved with it, which the Space serves.

    The one place evaluation reads them (today generation_config.json in the adapter folder, through
    training.chat). Without an adapter: the project's defaults. temperature and top_p are None when
    decoding is greedy, since they then play no part.
    """
    if adapter_dir is None:
        from training.config import GenerationConfig

        saved = GenerationConfig()
    else:
        from training.chat import read_generation_config

        saved = read_generation_config(adapter_dir)
    settings = {key: getattr(saved, key) for key in DECODING_KEYS}
    if not settings["do_sample"]:
        settings.update(temperature=None, top_p=None)
    return settings


def plan_decoding(specs: list[ModelSpec], discovered: list[ModelSpec], max_new_tokens: int | None) -> dict[str, dict]:
    """Each model's decoding: its adapter's settings; the base decodes as the adapters it is compared with.

    Adapters that decode differently cannot share one base run, so that is refused (evaluate them into
    separate output folders). `max_new_tokens` (the CLI override for quick runs) replaces the length cap.
    """
    adapters = [spec for spec in specs if spec.adapter_dir] or [spec for spec in discovered if spec.adapter_dir]
    plan = {spec.name: {**decoding_settings(spec.adapter_dir), "from": f"adapter {spec.name}"} for spec in adapters}
    distinct = {json.dumps({k: plan[s.name][k] for k in DECODING_KEYS}, sort_keys=True) for s in adapters}
    if len(distinct) > 1:
        shown = "; ".join(f"{s.name}: {', '.join(f'{k}={plan[s.name][k]}' for k in DECODING_KEYS)}" for s in adapters)
        raise ConfigError(f"the adapters decode differently ({shown}), so one base run cannot be compared with all; "
                          "evaluate them with --set models=... and separate --set output_dir=... folders")
    shared = {k: plan[adapters[0].name][k] for k in DECODING_KEYS} if adapters else decoding_settings(None)
    names = ", ".join(s.name for s in adapters)
    plan[BASE] = {**shared, "from": f"the adapters' settings ({names})" if adapters else "project defaults (no adapter)"}
    if max_new_tokens is not None:
        for settings in plan.values():
            settings.update(max_new_tokens=max_new_tokens, **{"from": settings["from"] + ", max_new_tokens overridden "
                                                                    "on the command line"})
    return plan


# ---- what they are evaluated on -------------------------------------------------------------------

def load_test_split(config: EvalConfig):
    from datasets import load_from_disk

    try:
        splits = load_from_disk(str(config.data_dir))
    except FileNotFoundError:
        raise DataError(f"{config.data_dir}: no prepared dataset (run `python -m training prepare` first)") from None
    if config.split not in splits:
        raise DataError(f"{config.data_dir}: no split '{config.split}' (has {', '.join(splits)})")
    test = splits[config.split]
    missing = [c for c in REQUIRED_COLUMNS if c not in test.column_names]
    if missing:
        raise DataError(f"{config.data_dir}/{config.split}: missing columns {missing} (rerun prepare)")
    if config.limit:
        test = test.select(range(min(config.limit, len(test))))
    if len(test) == 0:
        raise DataError(f"{config.data_dir}/{config.split}: no examples")
    return test


def load_medqa(config: EvalConfig) -> tuple[list[dict] | None, dict | None]:
    """The MedQA questions to score and what they are (source with its resolved commit or sha256, n, limit)."""
    if not config.medqa:
        return None, None
    import torch

    from training import medqa

    limit = config.medqa_limit
    if limit == "auto":
        limit = None if torch.cuda.is_available() else medqa.CPU_LIMIT
    source = medqa.source_record(config.medqa, config.medqa_split, config.medqa_revision)
    questions = medqa.load_questions(config.medqa, limit, config.medqa_split, source.get("revision"))
    return questions, {**source, "limit": limit, "n": len(questions)}


# ---- one model -----------------------------------------------------------------------------------

def evaluate_model(spec: ModelSpec, test, questions, report: dict, config: EvalConfig, decoding: dict,
                   medqa_source: dict | None = None) -> Path:
    """Run one model and write eval/<name>/ (predictions, MedQA answers, example answers, run.json) in one step."""
    import torch

    from training import provenance
    from training.chat import format_prompt, stop_token_ids
    from training.config import dump
    from training.generation import completion_log_likelihoods, generate, load_model
    from training.medqa import score_questions
    from training.metric_registry import recorded_settings
    from training.metrics import INTERVAL_METHOD

    model, tokenizer = load_model(spec.base_model, spec.base_revision, spec.adapter_dir, config.precision)
    parameters = sum(p.numel() for p in model.parameters())  # the base's: a merged adapter adds none
    # Scoring holds full-vocabulary logits, so it keeps a small batch; generation takes the largest batch
    # that fits (below).
    batch_size = config.batch_size or 16
    generation_batch = config.batch_size or default_generation_batch(model.device)
    system_prompt = report.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
    # The example questions are answered in the same call as the test questions: the same decoding, no
    # second compilation of the decode step on a GPU.
    prompts = list(test["prompt"]) + [format_prompt(tokenizer, system_prompt, q) for q in config.example_questions]
    if decoding["do_sample"]:
        torch.manual_seed(config.seed)
    started = time.perf_counter()
    answers = generate(model, tokenizer, prompts, generation_batch, decoding["max_new_tokens"],
                       sampling={k: decoding[k] for k in DECODING_KEYS if k != "max_new_tokens"})
    generation_s = time.perf_counter() - started
    predictions = answers[:len(test)]
    examples = [{"question": q, "prediction": a} for q, a in zip(config.example_questions, answers[len(test):])]
    likelihoods = completion_log_likelihoods(model, tokenizer, test["prompt"], test["completion"], batch_size)
    medqa = None
    if questions:
        medqa = score_questions(model, tokenizer, questions, system_prompt, batch_size)
    total_s = time.perf_counter() - started
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    records = per_example_records(test, predictions, likelihoods, tokenizer)
    stops = tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer))
    run_info = {
        "model": spec.name,
        "base_model": {"id": spec.base_model, "revision": spec.base_revision, "parameters": parameters},
        "adapter": adapter_info(spec.adapter_dir),
        "n": len(records),
        "medqa_n": len(medqa) if medqa else 0,
        "decoding": {**decoding, "stop_tokens": stops, "seed": config.seed if decoding["do_sample"] else None},
        "timing": {"generation_s": round(generation_s, 3), "total_s": round(total_s, 3),
                   "examples_per_s": round(len(prompts) / generation_s, 3)},
        "data": {"dir": str(config.data_dir), "split": config.split, "fingerprint": report.get("fingerprint"),
                 "sources": report.get("sources")},
        "medqa_source": medqa_source if medqa else None,
        "metric_settings": {**recorded_settings(), "intervals": INTERVAL_METHOD},
        "config": dump(config),
        "provenance": provenance.stamp(),
    }

    def write(folder: Path) -> None:
        written = EvalDir(folder)
        write_jsonl(written.predictions_file, records)
        if medqa:
            write_jsonl(written.medqa_file, medqa)
        write_jsonl(written.examples_file, examples)
        write_json_atomic(written.run_file, run_info)

    return replace_dir(EvalRoot(config.output_dir).model(spec.name).path, write)


def default_generation_batch(device) -> int:
    """Questions decoded at once. A GPU decode step costs nearly the same for 16 rows as for hundreds, so
    bigger batches answer faster: on an H200, 50.7k tokens/s at 256 and 77.6k at 1024 (17.8 GB peak with
    256 new tokens; bench/README.md). 1024 on GPUs of 32 GiB and more, 256 on smaller ones, 16 on a CPU."""
    import torch

    if device.type != "cuda":
        return 16
    return 1024 if torch.cuda.get_device_properties(device).total_memory >= 32 * 2**30 else 256


def per_example_records(test, predictions: list[str], likelihoods: list[tuple[float, int]], tokenizer) -> list[dict]:
    """predictions.jsonl rows. `reference_tokens` (the answer alone, no special tokens) lets the card say how
    many references are longer than max_new_tokens; `answer_tokens` also counts the end-of-turn token."""
    import math

    from training.metrics import bleu_statistics, nltk_sentence_bleu, rouge_scores, sentence_bleu_from_stats

    references = test["answer"]
    bleu_stats = bleu_statistics(predictions, references)
    rouge = rouge_scores(predictions, references)
    nltk = nltk_sentence_bleu(predictions, references)
    reference_tokens = [len(ids) for ids in tokenizer(list(references), add_special_tokens=False)["input_ids"]]
    records = []
    for i, row in enumerate(test):
        nll, tokens = likelihoods[i]
        records.append({
            "id": row["id"], "question": row["question"], "reference": row["answer"], "prediction": predictions[i],
            "scores": {
                "bleu": sentence_bleu_from_stats(bleu_stats[i]),
                "nltk_sentence_bleu": float(nltk[i]),
                **{kind: float(values[i]) for kind, values in rouge.items()},
                "nll": nll, "answer_tokens": tokens,
                "perplexity": math.exp(nll / tokens) if tokens else None,
                "reference_tokens": reference_tokens[i],
            },
        })
    return records


def adapter_info(adapter_dir: Path | None) -> dict | None:
    if adapter_dir is None:
        return None
    from training.provenance import sha256_file

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    return {"path": str(adapter_dir), "sha256": sha256_file(weights) if weights.exists() else None}
