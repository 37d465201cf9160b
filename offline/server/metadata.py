"""Card metadata (the YAML block of README.md) as the Hub checks it and turns it into tags.

The Hub refuses a commit whose README.md metadata breaks its schema, and `validate-yaml`
answers with the same messages (Joi style: `"license" must be one of [...]`). Only the
fields this project writes are checked here: `license`, `model-index`, `base_model` and
`datasets`; anything else passes, as an unknown key does on the Hub.
"""
from __future__ import annotations

import re

import yaml

# The Hub's license ids, in the order its error message lists them (huggingface_hub issue
# #4218, 2026; source of truth: hub-docs/docs/hub/repositories-licenses.md).
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0",
    "odc-by", "odbl", "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib",
    "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3",
    "llama3.1", "llama3.2", "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other",
)
# The Hub's message ends its list with "array": a list of these ids is accepted too.
LICENSE_MESSAGE = '"{field}" must be one of [' + ", ".join(HUB_LICENSES) + ", array]"
# A Hub repo id: `name` or `namespace/name` (what huggingface_hub's validate_repo_id accepts).
_REPO_ID = re.compile(r"^(?:[\w.-]{1,96}/)?[\w.-]{1,96}$")


# huggingface_hub.repocard is imported where it is used: importing it reads HF_ENDPOINT (once, for the
# whole process), and a caller that starts this server on port 0 in-process sets HF_ENDPOINT afterwards.


def split_card(text: str) -> tuple[str | None, str]:
    """(the YAML block or None, the Markdown after it), split by huggingface_hub's REGEX_YAML_BLOCK:
    the library keeps it the same as the Hub server's own."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(text)
    return (match.group(2), text[match.end():]) if match else (None, text)


def front_matter(text: str) -> dict | None:
    """A card's metadata as the client reads it (`RepoCard`); None when absent or not a valid mapping."""
    from huggingface_hub.repocard import RepoCard

    if split_card(text)[0] is None:  # RepoCard would log a warning for each card without metadata
        return None
    try:
        return RepoCard(text, ignore_metadata_errors=True).data.to_dict()
    except (ValueError, TypeError, yaml.YAMLError):  # not a mapping, keys that are no names, broken YAML
        return None


def card_errors(text: str, repo_type: str) -> list[str]:
    """The Hub's messages for what is wrong with a card's metadata; empty when the Hub accepts it."""
    block, _ = split_card(text)
    if not block:
        return []
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in the metadata: {exc}".replace("\n", " ")]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ['"value" must be of type object']
    errors = _license_errors(data.get("license"))
    if repo_type == "model":
        errors += _repo_ids_errors(data, "base_model", "model")
        errors += _repo_ids_errors(data, "datasets", "dataset")
        if "model-index" in data:
            errors += _model_index_errors(data["model-index"])
    return errors


def _license_errors(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [LICENSE_MESSAGE.format(field=f"license[{i}]") for i, v in enumerate(value) if v not in HUB_LICENSES]
    return [] if value in HUB_LICENSES else [LICENSE_MESSAGE.format(field="license")]


def _repo_ids_errors(data: dict, field: str, kind: str) -> list[str]:
    """`base_model` / `datasets`: one Hub id or a list of them."""
    if field not in data:
        return []
    value = data[field]
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    errors = []
    for index, item in items:
        name = field if index is None else f"{field}[{index}]"
        if not isinstance(item, str):
            errors.append(f'"{name}" must be a string')
        elif not item.strip():
            errors.append(f'"{name}" is not allowed to be empty')
        elif not _REPO_ID.match(item) or ".." in item or "--" in item:  # a local path, most often
            errors.append(f'"{name}" with value "{item}" is not valid. If possible, use a {kind} id from '
                          f'https://hf.co/{kind}s.')
    return errors


# Required keys of each model-index level, and those that must be strings when present.
_MODEL_INDEX_SHAPE = {
    "": ({"name": str, "results": list}, ()),
    "results": ({"task": dict, "dataset": dict, "metrics": list}, ()),
    "task": ({"type": str}, ("name",)),
    "dataset": ({"type": str, "name": str}, ("config", "split", "revision")),
    "metrics": ({"type": str, "value": object}, ("name", "config")),
    "source": ({"url": str}, ("name",)),
}
_TYPE_WORDS = {str: "be a string", list: "be an array", dict: "be of type object"}


def _model_index_errors(value) -> list[str]:
    if not isinstance(value, list):
        return ['"model-index" must be an array']
    errors = []
    for i, model in enumerate(value):
        errors += _shape_errors(model, f"model-index[{i}]", "")
        results = model.get("results") if isinstance(model, dict) else None
        for j, result in enumerate(results if isinstance(results, list) else []):
            errors += _result_errors(result, f"model-index[{i}].results[{j}]")
    return errors


def _result_errors(result, where: str) -> list[str]:
    errors = _shape_errors(result, where, "results")
    if not isinstance(result, dict):
        return errors
    for part in ("task", "dataset"):
        if isinstance(result.get(part), dict):
            errors += _shape_errors(result[part], f"{where}.{part}", part)
    if "source" in result:
        errors += _shape_errors(result["source"], f"{where}.source", "source")
    metrics = result.get("metrics")
    for k, metric in enumerate(metrics if isinstance(metrics, list) else []):
        errors += _shape_errors(metric, f"{where}.metrics[{k}]", "metrics")
    return errors


def _shape_errors(obj, where: str, level: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f'"{where}" must be of type object']
    required, strings = _MODEL_INDEX_SHAPE[level]
    errors = []
    for key, kind in required.items():
        if obj.get(key) is None:
            errors.append(f'"{where}.{key}" is required')
        elif kind is not object and not isinstance(obj[key], kind):
            errors.append(f'"{where}.{key}" must {_TYPE_WORDS[kind]}')
    errors += [f'"{where}.{key}" must be a string' for key in strings
               if obj.get(key) is not None and not isinstance(obj[key], str)]
    return errors


def card_tags(repo_type: str, card: dict | None, files: list[str]) -> list[str]:
    """The `tags` the Hub lists for a repo, derived from its card and files as the Hub does."""
    card = card or {}
    tags: list[str] = []
    if repo_type == "model":
        tags += _as_list(card.get("library_name"))
        if any(f.endswith(".safetensors") for f in files):
            tags.append("safetensors")
        tags += _as_list(card.get("tags")) + _as_list(card.get("pipeline_tag"))
        tags += [f"dataset:{d}" for d in _as_list(card.get("datasets"))]
        # an adapter's base is recorded twice: the model and how it relates to it
        relation = "adapter" if card.get("library_name") == "peft" or "adapter_config.json" in files else "finetune"
        for base in _as_list(card.get("base_model")):
            tags += [f"base_model:{base}", f"base_model:{relation}:{base}"]
    elif repo_type == "dataset":
        tags += [f"task_categories:{t}" for t in _as_list(card.get("task_categories"))]
        tags += [f"size_categories:{s}" for s in _as_list(card.get("size_categories"))]
        tags += [f"source_datasets:{s}" for s in _as_list(card.get("source_datasets"))]
        if any(f.endswith(".parquet") for f in files):
            tags += ["format:parquet", "library:datasets"]
        tags += _as_list(card.get("tags"))
    else:
        tags += _as_list(card.get("tags"))
    tags += [f"language:{lang}" if repo_type == "dataset" else lang for lang in _as_list(card.get("language"))]
    tags += [f"license:{lic}" for lic in _as_list(card.get("license"))]
    return list(dict.fromkeys(tags))  # no duplicates, first place kept


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value if v is not None] if isinstance(value, list) else [str(value)]
