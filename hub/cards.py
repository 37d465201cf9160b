"""Model and dataset cards: Hub metadata (ModelCardData / DatasetCardData) + a Jinja body.

Cards are built only from the published artifacts (never from the clock or the machine that
pushes), so pushing the same artifacts twice renders the same bytes and makes no commit.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import HubError
from common.hub_ids import is_hub_id
from hub.artifacts import Experiment, Inputs
from training import metric_registry as registry
from training.config import MEDQA_ID
from training.layout import BASE

TEMPLATES = Path(__file__).parent / "templates"
HUB_URL = "https://huggingface.co"
TAGS = ["medical", "lora", "peft", "trl", "sft", "question-answering"]
# The eval/ folder pushed with each branch: per model, what `training evaluate` wrote (training.layout's
# EvalDir files), from which every number on the card is recomputed.
EVAL_FOLDER = "eval"


@dataclass(frozen=True)
class Where:
    """Where things are published: names the cards link to."""

    adapter_repo: str
    dataset_repo: str
    dataset_revision: str | None  # commit of the dataset repo, when pushed
    branch_prefix: str
    license: str
    base_model_repo: str | None = None  # names the base on the Hub when training used a local folder
    base_model_revision: str | None = None

    def base_model(self, exp: Experiment) -> tuple[str, str | None]:
        return published_base(*exp.base_model, self.base_model_repo, self.base_model_revision)


def published_base(base_id: str, revision: str | None, hub_repo: str | None, hub_revision: str | None):
    """The base as users should load it: the run's own, unless that was a local folder."""
    if hub_repo and not is_hub_id(base_id):
        return hub_repo, hub_revision
    return base_id, revision


def hub_link(repo_id: str, repo_type: str = "model") -> str:
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    return f"{HUB_URL}/{prefix}{repo_id}"


def fmt_metric(metric: dict[str, float] | None, pattern: str, key: str = "value", signed: bool = False) -> str:
    """`value [ci_low, ci_high]` (`± stderr` where there is one); signed for differences."""
    if not metric:
        return "–"
    show = (lambda x: pattern.replace("{:", "{:+").format(x)) if signed else pattern.format
    text = f"{show(metric[key])} [{show(metric['ci_low'])}, {show(metric['ci_high'])}]"
    if metric.get("stderr") is not None:
        text += f" ± {pattern.format(metric['stderr'])}"
    return text


def metrics_table(inputs: Inputs, experiments: list[Experiment]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per metric that someone has: n, then base and each evaluated experiment (model columns)."""
    columns = [(name, m) for name, m in [("base", inputs.base_eval)] + [(e.name, e.eval_metrics) for e in experiments] if m]
    rows = []
    for metric in registry.present(*(m for _, m in columns)):
        counts = sorted({str(metric_n(m, metric)) for _, m in columns if metric.key in m})
        rows.append({"name": metric.label,
                     "cells": [" / ".join(counts)] + [fmt_metric(m.get(metric.key), metric.fmt) for _, m in columns]})
    return ["n"] + [name for name, _ in columns], rows


def paired_table(experiments: list[Experiment]) -> tuple[list[str], list[dict[str, Any]]]:
    """Experiment minus base per metric, paired on the same examples (the intervals that answer "is it better")."""
    columns = [(e.name, (e.eval_metrics or {}).get("paired_vs_base")) for e in experiments]
    columns = [(name, paired) for name, paired in columns if paired]
    rows = [{"name": metric.label,
             "cells": [fmt_metric(paired.get(metric.key), metric.fmt, "diff", signed=True) for _, paired in columns]}
            for metric in registry.present(*(paired for _, paired in columns))]
    return [f"{name} − base" for name, _ in columns], rows


def metric_n(metrics: dict[str, Any], metric: registry.Metric) -> int | str:
    """How many examples (or MedQA questions) a metric was computed on."""
    per_metric = metrics.get("n_per_metric") or {}
    if metric.key in per_metric:
        return per_metric[metric.key]
    return metrics.get(metric.population.count_key, "–")


def evaluation_notes(exp: Experiment, inputs: Inputs) -> dict[str, Any]:
    """What the card states about how the numbers were made, read from eval_metrics.json."""
    from training.eval_report import decoding_of, decoding_text

    metrics = exp.eval_metrics or {}
    decoding = metrics.get("decoding") or {}
    intervals = metrics.get("intervals") or {}
    medqa = metrics.get("medqa_source") or {}
    shown = registry.present(metrics, inputs.base_eval)
    return {
        "decoding": decoding_text(decoding) if decoding else None,
        "decoding_from": decoding.get("from"),
        "stop_tokens": ", ".join(f"`{t}`" for t in decoding.get("stop_tokens") or []),
        "base_same_decoding": bool(inputs.base_eval) and decoding_of(metrics) == decoding_of(inputs.base_eval),
        "references_over": metrics.get("references_over_max_new_tokens"),
        "n": metrics.get("n"),
        "max_new_tokens": decoding.get("max_new_tokens"),
        "methods": registry.method_lines(shown, metrics.get("metric_settings") or {}),
        "lower_is_better": ", ".join(metric.label for metric in shown if metric.lower_is_better),
        "interval_method": intervals.get("method", "bootstrap"),
        "confidence": round(100 * float(intervals.get("confidence", 0.95))),
        "resamples": intervals.get("resamples"),
        "seed": intervals.get("seed"),
        "medqa": medqa_text(medqa) if medqa else None,
        "medqa_n": metrics.get("medqa_n"),
    }


def medqa_text(source: dict[str, Any]) -> str:
    if source.get("type") == "hub":
        where = f"`{source['id']}` split `{source.get('split')}` at commit `{source.get('revision')}`"
    else:
        where = f"`{Path(str(source.get('path'))).name}` (sha256 `{str(source.get('sha256'))[:12]}`)"
    limit = source.get("limit")
    return where + (f", the first {source.get('n')} questions (limit {limit})" if limit else f", all {source.get('n')} questions")


def eval_results(exp: Experiment, where: Where) -> list:
    """model-index entries: one per metric, each naming its dataset, revision and settings."""
    from huggingface_hub import EvalResult

    metrics = exp.eval_metrics or {}
    medqa = metrics.get("medqa_source") or {}
    settings = metrics.get("metric_settings") or {}
    results = []
    for metric in (m for m in registry.present(metrics) if m.index_type):
        is_medqa = metric.population is registry.MEDQA
        from_hub = medqa.get("type") == "hub" and is_hub_id(str(medqa.get("id")))
        results.append(EvalResult(
            task_type="question-answering" if is_medqa else "text-generation",
            task_name="Multiple-choice medical QA" if is_medqa else "Medical question answering",
            dataset_type=(medqa["id"] if from_hub else MEDQA_ID) if is_medqa else where.dataset_repo,
            dataset_name="MedQA (USMLE, 4 options)" if is_medqa else "Medical flashcards (chat)",
            dataset_split="test" if is_medqa else (metrics.get("data") or {}).get("split", "test"),
            dataset_revision=(medqa.get("revision") if from_hub else None) if is_medqa else where.dataset_revision,
            metric_type=metric.index_type,
            metric_name=metric.label,
            metric_value=round(float(metrics[metric.key]["value"]), 4),
            # the settings a reader needs to reproduce the value, as evaluation recorded them
            metric_args={**metric.method.index_args(settings.get(metric.method.key, "")), "n": metric_n(metrics, metric)},
        ))
    return results


def hyperparameter_rows(config, plan: dict | None = None,
                        base: tuple[str, str | None] | None = None) -> list[tuple[str, str, str]]:
    """(setting, value, what it means) for every ExperimentConfig field, from the config model itself; where the
    run's plan (provenance.json `plan`, training/plan.py) resolved a setting for its GPU, `configured → used`;
    with `base`, the base model as published (Where.base_model), as the front matter names it."""
    from training.config import field_rows

    def cell(text: str) -> str:  # one Markdown table cell
        return text.replace("|", "\\|").replace("\n", " ")

    def shown(value) -> str:
        return str(value) if isinstance(value, (str, Path)) else json.dumps(value)

    trained_on = config.base_model
    if base and base != (config.base_model, config.base_revision):
        config = config.model_copy(update={"base_model": base[0], "base_revision": base[1]})
    notes = {"base_model": f" (trained on a local copy, `{trained_on}`)"} if config.base_model != trained_on else {}
    used = {} if not plan else {
        **{name: str(plan[name]) for name in ("eval_steps", "save_steps", "logging_steps", "precision",
                                               "quantization")},
        "max_steps": str(plan["planned_steps"]), "padding_free": shown(plan["padding_free"]),
        "batch_tokens": str(plan["micro_batch"] * plan["row_tokens"]) if plan["packed"] else "null",
        "liger_kernels": shown(plan["liger"]), "compile_layers": shown(plan["compile_layers"]),
    }
    if plan and plan["learning_rate"] != plan["base_learning_rate"]:
        used["learning_rate"] = f"{plan['learning_rate']:.4g} ({plan['lr_rule']})"
    rows = []
    for name, value, description in field_rows(config):
        text = shown(value)
        if name in used and used[name] != text:
            text += f" → {used[name]}"
        rows.append((name, cell(text), cell(description + notes.get(name, ""))))
    return rows


def parameters_text(count: int | None) -> str | None:
    """134,515,008 -> "135M", 1,100,048,384 -> "1.1B": the base's size as the card states it."""
    if not count:
        return None
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            value = count / size
            return f"{value:.1f}{unit}" if value < 10 and unit == "B" else f"{value:.0f}{unit}"
    return str(count)


def base_parameters(exp: Experiment, inputs: Inputs) -> int | None:
    """The base's parameter count, as evaluation counted it when it loaded the model."""
    for metrics in (exp.eval_metrics, inputs.base_eval):
        count = ((metrics or {}).get("base_model") or {}).get("parameters")
        if count:
            return int(count)
    return None


# Every ASCII punctuation character: CommonMark lets each be backslash-escaped, so escaping them all leaves no
# Markdown syntax (HTML, links, images, emphasis, code, table borders, entities) in the text.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def inert(text: str | None, missing: str = "–") -> str:
    """Model or data text as one Markdown table cell that renders as exactly that text and nothing else:
    punctuation escaped, line breaks as spaces (a cell is one line); `missing` where there is none."""
    if text is None:
        return missing
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(text.split())) or "_(empty answer)_"


def example_rows(exp: Experiment, inputs: Inputs) -> list[dict[str, str]]:
    """The card's example answers (training.example_answers): base and this experiment side by side, every
    text made inert."""
    from training.example_answers import side_by_side

    if exp.eval_metrics is None:
        return []
    rows = []
    for example in side_by_side(exp.eval, inputs.evaluation.model(BASE), exp.eval_metrics.get("examples")):
        if example.id is None:
            why = "An example question, not from the test split, so there is no reference answer."
        else:
            base = f"; base {example.base_score:.3f}" if example.base_score is not None else ""
            why = (f"Test question `{example.id}`: the fine-tuned model's {example.rank} ROUGE-L on the test split "
                   f"({example.score:.3f}{base}).")
        rows.append({"question": inert(example.question), "why": why,
                     "reference": inert(example.reference, "– (none)"), "base": inert(example.base_answer),
                     "answer": inert(example.answer)})
    return rows


def training_summary(exp: Experiment) -> list[tuple[str, str]]:
    m = exp.train_metrics
    items = [
        ("batching", batching_text(m.get("batching"))),
        ("optimizer steps", m.get("steps")),
        ("initial validation loss", m.get("initial_eval_loss")),
        ("best validation loss", m.get("best_eval_loss")),
        ("final validation loss", m.get("final_eval_loss")),
        ("training tokens", m.get("train_tokens")),
        ("tokens / s", m.get("tokens_per_s")),
        ("wall time (s)", m.get("wall_time_s")),
    ]
    return [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in items if v is not None]


def batching_text(batching: dict | None) -> str | None:
    """What one optimizer step held (train.batching_summary): the GPU fast path changes steps per epoch."""
    if not batching:
        return None
    devices = f"{batching['processes']} process{'es' if batching['processes'] > 1 else ''}"
    if batching["mode"] == "packed":
        rate = (f"; learning rate {batching['learning_rate']:.3g}, the experiment's scaled {batching['lr_scaling']} "
                f"with the step's examples (the size and rule that reached the notebook recipe's validation loss "
                f"fastest)") if "lr_scaling" in batching else ""
        return (f"packed: whole examples in rows of {batching['row_tokens']} tokens, up to "
                f"{batching['tokens_per_step']:,} tokens per optimizer step (about "
                f"{batching['mean_examples_per_step']:g} examples; {batching['rows_per_device']} rows per device, "
                f"{devices}){rate}")
    return (f"{batching['sequences_per_step']} sequences per optimizer step ({batching['per_device_batch_size']} "
            f"per device x {batching['gradient_accumulation_steps']} accumulation, {devices})")


def provenance_rows(exp: Experiment, inputs: Inputs, where: Where) -> list[tuple[str, str]]:
    prov = exp.provenance
    base_id, base_rev = where.base_model(exp)
    code = prov.get("code") or {}
    versions = prov.get("versions") or {}
    sources = (prov.get("data") or {}).get("sources") or inputs.report.get("sources") or []
    source_text = ", ".join(
        f"`{s.get('id')}@{s.get('revision')}`" if s.get("type") == "hub" else f"`{Path(str(s.get('path'))).name}` (sha256 `{str(s.get('sha256'))[:12]}`)"
        for s in sources
    )
    dirty = " (uncommitted changes)" if code.get("dirty") else ""
    return [
        ("dataset", f"`{where.dataset_repo}` at commit `{where.dataset_revision or 'not pushed'}`"),
        ("data fingerprint", f"`{(prov.get('data') or {}).get('fingerprint') or inputs.report.get('fingerprint')}`"),
        ("data source", source_text or "–"),
        ("base model", f"`{base_id}`" + (f" at revision `{base_rev}`" if base_rev else "")),
        ("code commit", f"`{code.get('commit')}`{dirty}"),
        ("trained", str(prov.get("created", "–"))),
        ("libraries", ", ".join(f"{k} {v}" for k, v in versions.items() if v and k in
                                 ("torch", "transformers", "peft", "trl", "datasets", "huggingface_hub", "python"))),
    ]


def adapter_card(exp: Experiment, inputs: Inputs, where: Where, *, branch: str, is_main: bool,
                 load_revision: str, plots: list[str]):
    """The card of one experiment's branch, or (is_main) of `main` comparing all experiments."""
    from huggingface_hub import ModelCard, ModelCardData

    base_id, base_rev = where.base_model(exp)
    sources = [s["id"] for s in inputs.report.get("sources", []) if s.get("type") == "hub"]
    card_data = ModelCardData(
        base_model=base_id if is_hub_id(base_id) else None,
        library_name="peft",
        pipeline_tag="text-generation",
        datasets=sources + [where.dataset_repo],
        language="en",
        license=where.license,
        tags=TAGS + [f"experiment:{exp.name}"],
        model_name=f"{where.adapter_repo.split('/')[-1]} ({exp.name})",
        eval_results=eval_results(exp, where) or None,
    )
    # main compares every experiment; a branch card compares its experiment with the base
    compared = inputs.experiments if is_main else [exp]
    labels, table = metrics_table(inputs, compared)
    paired_labels, paired = paired_table(compared)
    generation = exp.config.generation.model_dump()
    revision_note = (
        f"`main` moves with every promotion; the revision above is the verified commit of branch "
        f"`{where.branch_prefix}{exp.name}` whose adapter files `main` carries."
        if is_main else
        f"The branch `{branch}` moves when the experiment is re-trained; pin a commit sha from its history "
        f"(`HfApi().list_repo_commits(\"{where.adapter_repo}\", revision=\"{branch}\")`) for exact reproducibility."
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "adapter_card.md.j2"),
        title=f"{where.adapter_repo.split('/')[-1]}" + ("" if is_main else f" — {exp.name}"),
        is_main=is_main,
        experiment=exp.name,
        experiments=[e.name for e in inputs.experiments],
        description=exp.config.description,
        branch=branch,
        branch_prefix=where.branch_prefix,
        adapter_repo=where.adapter_repo,
        base_id=base_id,
        base_revision=base_rev,
        base_link=hub_link(base_id) if is_hub_id(base_id) else base_id,
        load_revision=load_revision,
        revision_note=revision_note,
        system_prompt=inputs.report.get("system_prompt", ""),
        generation=generation,
        dataset_repo=where.dataset_repo,
        dataset_link=hub_link(where.dataset_repo, "dataset"),
        metric_labels=labels,
        table=table,
        paired_labels=paired_labels,
        paired=paired,
        eval_folder=EVAL_FOLDER,
        notes=evaluation_notes(exp, inputs),
        plots=[{"path": p, "alt": Path(p).stem.replace("_", " ")} for p in plots],
        training=training_summary(exp),
        hyperparameters=hyperparameter_rows(exp.config, exp.provenance.get("plan"), (base_id, base_rev)),
        base_size=parameters_text(base_parameters(exp, inputs)),
        examples=example_rows(exp, inputs),
        provenance=provenance_rows(exp, inputs, where),
    )
    check_card(card, ModelCard)
    return card


def dataset_card(inputs: Inputs, where: Where, metadata: dict[str, Any] | None = None):
    """The dataset card; `metadata` keeps what `push_to_hub` wrote (dataset_info, configs)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    report = inputs.report
    sources = report.get("sources") or []
    hub_sources = [s["id"] for s in sources if s.get("type") == "hub"]
    rows_out = int(report.get("rows_out", 0))
    ours = dict(
        language="en",
        license=where.license,
        pretty_name="Medical flashcards (chat-formatted)",
        task_categories=["question-answering", "text-generation"],
        source_datasets=hub_sources or None,
        size_categories="1K<n<10K" if rows_out >= 1000 else "n<1K",
        tags=["medical", "chat", "sft"],
    )
    card_data = DatasetCardData(**{**(metadata or {}), **ours})
    example = _first_example(inputs.data_dir)
    config = report.get("config") or {}
    source_label = hub_sources[0] if hub_sources else Path(str(sources[0].get("path", "local file"))).name if sources else "?"
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "dataset_card.md.j2"),
        title=where.dataset_repo.split("/")[-1],
        repo_id=where.dataset_repo,
        source_label=source_label,
        source_link=hub_link(source_label, "dataset") if hub_sources else "#source",
        sources=sources,
        tokenizer=(report.get("tokenizer") or {}).get("name"),
        tokenizer_revision=(report.get("tokenizer") or {}).get("revision"),
        config=config,
        split_percent="/".join(f"{round(100 * f)}" for f in config.get("split", ())),
        seed=report.get("seed"),
        rows_in=report.get("rows_in"),
        rows_out=rows_out,
        dropped=sorted((report.get("dropped") or {}).items()),
        splits=list((report.get("splits") or {}).items()),
        system_prompt=report.get("system_prompt", ""),
        example_prompt=example.get("prompt", ""),
        example_completion=example.get("completion", ""),
        fingerprint=report.get("fingerprint"),
    )
    check_card(card, DatasetCard)
    return card


def _first_example(data_dir: Path) -> dict[str, Any]:
    from datasets import load_from_disk

    train = load_from_disk(str(data_dir))["train"]
    return train[0] if len(train) else {}


def check_card(card, card_class) -> None:
    """Local validation: the YAML parses back into the card class, model-index included."""
    try:
        reparsed = card_class(str(card), ignore_metadata_errors=False)
    except Exception as exc:  # huggingface_hub raises ValueError / KeyError / YAML errors here
        raise HubError(f"generated {card_class.__name__} is invalid: {exc}") from None
    if getattr(card.data, "eval_results", None) and not reparsed.data.eval_results:
        raise HubError(f"generated {card_class.__name__} lost its model-index on re-reading")
