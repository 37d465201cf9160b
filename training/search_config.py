"""What `python -m training search` searches (configs/search.yaml): a starting experiment, settings fixed
for every trial, the space of searched settings, Optuna's sampler and pruner, and where the study lives.

Every searched or fixed key is an ExperimentConfig setting by its dotted name (`lora.r`), so a trial is
an ordinary experiment: its config is the starting experiment's YAML with the fixed and the sampled
settings written in, validated by ExperimentConfig like any other.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from common.errors import ConfigError
from common.yaml_config import StrictModel, read_yaml, set_dotted, validate
from training.config import CONFIG_DIR, ExperimentConfig, experiment_path, field_rows

# Decided by the search itself: each trial runs as <study>-NNN in the study's own runs folder.
SEARCH_OWNED = ("name", "runs_dir")
PRIMITIVES = (str, int, float, bool, type(None))  # what Optuna's categorical choices may be


class Parameter(StrictModel):
    """One searched setting: a range (`low`, `high`, optionally `log` or `step`) or `choices`."""

    low: int | float | None = Field(None, description="smallest value (a range of integers when low, high and step are)")
    high: int | float | None = Field(None, description="largest value, included")
    log: bool = Field(False, description="sample the range uniformly on a log scale (learning rates)")
    step: int | float | None = Field(None, gt=0, description="only values low + k * step")
    choices: list[Any] | dict[str, Any] | None = Field(
        None, description="a list of values, or {label: value} (labels name lists such as module sets in reports)")

    @model_validator(mode="after")
    def _one_kind(self):
        if self.choices is not None:
            if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ValueError("give either choices or a range (low/high), not both")
            if not self.choices:
                raise ValueError("choices is empty: nothing to search")
            if len(self.labels()) != len(set(self.labels())):
                raise ValueError(f"choices {self.labels()} repeat a value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(f"empty range: low ({self.low}) must be below high ({self.high}); "
                             "a fixed value belongs in settings")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log and step do not combine (Optuna samples one or the other)")
        return self

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high, self.step or 1))

    def labels(self) -> list:
        """What Optuna samples: the values themselves, or a label for each (a list of modules is not a
        value Optuna can store, so `[q_proj, v_proj]` is sampled as "q_proj,v_proj")."""
        if isinstance(self.choices, dict):
            return list(self.choices)
        return [c if isinstance(c, PRIMITIVES) else label_of(c) for c in self.choices]

    def value_of(self, sampled):
        """The setting's value for what Optuna sampled (a label back to its list)."""
        if self.choices is None:
            return sampled
        values = self.choices.values() if isinstance(self.choices, dict) else self.choices
        return dict(zip(self.labels(), values))[sampled]

    def admits(self, sampled) -> bool:
        """Whether `sampled` (a value of the range, or a choice's label) is in this parameter's space."""
        if self.choices is not None:
            return isinstance(sampled, PRIMITIVES) and sampled in self.labels()
        if isinstance(sampled, bool) or not isinstance(sampled, (int, float)) or not self.low <= sampled <= self.high:
            return False
        return isinstance(sampled, int) or not self.is_int

    def extremes(self) -> list:
        """The values a check tries: both ends of a range, every choice."""
        return [self.low, self.high] if self.choices is None else [self.value_of(label) for label in self.labels()]

    def describe(self) -> str:
        """One phrase for reports and the card (Markdown table cells): `0.0001 .. 0.0004 (log)`, `8, 16, 32`."""
        if self.choices is not None:
            return ", ".join(str(label) for label in self.labels())
        scale = " (log)" if self.log else f" (step {self.step})" if self.step else ""
        return f"{self.low:g} .. {self.high:g}{scale}"


def label_of(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else json.dumps(value, sort_keys=True)


class OptunaPart(StrictModel):
    """An Optuna sampler or pruner: its class name in optuna.samplers / optuna.pruners and its arguments."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = Field(..., description="class name, e.g. TPESampler, RandomSampler, MedianPruner, HyperbandPruner")

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SearchConfig(StrictModel):
    """`python -m training search`: a hyperparameter study over ordinary experiments."""

    study: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$",
                       description="the study's name: folder search/<study>/, trial runs <study>-NNN, "
                       "the best trial's experiment <study>-best")
    experiment: str = Field("exp1", description="starting point: experiment name (configs/experiments/NAME.yaml) "
                            "or YAML path; every trial is it plus `settings` plus the sampled values")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="settings fixed for every trial, dotted keys (e.g. max_steps: 200)")
    space: dict[str, Parameter] = Field(..., description="searched settings: dotted ExperimentConfig key -> range "
                                        "or choices")
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="trials run first, with these values (dotted keys of the space; a "
        "choice by its label), e.g. the starting experiment's own settings as a baseline; the sampler draws the "
        "keys left out. Queued once, when the study is created")
    trials: int = Field(24, gt=0, le=100_000, description="trials in the study, counted over every worker and "
                        "machine (pruned and failed ones included); a resumed search runs the rest")
    workers: int = Field(1, gt=0, le=256, description="trials at once on this machine, one process each, spread "
                         "over its GPUs (several on one GPU share its memory). More machines join by running the "
                         "same command with the same database storage")
    sampler: OptunaPart = Field(
        default_factory=lambda: OptunaPart(name="TPESampler", seed=42, multivariate=True, constant_liar=True),
        description="optuna.samplers class and arguments; a seed is offset by the worker's index, so workers "
        "asking at once do not draw the same trial")
    pruner: OptunaPart = Field(
        default_factory=lambda: OptunaPart(name="MedianPruner", n_startup_trials=4, n_warmup_steps=1),
        description="optuna.pruners class and arguments; steps are validations, counted in training examples seen "
                    "(one step = the starting experiment's eval_steps x effective_batch_size examples)")
    storage: str | None = Field(
        None, description="null: a journal file next to the runs (search/<study>/journal.log; the processes of "
        "one machine share it); else a database URL Optuna accepts (postgresql://user@host/db) for many machines")
    output_dir: Path = Field(Path("search"), description="the study's folder is output_dir/<study>: trial runs, "
                             "results, plots, the journal")
    best_config_dir: Path | None = Field(
        Path("configs/experiments"), description="where <study>-best.yaml (the best trial, only what differs from "
        "the defaults) is written once the study is done; `make train` then trains it like any experiment. "
        "null: not written")
    max_retries: int = Field(2, ge=0, le=100, description="times a trial whose worker died is continued from its "
                             "last checkpoint (a trial that raises an error fails and is not retried)")
    heartbeat_seconds: int = Field(30, ge=1, description="database storages: a running trial's worker checks in this "
                                   "often; after 4 missed check-ins another worker continues the trial")

    @field_validator("space", mode="before")
    @classmethod
    def _flat_space(cls, v):
        return flatten(v, leaf=lambda value: bool(set(value) & set(Parameter.model_fields))) if isinstance(v, dict) else v

    @field_validator("settings", mode="before")
    @classmethod
    def _flat_settings(cls, v):
        return flatten(v, leaf=lambda value: False) if isinstance(v, dict) else v

    @property
    def folder(self) -> Path:
        return self.output_dir / self.study

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"


def flatten(tree: dict[str, Any], leaf, prefix: str = "") -> dict[str, Any]:
    """Sections written out as dotted keys, so `lora: {r: ...}`, `lora.r: ...` and `--set space.lora.r.high=64`
    all name `lora.r` (a later entry's keys win). `leaf(mapping)`: whether a mapping is a value, not a section."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        found = flatten(value, leaf, f"{name}.") if isinstance(value, dict) and value and not leaf(value) \
            else {name: value}
        for dotted, item in found.items():
            earlier = out.get(dotted)
            out[dotted] = {**earlier, **item} if isinstance(earlier, dict) and isinstance(item, dict) else item
    return out


def load_search(path: Path, overrides=()) -> SearchConfig:
    from common.yaml_config import load_config

    search = load_config(SearchConfig, path, overrides)
    problems = key_problems(search)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return search


def experiment_settings() -> list[str]:
    """Every dotted ExperimentConfig setting (`lora.r`), the names a space or `settings` may use."""
    return [name for name, _, _ in field_rows(ExperimentConfig(name="x"))]


def key_problems(search: SearchConfig) -> list[str]:
    known = experiment_settings()
    problems = []
    for where, keys in (("space", search.space), ("settings", search.settings)):
        for key in keys:
            if key in SEARCH_OWNED:
                problems.append(f"{where} '{key}' is set by the search (each trial runs as {search.study}-NNN in "
                                f"{search.runs_dir})")
            elif key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
                hint = f"did you mean '{close[0]}'?" if close else "see ExperimentConfig in training/config.py"
                problems.append(f"{where} '{key}' is not an experiment setting ({hint})")
    problems += [f"'{key}' is both searched (space) and fixed (settings)" for key in search.space
                 if key in search.settings]
    for i, values in enumerate(search.enqueue):
        for key, value in values.items():
            if key not in search.space:
                problems.append(f"enqueue[{i}] '{key}' is not in the space ({', '.join(search.space)})")
            elif not search.space[key].admits(value):
                problems.append(f"enqueue[{i}] '{key}' = {value!r} is outside its space ({search.space[key].describe()})")
    return problems


def trial_config(search: SearchConfig, values: dict[str, Any], name: str, config_dir: Path = CONFIG_DIR,
                 where: str | None = None) -> ExperimentConfig:
    """The experiment a trial trains: the starting YAML, the fixed settings, then `values` (dotted keys).
    `where` names it in a validation error (default: the YAML and the values)."""
    path = experiment_path(search.experiment, config_dir)
    data = read_yaml(path)
    for key, value in {**search.settings, **values, "runs_dir": str(search.runs_dir)}.items():
        set_dotted(data, key, value)
    data["name"] = name
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    return validate(ExperimentConfig, data, where or (f"{path} with {shown}" if shown else str(path)))
