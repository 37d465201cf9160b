"""PNG plots from plain dicts (so evaluation, model cards and tests can all render them).

`metrics_png({model: {metric: {value, ci_low, ci_high}}})`: one panel per registered metric
(training.metric_registry), a bar per model, whiskers for the confidence interval. `loss_curves_png(
{experiment: a run's metrics})`: train and validation loss against the optimizer step. Both return
the PNG's bytes (a push sends them as they are); `plot_metrics` / `plot_loss_curves` write them to a file.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

from common.atomic import write_bytes_atomic

FIGURE_DPI = 100
PANEL_SIZE = (3.2, 3.2)  # inches per metric panel
MAX_COLUMNS = 4
LOSS_SIZE = (8.0, 4.5)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(results: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | Path,
                 confidence: float = 0.95) -> Path:
    return _write(metrics_png(results, confidence), path)


def plot_loss_curves(runs: Mapping[str, Mapping], path: str | Path) -> Path:
    return _write(loss_curves_png(runs), path)


def metrics_png(results: Mapping[str, Mapping[str, Mapping[str, float]]], confidence: float = 0.95) -> bytes:
    return _png(metrics_figure(results, confidence))


def metrics_figure(results: Mapping[str, Mapping[str, Mapping[str, float]]], confidence: float = 0.95):
    """Bar chart per metric across models with CI whiskers; metrics absent everywhere are left out."""
    from training.metric_registry import present

    plt = pyplot()
    models = list(results)
    metrics = present(*results.values())
    if not metrics:
        raise ValueError("no metrics to plot")
    rows, columns = grid_shape(len(metrics))
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows),
                             dpi=FIGURE_DPI, squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        shown = [m for m in models if metric.key in results[m]]
        values = [results[m][metric.key]["value"] for m in shown]
        # A bias-corrected interval can sit (by rounding, or bias) just beside its point estimate:
        # whiskers are then clipped at the bar rather than drawn negative.
        errors = [[max(0.0, v - results[m][metric.key]["ci_low"]) for m, v in zip(shown, values)],
                  [max(0.0, results[m][metric.key]["ci_high"] - v) for m, v in zip(shown, values)]]
        bars = ax.bar(range(len(shown)), values, yerr=errors, capsize=4,
                      color=[colors[models.index(m) % len(colors)] for m in shown])
        ax.bar_label(bars, fmt="%.4g", fontsize=8, label_type="center")
        ax.set_xticks(range(len(shown)), shown, rotation=30, ha="right")
        ax.set_title(metric.label + (" (lower is better)" if metric.lower_is_better else ""), fontsize=10)
        ax.set_ylim(bottom=min(0.0, *values))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Evaluation ({round(confidence * 100)}% BCa bootstrap CI)")
    return fig


def grid_shape(panels: int) -> tuple[int, int]:
    """(rows, columns) of the metric panels: at most MAX_COLUMNS per row."""
    columns = min(panels, MAX_COLUMNS)
    return -(-panels // columns), columns


def loss_curves_png(runs: Mapping[str, Mapping]) -> bytes:
    """Train (solid) and validation (dashed, dots) loss per experiment, one colour per experiment."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=LOSS_SIZE, dpi=FIGURE_DPI)
    colors = plt.get_cmap("tab10").colors
    for i, (name, metrics) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for key, style, label in (("train_loss", "-", "train"), ("eval_loss", "--o", "validation")):
            points = metrics.get(key) or []
            if points:
                ax.plot([p["step"] for p in points], [p["loss"] for p in points], style, color=color,
                        markersize=3, label=f"{name} {label}")
    if not runs:
        ax.text(0.5, 0.5, "no training runs", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean token cross-entropy)")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3)
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    # Fixed figure size and no bbox_inches="tight", so the pixel size is predictable.
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return buffer.getvalue()


def save_figure(fig, path: str | Path) -> Path:
    """A figure drawn elsewhere (the search's plots), written as these are."""
    return _write(_png(fig), path)


def _write(png: bytes, path: str | Path) -> Path:
    write_bytes_atomic(path, png)  # never a half-written PNG under the real name
    return Path(path)
