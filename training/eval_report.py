"""Evaluation, phase 2: every number, from what phase 1 wrote alone.

For every eval/<model>/ folder: the registered metrics (training.metric_registry) with BCa bootstrap
intervals and paired differences against the base, and (for an adapter) the test questions its card
shows (training.example_answers), written to eval/<model>/metrics.json; then
comparison.json/.md and the plots. Nothing here runs a model, so a rerun of one model refreshes every
comparison, and anyone holding those files (a pushed branch's eval/ folder) can recompute every number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.atomic import write_json_atomic, write_text_atomic
from training import metric_registry as registry
from training.config import DECODING_KEYS, EvalConfig
from training.layout import BASE, EvalDir, EvalRoot, RunsDir


def summarise(output_dir: Path, config: EvalConfig) -> dict[str, Any]:
    """Metrics with CIs for every model folder in output_dir, paired against base, then tables and plots."""
    from training import plots
    from training.example_answers import choose
    from training.metrics import INTERVAL_METHOD, resample_counts

    root = EvalRoot(output_dir)
    folders = root.evaluated()
    statistics = {folder.name: model_statistics(folder) for folder in folders}
    infos = {folder.name: folder.run_info(registry.keys() + list(registry.RETIRED)) for folder in folders}
    comparison: dict[str, Any] = {"models": {}, "paired_vs_base": {}, "n": {}, "decoding": {},
                                  "confidence": config.confidence, "interval_method": INTERVAL_METHOD,
                                  "bootstrap_resamples": config.bootstrap_resamples, "seed": config.seed,
                                  "metric_settings": next((i["metric_settings"] for i in infos.values()
                                                           if i.get("metric_settings")), {})}
    for folder in folders:
        name = folder.name
        ids, stats = statistics[name]
        # One resample matrix per population, shared by the intervals and the paired differences
        # (paired needs the same examples as base, so the same counts apply).
        counts = {population: resample_counts(len(members), config.bootstrap_resamples, config.seed)
                  for population, members in ids.items()}
        metrics = intervals(stats, counts, config.confidence)
        info = infos[name]
        paired = None
        if name != BASE and BASE in statistics:
            same = decoding_of(info) == decoding_of(infos[BASE])
            paired = paired_against(statistics[BASE], (ids, stats), counts, config.confidence, same)
        write_json_atomic(folder.metrics_file, {
            **info, **metrics, "paired_vs_base": paired, "n_per_metric": n_per_metric(ids, metrics),
            "intervals": {"method": INTERVAL_METHOD, "confidence": config.confidence,
                          "resamples": config.bootstrap_resamples, "seed": config.seed},
            "references_over_max_new_tokens": references_over(folder, info),
            # the test questions the card shows beside the example questions (chosen by the adapter's scores)
            "examples": choose(folder.predictions()) if name != BASE else None,
        })
        comparison["models"][name] = metrics
        comparison["paired_vs_base"][name] = paired
        comparison["n"][name] = {population: len(members) for population, members in ids.items()}
        comparison["decoding"][name] = info.get("decoding")
    write_json_atomic(root.comparison_json, comparison)
    write_text_atomic(root.comparison_md, comparison_markdown(comparison))
    if comparison["models"]:
        plots.plot_metrics(comparison["models"], root.metrics_plot, config.confidence)
    runs = {run.name: run.metrics() for run in RunsDir(config.runs_dir).finished()}
    plots.plot_loss_curves(runs, root.loss_plot)
    return comparison


def model_statistics(folder: EvalDir):
    """({population: example ids}, {metric: Statistic}) from a model's phase-1 rows."""
    rows = registry.Rows(folder.predictions(), folder.medqa())
    populations = {metric.population.name: metric.population for metric in registry.METRICS}
    ids = {name: population.ids(rows) for name, population in populations.items()}
    stats = {metric.key: stat for metric in registry.METRICS if (stat := metric.statistic(rows)) is not None}
    return ids, stats


def decoding_of(info: dict) -> dict | None:
    """The settings that decide an answer's text, from a model's run record."""
    decoding = info.get("decoding")
    return {k: decoding.get(k) for k in DECODING_KEYS} if decoding else None


def references_over(folder: EvalDir, info: dict) -> int | None:
    """How many reference answers are longer (in tokens) than the answers were allowed to be."""
    cap = (info.get("decoding") or {}).get("max_new_tokens")
    records = folder.predictions()
    if cap is None or not all("reference_tokens" in r["scores"] for r in records):
        return None
    return sum(r["scores"]["reference_tokens"] > cap for r in records)


def n_per_metric(ids: dict, metrics: dict) -> dict[str, int]:
    return {key: len(ids[registry.get(key).population.name]) for key in metrics}


def intervals(stats: dict, counts: dict, confidence: float) -> dict[str, dict[str, float]]:
    """BCa interval per metric; accuracies also get the harness's standard error."""
    from training.metrics import bootstrap_ci, mean_stderr

    result = {}
    for key, stat in stats.items():
        metric = registry.get(key)
        result[key] = bootstrap_ci(stat, counts[metric.population.name], confidence)
        if metric.stderr:
            result[key]["stderr"] = mean_stderr(stat.per_example[:, 0])
    return result


def paired_against(base, model, counts: dict, confidence: float,
                   same_decoding: bool = True) -> dict[str, dict[str, float]] | None:
    """model minus base on the same resamples; only over metrics both were scored on, on the same examples,
    and (for metrics of generated answers) decoded the same way."""
    from training.metrics import paired_bootstrap

    if base is None:
        return None
    (base_ids, base_stats), (ids, stats) = base, model
    paired = {}
    for key, stat in stats.items():
        metric = registry.get(key)
        population = metric.population.name
        if key in base_stats and ids[population] == base_ids[population] and (same_decoding or not metric.decoded):
            paired[key] = paired_bootstrap(stat, base_stats[key], counts[population], confidence)
    return paired


def comparison_markdown(comparison: dict[str, Any]) -> str:
    models = comparison["models"]
    metrics = registry.present(*models.values())
    level = round(comparison["confidence"] * 100)
    lines = [
        "# Evaluation",
        "",
        f"Point estimates with {level}% {comparison['interval_method']} intervals "
        f"({comparison['bootstrap_resamples']} resamples, seed {comparison['seed']}).",
        "",
        *(f"- **{title}**: {text}" for title, text in registry.method_lines(metrics, comparison["metric_settings"])),
        "",
        "| model | n (test / MedQA) | decoding | " + " | ".join(m.key for m in metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for name, values in models.items():
        cells = [_cell(values.get(m.key), "value") for m in metrics]
        n = comparison["n"][name]
        lines.append(f"| {name} | {n['test']} / {n['medqa']} | {decoding_text(comparison['decoding'].get(name))} | "
                     + " | ".join(cells) + " |")
    paired = {name: diffs for name, diffs in comparison["paired_vs_base"].items() if diffs}
    if paired:
        lower = ", ".join(m.key for m in metrics if m.lower_is_better)
        lines += ["", f"## Fine-tuned minus base (paired bootstrap, {level}% interval)", "",
                  "| model | " + " | ".join(m.key for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
        for name, diffs in paired.items():
            lines.append(f"| {name} | " + " | ".join(_cell(diffs.get(m.key), "diff") for m in metrics) + " |")
        lines += ["", "An interval that excludes 0 marks a difference unlikely to be resampling noise"
                  + (f" (for {lower}, lower is better, so negative is an improvement)." if lower else ".")]
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
