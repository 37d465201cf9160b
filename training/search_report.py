"""What a search tells a person, read from its study: search/<study>/ (README.md, trials.json, study.json,
the plot of validation loss against training seconds, Optuna's parameter importances), the progress bar,
the best trial as an experiment file, and the model card's "How these settings were chosen" section.

Everything is derived from the study's storage alone (each trial's settings, curve and times are stored
with it), so every machine sharing a database study can write the same report.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

from common.atomic import write_json_atomic, write_text_atomic
from common.errors import ConfigError

# Trial attributes the workers record (training/search.py), one name each.
WORKER, RUN, ERROR, WALL, CURVE, STEPS = "worker", "run", "error", "wall_s", "curve", "steps"
WITHDRAWN = "withdrawn"  # asked by a worker after the study had all its trials: not part of the study
PLOT = "loss_vs_train_seconds.png"
IMPORTANCE_PLOT = "importances.png"
BEST_HEADER = "# Written by `python -m training search`"
OBJECTIVE = "final validation loss (lower is better)"


# ---------------------------------------------------------------- the study's trials, as a person counts them


def retry_of(trial) -> int | None:
    return trial.system_attrs.get("failed_trial")  # Optuna's name (search.continue_later), the first attempt


def rows(trials) -> list[dict[str, Any]]:
    """One row per trial of the study (withdrawn ones left out). State: complete, pruned, failed, running,
    waiting, or interrupted (its worker died; `continued_as` names the trial that continues it)."""
    continued = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if WITHDRAWN in t.user_attrs:
            continue
        state = t.state.name.lower()
        error = t.user_attrs.get(ERROR)
        if state == "fail":
            state = "failed" if error or t.number not in continued else "interrupted"
            if not error and state == "failed":
                error = "its worker stopped, and it was not continued (max_retries reached)"
        curve = t.user_attrs.get(CURVE) or [[step, None, loss] for step, loss in sorted(t.intermediate_values.items())]
        timed = [point[1] for point in curve if point[1] is not None]
        out.append({
            "number": t.number, "state": state, "params": dict(t.params),
            "final_eval_loss": t.value if state == "complete" else None,
            "last_eval_loss": curve[-1][2] if curve else None,
            "steps": t.user_attrs.get(STEPS), "train_seconds": timed[-1] if timed else None,
            "wall_s": t.user_attrs.get(WALL), "run": t.user_attrs.get(RUN), "error": error,
            "retry_of": retry_of(t), "continued_as": continued.get(t.number),
            "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "finished": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
            "curve": [{"step": s, "train_seconds": sec, "loss": loss} for s, sec, loss in curve],
        })
    return out


def counts(table: list[dict[str, Any]]) -> dict[str, int]:
    states = [r["state"] for r in table]
    found = {s: states.count(s) for s in ("complete", "pruned", "failed", "running", "waiting", "interrupted")}
    return {**found, "done": found["complete"] + found["pruned"] + found["failed"]}


def best_row(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    complete = [r for r in table if r["state"] == "complete"]
    return min(complete, key=lambda r: r["final_eval_loss"]) if complete else None


def next_move(trials, planned: int) -> str:
    """What a worker does next: "ask" (a queued trial or a trial still to start), "wait" (the last trials run
    elsewhere, one of them may yet have to be continued) or "done"."""
    from optuna.trial import TrialState

    if any(t.state == TrialState.WAITING for t in trials):
        return "ask"
    if sum(1 for t in trials if retry_of(t) is None) < planned:
        return "ask"
    return "wait" if any(t.state == TrialState.RUNNING for t in trials) else "done"


def admitted(trials, number: int, planned: int) -> bool:
    """Whether trial `number` is one of the study's `planned` trials: a continued trial always is; a new one
    if fewer than `planned` new trials came before it. Trial numbers are handed out by the storage, so two
    workers asking at the same moment cannot both take the last place."""
    trial = next(t for t in trials if t.number == number)
    if retry_of(trial) is not None:
        return True
    return sum(1 for t in trials if t.number < number and retry_of(t) is None) < planned


# ---------------------------------------------------------------- progress


class Progress:
    """A bar of trials done (complete, pruned or failed) with the best so far; search/<study>/ is rewritten
    whenever a trial ends."""

    def __init__(self, search, config_dir: Path):
        self.search, self.config_dir = search, config_dir
        self.seen: tuple | None = None

    def __enter__(self) -> Progress:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.search.trials, desc=self.search.study, unit="trial", file=sys.stderr,
                        dynamic_ncols=True)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def update(self, study) -> None:
        table = rows(study.get_trials(deepcopy=False))
        found, best = counts(table), best_row(table)
        self.bar.n = found["done"]
        so_far = f"best {best['final_eval_loss']:.4f} (#{best['number']})" if best else "best -"
        self.bar.set_postfix_str(f"complete {found['complete']}, pruned {found['pruned']}, failed {found['failed']}, "
                                 f"running {found['running']}; {so_far}", refresh=False)
        self.bar.refresh()
        key = tuple(found.values())
        if key != self.seen:
            self.seen = key
            write_report(study, self.search, self.config_dir)


# ---------------------------------------------------------------- search/<study>/


def write_report(study, search, config_dir: Path) -> bool:
    """trials.json, study.json, README.md and the plots in search/<study>/; whether the study is done."""
    import optuna

    from training.provenance import stamp
    from training.search import storage_label

    trials = study.get_trials(deepcopy=False)
    table = rows(trials)
    done = next_move(trials, search.trials) == "done"
    best = best_row(table)
    importances = parameter_importances(study)
    folder = search.folder
    plot_curves(table, best, folder / PLOT, search.study)
    plot_importances(importances, folder / IMPORTANCE_PLOT, search.study)
    summary = {
        "study": search.study, "storage": storage_label(search), "done": done, "planned_trials": search.trials,
        "counts": counts(table), "objective": OBJECTIVE, "experiment": search.experiment,
        "settings": search.settings, "space": {key: p.describe() for key, p in search.space.items()},
        "sampler": search.sampler.model_dump(), "pruner": search.pruner.model_dump(),
        "best": best and {key: best[key] for key in ("number", "final_eval_loss", "params", "run", "train_seconds")},
        "best_config": str(best_config_path(search)) if search.best_config_dir else None,
        "importances": importances, "importance_method": "optuna.importance.get_param_importances (PED-ANOVA)",
        "train_seconds_total": round(sum(r["train_seconds"] or 0 for r in table), 1),
        "plots": {"loss_vs_train_seconds": PLOT, "importances": IMPORTANCE_PLOT},
        "provenance": {**stamp(), "optuna": optuna.__version__},
    }
    write_json_atomic(folder / "trials.json", table)
    write_json_atomic(folder / "study.json", summary)
    write_text_atomic(folder / "README.md", readme(summary, table, search))
    return done


def parameter_importances(study) -> dict[str, float]:
    """Optuna's importances (PED-ANOVA, its default) over the complete trials; empty while too few."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. every complete trial had the same settings
            return {}
    return {key: round(float(value), 4) for key, value in found.items()}


def plot_curves(table, best, path: Path, study: str) -> None:
    """Validation loss against training seconds (validation excluded) for every trial: the time a setting
    costs and what it reaches. Trials sharing a GPU ran slower than one alone would."""
    from training.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=100)
    for row in table:
        points = [(p["train_seconds"], p["loss"]) for p in row["curve"] if p["train_seconds"] is not None]
        if not points:
            continue
        xs, ys = zip(*points)
        if best and row["number"] == best["number"]:
            ax.plot(xs, ys, "-o", color="tab:red", linewidth=2.2, markersize=3, zorder=3,
                    label=f"best: #{row['number']} ({row['final_eval_loss']:.4f})")
        elif row["state"] == "pruned":
            ax.plot(xs, ys, ":", color="grey", linewidth=0.9)
        else:
            ax.plot(xs, ys, "-", color="tab:blue", alpha=0.5, linewidth=1.0)
    ax.plot([], [], "-", color="tab:blue", alpha=0.5, label="complete")
    ax.plot([], [], ":", color="grey", label="pruned")
    ax.set_xlabel("training seconds (validation excluded; trials sharing a GPU run slower)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"search {study}: validation loss of every trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_importances(importances: dict[str, float], path: Path, study: str) -> None:
    from training.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * max(len(importances), 2) + 1.2), dpi=100)
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    if not importances:
        ax.text(0.5, 0.5, "too few complete trials", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("importance (Optuna, PED-ANOVA; sums to 1)")
    ax.set_title(f"search {study}: which settings mattered")
    save_figure(fig, path)


def readme(summary: dict[str, Any], table: list[dict[str, Any]], search) -> str:
    found, best = summary["counts"], summary["best"]
    status = "done" if summary["done"] else "in progress (run the same command to continue)"
    keys = list(search.space)
    lines = [
        f"# Search `{search.study}`", "",
        f"{found['done']} of {search.trials} trials done ({found['complete']} complete, {found['pruned']} pruned, "
        f"{found['failed']} failed): {status}. Each trial is experiment `{search.experiment}` with the fixed "
        f"settings {json.dumps(search.settings)} and the sampled ones below, trained by `python -m training train`'s "
        f"trainer into `runs/<study>-NNN/`. Objective: {OBJECTIVE}. Study: `{summary['storage']}`; sampler "
        f"{search.sampler.name}, pruner {search.pruner.name}.", "",
    ]
    if best:
        settings = ", ".join(f"`{k}={shown(v)}`" for k, v in best["params"].items())
        lines += [f"**Best: trial {best['number']}, final validation loss {best['final_eval_loss']:.4f}**: {settings}."]
        if summary["best_config"]:
            lines += [f"Written as `{summary['best_config']}` once the study is done."]
        lines += [""]
    lines += [f"![validation loss against training seconds]({PLOT})", "", f"![parameter importances]({IMPORTANCE_PLOT})",
              "", "## Space", "", "| setting | searched over | importance |", "|---|---|---:|"]
    lines += [f"| `{k}` | {summary['space'][k]} | {summary['importances'].get(k, '-')} |" for k in keys]
    lines += ["", "## Trials", "", "| # | state | final val loss | " + " | ".join(f"`{k}`" for k in keys)
              + " | steps | training s | wall s | note |", "|---" * (len(keys) + 7) + "|"]
    for r in table:
        loss = r["final_eval_loss"] if r["final_eval_loss"] is not None else r["last_eval_loss"]
        note = r["error"] or (f"continued as #{r['continued_as']}" if r["continued_as"] is not None else "") or (
            f"continues #{r['retry_of']}" if r["retry_of"] is not None else "")
        cells = [str(r["number"]), r["state"], "-" if loss is None else f"{loss:.4f}",
                 *[shown(r["params"].get(k, "-")) for k in keys], str(r["steps"] or "-"),
                 "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}",
                 "-" if r["wall_s"] is None else f"{r['wall_s']:.1f}", note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Pruned trials show their last validation loss; their runs stopped early but are complete.", ""]
    return "\n".join(lines)


def shown(value) -> str:
    """A sampled value for a table: floats to 4 significant digits (the files keep every digit)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- the best trial as an experiment


def best_config_path(search) -> Path:
    return search.best_config_dir / f"{search.study}-best.yaml"


def differences(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings of `config` that differ from `defaults`, sections kept nested."""
    out = {}
    for key, value in config.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            if nested := differences(value, default):
                out[key] = nested
        elif value != default:
            out[key] = value
    return out


def write_best_config(study, search, config_dir: Path) -> Path | None:
    """configs/experiments/<study>-best.yaml: the best trial's experiment, only what differs from the defaults.
    Replaces only a file the search wrote (its first line says so)."""
    import yaml

    from training.config import ExperimentConfig, dump
    from training.search import storage_label
    from training.search_config import trial_config

    table = rows(study.get_trials(deepcopy=False))
    best = best_row(table)
    if best is None:
        print(f"[search] no trial of '{search.study}' completed: no best experiment written", file=sys.stderr)
        return None
    path = best_config_path(search)
    if path.exists() and not path.read_text(encoding="utf-8").startswith(BEST_HEADER):
        raise ConfigError(f"{path} exists and was not written by the search; rename it, or set best_config_dir "
                          "to another folder (or null)")
    name = path.stem
    values = {key: search.space[key].value_of(label) for key, label in best["params"].items()}
    config = trial_config(search, values, name, config_dir)
    changed = differences(dump(config), dump(ExperimentConfig(name=name)))
    for key in ("name", "runs_dir", "description"):
        changed.pop(key, None)
    found = counts(table)
    description = (f"best of search {search.study}: trial {best['number']} of {found['done']}, final validation loss "
                   f"{best['final_eval_loss']:.4f}")
    header = (f"{BEST_HEADER} (study {search.study}, storage {storage_label(search)}):\n"
              f"# trial {best['number']}, the lowest {OBJECTIVE} of {found['done']} trials. Only what differs from\n"
              "# ExperimentConfig's defaults (training/config.py). `make train` trains it like every experiment here\n"
              f"# (into runs/{name}) and `make push` publishes it; delete this file to leave it out. Running the\n"
              "# search again replaces it. Results: " + str(search.folder / "README.md") + "\n"
              "# Batching as in every experiment (batch_tokens); the notebook's batches with --set batch_tokens=null.\n")
    write_text_atomic(path, header + yaml.safe_dump({"description": description, **changed}, sort_keys=False))
    return path


# ---------------------------------------------------------------- the model card's section


def card_section(folder: Path, plot_link: str | None = None, top: int = 5) -> str:
    """Markdown for the best trial's model card, "How these settings were chosen", from search/<study>/ alone:
    the study's size, the space, the best trials and a link to the plot (`plot_link`: where the card's repo
    holds the plot; default the file in `folder`)."""
    folder = Path(folder)
    summary = json.loads((folder / "study.json").read_text(encoding="utf-8"))
    table = json.loads((folder / "trials.json").read_text(encoding="utf-8"))
    found = summary["counts"]
    ranked = sorted((r for r in table if r["state"] == "complete"), key=lambda r: r["final_eval_loss"])[:top]
    keys = list(summary["space"])
    lines = [
        "## How these settings were chosen", "",
        f"A hyperparameter search (Optuna, sampler {summary['sampler']['name']}, pruner {summary['pruner']['name']}) "
        f"of {found['done']} trials: {found['complete']} trained to the end, {found['pruned']} stopped early by the "
        f"pruner, {found['failed']} failed. Every trial was experiment `{summary['experiment']}` with the settings "
        f"below sampled; the objective was the {OBJECTIVE}, and the trials trained for "
        f"{summary['train_seconds_total']:.0f} s in all.", "",
        "| setting | searched over | importance |", "|---|---|---:|",
        *[f"| `{k}` | {summary['space'][k]} | {summary['importances'].get(k, '-')} |" for k in keys], "",
        f"The best {len(ranked)} trials:", "",
        "| trial | final val loss | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---" * (len(keys) + 2) + "|",
        *[f"| {r['number']} | {r['final_eval_loss']:.4f} | " + " | ".join(shown(r["params"].get(k, "-")) for k in keys)
          + " |" for r in ranked], "",
        f"[Validation loss of every trial against training seconds]({plot_link or str(folder / PLOT)})", "",
    ]
    return "\n".join(lines)
