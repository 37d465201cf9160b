"""`python -m training evaluate`: the base model and every trained adapter on the test split.

Two phases. `evaluate_model` runs a model once (answers decoded with the adapter's saved generation
settings, answer perplexity, MedQA two ways) and writes eval/<model>/predictions.jsonl (+ medqa.jsonl);
`summarise` then derives everything else from those files alone: metrics with BCa bootstrap intervals,
paired differences against the base, comparison.md/json and the plots. So a rerun of one model
refreshes every comparison, and anyone holding those files can recompute every number.
"""
from __future__ import annotations

import argparse
import difflib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import replace_dir, write_json_atomic, write_text_atomic
from common.errors import ConfigError, DataError
from training.config import CONFIG_DIR, DEFAULT_SYSTEM_PROMPT, TINYLLAMA_ID, TINYLLAMA_REVISION, EvalConfig

BASE = "base"
# Row order of comparison tables; the direction says which way is better.
METRICS = ("bleu", "nltk_sentence_bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "perplexity",
           "medqa_accuracy", "medqa_harness_acc", "medqa_harness_acc_norm")
MEDQA_METRICS = ("medqa_accuracy", "medqa_harness_acc", "medqa_harness_acc_norm")
# Scored on generated answers, so only comparable between models that decoded the same way.
DECODED_METRICS = ("bleu", "nltk_sentence_bleu", "rouge1", "rouge2", "rougeL", "rougeLsum")
LOWER_IS_BETTER = {"perplexity"}
RETIRED_METRICS = ("nltk_bleu",)  # older eval/ folders: dropped when re-summarised (it was bleu / 100)
# How answers are decoded: the generation settings saved with an adapter (decoding_settings).
DECODING_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "repetition_penalty")
PERPLEXITY_SETTINGS = ("exp of the mean negative log-likelihood per token over the reference answers' tokens plus "
                       "the end-of-turn token, teacher-forced after the chat prompt (prompt tokens not scored)")
REQUIRED_COLUMNS = ("id", "question", "answer", "prompt", "completion")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_model: str
    base_revision: str | None
    adapter_dir: Path | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="reads CONFIG_DIR/eval.yaml when present")
    parser.add_argument("--config", type=Path, help="an eval YAML file (default: CONFIG_DIR/eval.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an EvalConfig setting, e.g. --set limit=20 --set models=base,exp1 "
                        "--set medqa=null (repeatable)")


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    summary = evaluate(config)
    for name, metrics in summary["models"].items():
        shown = ", ".join(f"{m}={metrics[m]['value']:.4g}" for m in METRICS if m in metrics)
        print(f"{name}: {shown}")
    print(f"wrote {config.output_dir}/comparison.md and {config.output_dir}/plots/")
    return 0


def resolve_config(args: argparse.Namespace) -> EvalConfig:
    """eval.yaml (when present) < --set."""
    from training.config import load_config

    path = args.config or (args.config_dir / "eval.yaml")
    if args.config is None and not path.exists():
        path = None
    return load_config(EvalConfig, path, args.set)


# --- phase 1: run models ----------------------------------------------------------------------

def evaluate(config: EvalConfig) -> dict[str, Any]:
    discovered = discover_models(config)
    specs = select_models(discovered, config.models)
    decoding = plan_decoding(specs, discovered, config.max_new_tokens)
    test = load_test_split(config)
    report = read_data_report(config.data_dir)
    questions, medqa_source = load_medqa(config)
    for spec in specs:
        print(f"evaluating {spec.name} on {len(test)} examples" + (f" and {len(questions)} MedQA questions" if questions else ""))
        evaluate_model(spec, test, questions, report, config, decoding[spec.name], medqa_source)
    return summarise(config.output_dir, config)


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


def discover_models(config: EvalConfig) -> list[ModelSpec]:
    """The base model, then every runs_dir/<name> holding an adapter, each on the base it was trained on."""
    from training.config import ExperimentConfig, load_config

    experiments = []
    runs_dir = Path(config.runs_dir)
    for run_dir in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if not (run_dir / "adapter" / "adapter_config.json").exists():
            continue
        if not (run_dir / "config.yaml").exists():
            raise DataError(f"{run_dir}: has an adapter but no config.yaml (its base model is unknown)")
        run_config = load_config(ExperimentConfig, run_dir / "config.yaml")
        experiments.append(ModelSpec(run_dir.name, run_config.base_model, run_config.base_revision, run_dir / "adapter"))
    base_model, base_revision = config.base_model, config.base_revision
    if base_model is None:
        bases = sorted({(e.base_model, e.base_revision) for e in experiments}, key=str)
        if len(bases) > 1:
            raise ConfigError(f"runs in {runs_dir} use different base models {bases}; set base_model in eval.yaml")
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


def read_data_report(data_dir: Path) -> dict[str, Any]:
    from training.prepare import REPORT_FILE

    path = Path(data_dir) / REPORT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def evaluate_model(spec: ModelSpec, test, questions, report: dict, config: EvalConfig, decoding: dict,
                   medqa_source: dict | None = None) -> Path:
    """Run one model and write eval/<name>/ (predictions, MedQA answers, run details) in one step."""
    import torch

    from training import provenance
    from training.chat import stop_token_ids
    from training.config import dump
    from training.generation import completion_log_likelihoods, generate, load_model
    from training.medqa import score_questions

    model, tokenizer = load_model(spec.base_model, spec.base_revision, spec.adapter_dir, config.precision)
    # Scoring holds full-vocabulary logits, so it keeps a small batch; generation takes the largest batch
    # that fits (below).
    batch_size = config.batch_size or 16
    generation_batch = config.batch_size or default_generation_batch(model.device)
    if decoding["do_sample"]:
        torch.manual_seed(config.seed)
    started = time.perf_counter()
    predictions = generate(model, tokenizer, test["prompt"], generation_batch, decoding["max_new_tokens"],
                           sampling={k: decoding[k] for k in DECODING_KEYS if k != "max_new_tokens"})
    generation_s = time.perf_counter() - started
    likelihoods = completion_log_likelihoods(model, tokenizer, test["prompt"], test["completion"], batch_size)
    medqa = None
    if questions:
        system_prompt = report.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
        medqa = score_questions(model, tokenizer, questions, system_prompt, batch_size)
    total_s = time.perf_counter() - started
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    records = per_example_records(test, predictions, likelihoods, tokenizer)
    stops = tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer))
    run_info = {
        "model": spec.name,
        "base_model": {"id": spec.base_model, "revision": spec.base_revision},
        "adapter": adapter_info(spec.adapter_dir),
        "n": len(records),
        "medqa_n": len(medqa) if medqa else 0,
        "decoding": {**decoding, "stop_tokens": stops, "seed": config.seed if decoding["do_sample"] else None},
        "timing": {"generation_s": round(generation_s, 3), "total_s": round(total_s, 3),
                   "examples_per_s": round(len(records) / generation_s, 3)},
        "data": {"dir": str(config.data_dir), "split": config.split, "fingerprint": report.get("fingerprint"),
                 "sources": report.get("sources")},
        "medqa_source": medqa_source if medqa else None,
        "metric_settings": metric_settings(),
        "config": dump(config),
        "provenance": provenance.stamp(),
    }

    def write(folder: Path) -> None:
        write_jsonl(folder / "predictions.jsonl", records)
        if medqa:
            write_jsonl(folder / "medqa.jsonl", medqa)
        write_json_atomic(folder / "metrics.json", run_info)

    return replace_dir(Path(config.output_dir) / spec.name, write)



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


def metric_settings() -> dict[str, str]:
    """How each metric is computed, in words a reader can recompute from (stated on the card)."""
    from training import metrics as M
    from training.medqa import HARNESS_COMMIT, HARNESS_REPO, HARNESS_TASK

    return {
        "bleu": f"sacrebleu corpus BLEU, signature {M.bleu_signature()}",
        "nltk_sentence_bleu": M.NLTK_SETTINGS,
        "rouge": M.ROUGE_SETTINGS,
        "perplexity": PERPLEXITY_SETTINGS,
        "medqa_accuracy": "chat template, options listed; each option's text scored as the reply; "
                          "highest mean log-probability per token",
        "medqa_harness": f"{HARNESS_REPO} task {HARNESS_TASK} (commit {HARNESS_COMMIT[:12]}), zero-shot; acc and "
                         "acc_norm (log-likelihood / characters of the choice); stderr sqrt(p(1-p)/(n-1))",
        "intervals": M.INTERVAL_METHOD,
    }


def adapter_info(adapter_dir: Path | None) -> dict | None:
    if adapter_dir is None:
        return None
    from training.provenance import sha256_file

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    return {"path": str(adapter_dir), "sha256": sha256_file(weights) if weights.exists() else None}


# --- phase 2: metrics, comparison, plots --------------------------------------------------------

def summarise(output_dir: Path, config: EvalConfig) -> dict[str, Any]:
    """Metrics with CIs for every model folder in output_dir, paired against base, then tables and plots."""
    from training import plots
    from training.metrics import INTERVAL_METHOD, resample_counts

    output_dir = Path(output_dir)
    names = sorted((p.parent.name for p in output_dir.glob("*/predictions.jsonl")), key=lambda n: (n != BASE, n))
    statistics = {name: model_statistics(output_dir / name) for name in names}
    infos = {name: read_run_info(output_dir / name) for name in names}
    comparison: dict[str, Any] = {"models": {}, "paired_vs_base": {}, "n": {}, "decoding": {},
                                  "confidence": config.confidence, "interval_method": INTERVAL_METHOD,
                                  "bootstrap_resamples": config.bootstrap_resamples, "seed": config.seed}
    for name in names:
        ids, stats = statistics[name]
        # One resample matrix per population, shared by the intervals and the paired differences
        # (paired needs the same examples as base, so the same counts apply).
        counts = {population: resample_counts(len(members), config.bootstrap_resamples, config.seed)
                  for population, members in ids.items()}
        metrics = intervals(stats, counts, config.confidence)
        info = infos[name]
        paired = None
        if name != BASE and BASE in statistics:
            same_decoding = _decoding(info) == _decoding(infos[BASE])
            paired = paired_against(statistics[BASE], (ids, stats), counts, config.confidence, same_decoding)
        info["references_over_max_new_tokens"] = references_over(output_dir / name, info)
        kept = {k: v for k, v in info.items() if k not in METRICS and k not in RETIRED_METRICS}
        write_json_atomic(output_dir / name / "metrics.json", {
            **kept, **metrics, "paired_vs_base": paired, "n_per_metric": n_per_metric(ids, metrics),
            "intervals": {"method": INTERVAL_METHOD, "confidence": config.confidence,
                          "resamples": config.bootstrap_resamples, "seed": config.seed},
        })
        comparison["models"][name] = metrics
        comparison["paired_vs_base"][name] = paired
        comparison["n"][name] = {"test": len(ids["test"]), "medqa": len(ids["medqa"])}
        comparison["decoding"][name] = info.get("decoding")
    write_json_atomic(output_dir / "comparison.json", comparison)
    write_text_atomic(output_dir / "comparison.md", comparison_markdown(comparison))
    if comparison["models"]:
        plots.plot_metrics(comparison["models"], output_dir / "plots" / "metrics.png", config.confidence)
    plots.plot_loss_curves(read_loss_curves(config.runs_dir), output_dir / "plots" / "loss_curves.png")
    return comparison


def model_statistics(folder: Path):
    """(example ids, {metric: Statistic}) from a model's predictions.jsonl and medqa.jsonl."""
    from training import metrics as M
    from training.medqa import harness_correct

    records = read_jsonl(folder / "predictions.jsonl")
    predictions = [r["prediction"] for r in records]
    references = [r["reference"] for r in records]
    per_example = {kind: [r["scores"][kind] for r in records] for kind in (*M.ROUGE_TYPES, "nltk_sentence_bleu")
                   if all(kind in r["scores"] for r in records)}
    stats = {
        "bleu": M.bleu(predictions, references),
        **{kind: M.mean(values) for kind, values in per_example.items()},
        "perplexity": M.perplexity([r["scores"]["nll"] for r in records], [r["scores"]["answer_tokens"] for r in records]),
    }
    medqa = read_jsonl(folder / "medqa.jsonl") if (folder / "medqa.jsonl").exists() else []
    if medqa:
        stats["medqa_accuracy"] = M.mean([float(q["correct"]) for q in medqa])
    if medqa and all("harness_loglik" in q for q in medqa):
        stats["medqa_harness_acc"] = M.mean(harness_correct(medqa, normalise=False))
        stats["medqa_harness_acc_norm"] = M.mean(harness_correct(medqa, normalise=True))
    ids = {"test": [r["id"] for r in records], "medqa": [q["question"] for q in medqa]}
    return ids, stats


def read_run_info(folder: Path) -> dict[str, Any]:
    path = folder / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"model": folder.name}


def _decoding(info: dict) -> dict | None:
    decoding = info.get("decoding")
    return {k: decoding.get(k) for k in DECODING_KEYS} if decoding else None


def references_over(folder: Path, info: dict) -> int | None:
    """How many reference answers are longer (in tokens) than the answers were allowed to be."""
    cap = (info.get("decoding") or {}).get("max_new_tokens")
    records = read_jsonl(folder / "predictions.jsonl")
    if cap is None or not all("reference_tokens" in r["scores"] for r in records):
        return None
    return sum(r["scores"]["reference_tokens"] > cap for r in records)


def _population(metric: str) -> str:
    return "medqa" if metric in MEDQA_METRICS else "test"


def n_per_metric(ids: dict, metrics: dict) -> dict[str, int]:
    return {metric: len(ids[_population(metric)]) for metric in metrics}


def intervals(stats: dict, counts: dict, confidence: float) -> dict[str, dict[str, float]]:
    """BCa interval per metric; accuracies also get the harness's standard error."""
    from training.metrics import bootstrap_ci, mean_stderr

    result = {metric: bootstrap_ci(stat, counts[_population(metric)], confidence) for metric, stat in stats.items()}
    for metric in MEDQA_METRICS:
        if metric in stats:
            result[metric]["stderr"] = mean_stderr(stats[metric].per_example[:, 0])
    return result


def paired_against(base, model, counts: dict, confidence: float,
                   same_decoding: bool = True) -> dict[str, dict[str, float]] | None:
    """model minus base on the same resamples; only over metrics both were scored on, on the same examples,
    and (for metrics of generated answers) decoded the same way."""
    from training.metrics import paired_bootstrap

    if base is None:
        return None
    (base_ids, base_stats), (ids, stats) = base, model
    return {
        metric: paired_bootstrap(stat, base_stats[metric], counts[_population(metric)], confidence)
        for metric, stat in stats.items()
        if metric in base_stats and ids[_population(metric)] == base_ids[_population(metric)]
        and (same_decoding or metric not in DECODED_METRICS)
    }


def comparison_markdown(comparison: dict[str, Any]) -> str:
    models = comparison["models"]
    metrics = [m for m in METRICS if any(m in values for values in models.values())]
    level = round(comparison["confidence"] * 100)
    lines = [
        "# Evaluation",
        "",
        f"Point estimates with {level}% {comparison['interval_method']} intervals "
        f"({comparison['bootstrap_resamples']} resamples, seed {comparison['seed']}). bleu is sacrebleu corpus BLEU "
        "(0-100); nltk_sentence_bleu the mean of nltk sentence BLEU (method1 smoothing, 13a tokens; 0-1); ROUGE is "
        "rouge-score F1 with stemming; perplexity is over the reference answer tokens plus end of turn (lower is "
        "better); medqa_accuracy scores option texts after the chat prompt, medqa_harness_acc/_acc_norm are "
        "lm-evaluation-harness's medqa_4options (zero-shot).",
        "",
        "| model | n (test / MedQA) | decoding | " + " | ".join(metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for name, values in models.items():
        cells = [_cell(values.get(m), "value") for m in metrics]
        n = comparison["n"][name]
        lines.append(f"| {name} | {n['test']} / {n['medqa']} | {decoding_text(comparison['decoding'].get(name))} | "
                     + " | ".join(cells) + " |")
    paired = {name: diffs for name, diffs in comparison["paired_vs_base"].items() if diffs}
    if paired:
        lines += ["", f"## Fine-tuned minus base (paired bootstrap, {level}% interval)", "",
                  "| model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for name, diffs in paired.items():
            lines.append(f"| {name} | " + " | ".join(_cell(diffs.get(m), "diff") for m in metrics) + " |")
        lines += ["", "An interval that excludes 0 marks a difference unlikely to be resampling noise "
                  f"(for {', '.join(sorted(LOWER_IS_BETTER))}, lower is better, so negative is an improvement)."]
    return "\n".join(lines) + "\n"


def decoding_text(decoding: dict | None) -> str:
    """`greedy, max_new_tokens 256, repetition_penalty 1.0` (or sampling with its temperature and top_p)."""
    if not decoding:
        return "–"
    how = ("greedy" if not decoding.get("do_sample")
           else f"sampling (temperature {decoding['temperature']}, top_p {decoding['top_p']}, seed {decoding.get('seed')})")
    return f"{how}, max_new_tokens {decoding['max_new_tokens']}, repetition_penalty {decoding['repetition_penalty']}"


def _cell(entry: dict | None, key: str) -> str:
    if entry is None:
        return "–"
    return f"{entry[key]:.4g} [{entry['ci_low']:.4g}, {entry['ci_high']:.4g}]"


def read_loss_curves(runs_dir: Path) -> dict[str, dict]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return {}
    return {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(runs_dir.glob("*/metrics.json"))}


# --- files --------------------------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
