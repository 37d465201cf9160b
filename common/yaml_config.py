"""Settings files: YAML -> `--set key=value` overrides -> a validated pydantic model, or one clear line.

The generic half of configuration, shared by every command (`training.config` holds the project's
settings, `hub.config` the publishing ones): unknown keys are rejected with the closest valid name,
all problems in a file are reported at once, and YAML aliases cannot expand without bound.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import ConfigError


class StrictModel(BaseModel):
    # allow_inf_nan: `epochs: .inf` or `learning_rate: .nan` would pass every bound and fail hours later
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


M = TypeVar("M", bound=StrictModel)


def load_config(model: type[M], path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), **defaults) -> M:
    """Read a YAML file (optional), apply `key=value` overrides (dotted keys), validate."""
    data: dict[str, Any] = dict(defaults)
    where = "defaults"
    if path is not None:
        where = str(path)
        data.update(read_yaml(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    if overrides:
        where += " with --set " + " ".join(overrides)
    return validate(model, data, where)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.__class__.__name__}: {exc})") from None
    try:
        data = load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{at} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


# A config holds a few hundred values; aliases can make a 600-byte file expand to billions.
MAX_YAML_VALUES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a document whose aliases expand past MAX_YAML_VALUES values."""

    def compose_document(self):
        node = super().compose_document()
        expanded_size(node, {}, set())
        return node


class YamlTooLarge(ValueError):
    def __init__(self, message: str, node):
        super().__init__(message)
        self.line = node.start_mark.line + 1


def expanded_size(node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values in `node` with every alias written out (each shared node counted once per use)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise YamlTooLarge("a recursive alias (a value that contains itself)", node)
    open_nodes.add(key)
    children = ([item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode)
                else node.value if isinstance(node, yaml.SequenceNode) else [])
    total = 1 + sum(expanded_size(child, sizes, open_nodes) for child in children)
    if total > MAX_YAML_VALUES:
        raise YamlTooLarge(f"aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?); "
                           "write the values out", node)
    open_nodes.discard(key)
    sizes[key] = total
    return total


def load_yaml(text: str, where: str) -> Any:
    """yaml.safe_load with bounded alias expansion and nesting: ConfigError naming `where` and the line."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlTooLarge as exc:
        raise ConfigError(f"{where}: line {exc.line}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set learning_rate=1e-4")
    try:
        value = load_yaml(raw, f"--set {key.strip()}") if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):  # e.g. --set lora.r.x=1: r is a value, not a section
            raise ConfigError(f"--set {key}: '{part}' is a setting, not a section of settings")
        node = child
    node[leaf] = value


def validate(model: type[M], data: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [describe_problem(model, err) for err in exc.errors()]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None


def describe_problem(model: type[BaseModel], err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        valid = fields_at(model, loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f" (did you mean '{'.'.join(loc[:-1] + [close[0]])}'?)" if close else f" (valid keys: {', '.join(valid)})"
        return f"unknown key '{key}'{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"'{key}': {msg}{shown}"


def fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))
