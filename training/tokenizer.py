"""Loading a tokenizer from a local folder or the Hub, repairing the files `tokenizers` no longer reads.

Kept apart from the chat contract (training/chat.py), which only uses a tokenizer once it is loaded.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.hub_errors import first_line, hub_errors

# The files a tokenizer is loaded from (a model repo also holds weights, which are not needed).
_TOKENIZER_FILES = ["tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                    "vocab*", "merges.txt", "config.json"]
# A tokenizer.json whose merges are "a b" strings rather than ["a", "b"] pairs.
_LEGACY_MERGES = re.compile(r'"merges"\s*:\s*\[\s*"')


def load_tokenizer(name: str | Path, revision: str | None = None):
    """AutoTokenizer for a local folder, or a Hub id at a revision; tolerant of legacy merges.

    Older tokenizer.json files (TinyLlama's included) store merges as "a b" strings, and a few
    Llama merges contain literal spaces ("   " is " " + " "), which `tokenizers` >= 0.23 rejects.
    Such a file is rewritten, in a temporary folder, with each merge as the unique pair of
    vocabulary entries it joins: the same tokenizer, in the current format.
    """
    folder = _local_folder(name, revision)
    tokenizer_json = folder / "tokenizer.json"
    text = tokenizer_json.read_text(encoding="utf-8") if tokenizer_json.exists() else ""
    if _LEGACY_MERGES.search(text):
        tokenizer = _load_with_upgraded_merges(folder, json.loads(text), name)
    else:
        try:
            tokenizer = _tokenizer_class(folder).from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tokenizer {name}: cannot load ({first_line(exc)})") from None
    if not tokenizer.chat_template:
        # Every prompt, label mask and stop token here comes from the template: there is no fallback.
        raise ConfigError(f"tokenizer {name}: no chat template (tokenizer_config.json or chat_template.jinja); "
                          f"use a chat model's tokenizer, or add its template")
    return tokenizer


def _local_folder(name: str | Path, revision: str | None) -> Path:
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        with hub_errors(str(name), revision, "cannot download tokenizer", also=(OSError,)):
            try:
                return Path(snapshot_download(str(name), revision=revision, allow_patterns=_TOKENIZER_FILES))
            except RepositoryNotFoundError as exc:
                if isinstance(exc, GatedRepoError):
                    raise
                raise ConfigError(f"tokenizer {name}: not a local folder, and not found on the Hub") from None
    except HFValidationError:
        raise ConfigError(f"tokenizer {name}: not a local folder, and not found on the Hub") from None


def _tokenizer_class(folder: Path):
    """The class `tokenizer_config.json` names, as AutoTokenizer would pick it.

    Importing it directly matters for `prepare`'s speed: importing AutoTokenizer pulls in the
    model-config machinery and with it torch (about 4 s on two cores); the tokenizer needs neither.
    """
    import transformers

    config = folder / "tokenizer_config.json"
    name = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") if config.exists() else None
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase):
        return cls
    return transformers.AutoTokenizer


def _load_with_upgraded_merges(folder: Path, data: dict[str, Any], name):
    model = data["model"]
    model["merges"] = [_merge_pair(merge, model["vocab"], name) for merge in model["merges"]]
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        for file in folder.iterdir():
            if file.name != "tokenizer.json" and any(fnmatch.fnmatch(file.name, p) for p in _TOKENIZER_FILES):
                shutil.copy(file, tmp)
        Path(tmp, "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return _tokenizer_class(Path(tmp)).from_pretrained(tmp)


def _merge_pair(merge: str | list[str], vocab: dict[str, int], name) -> list[str]:
    if not isinstance(merge, str):
        return merge
    if merge.count(" ") == 1:
        return merge.split(" ")
    pairs = [[merge[:i], merge[i + 1:]] for i, char in enumerate(merge)
             if char == " " and merge[:i] in vocab and merge[i + 1:] in vocab and merge[:i] + merge[i + 1:] in vocab]
    if len(pairs) != 1:
        raise ConfigError(f"tokenizer {name}: cannot read merge {merge!r} in tokenizer.json")
    return pairs[0]

