"""Hub id or local path? The one rule for every setting that may name either: a base model, a data
source, the MedQA source, a card's `base_model`, the Space's preloaded repositories."""
from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

# `owner/name` as the Hub spells repository ids: ASCII letters, digits, `-`, `_`, `.`, each part
# starting with a letter or digit (so `./x`, `../x` and `.hidden/x` are paths).
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_hub_id(name: str, file_suffixes: Collection[str] = ()) -> bool:
    """Whether `name` is a Hub repository id rather than a local file or folder.

    Whatever exists on disk is local, and so is whatever is shaped like a path (`/x`, `~/x`, `./x`,
    `a/b/c`) or ends in one of `file_suffixes` (a data file that is missing is a missing file, not a repo).
    """
    if not HUB_ID.fullmatch(name) or Path(name).suffix.lower() in file_suffixes:
        return False
    return not Path(name).exists()
