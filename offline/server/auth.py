"""Tokens for the local Hub server: `<data_dir>/tokens.json`, each with a user and a role.

A `read` token sees the user's private repos; a `write` token may also create repos and push
to the user's namespace. The file is created with mode 0600; tokens are never logged.
"""
from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from common.atomic import write_json_atomic

ROLES = ("read", "write")
TOKEN_PREFIX = "hf_local_"
_lock = threading.Lock()


@dataclass(frozen=True)
class Identity:
    user: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role == "write"


def tokens_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "tokens.json"


def load_tokens(data_dir: str | Path) -> dict[str, dict]:
    path = tokens_path(data_dir)
    return json.loads(path.read_text())["tokens"] if path.exists() else {}


def ensure_token(data_dir: str | Path, user: str, role: str) -> str:
    """Create a new token for `user` with `role` ("read" or "write") and return it."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    with _lock:
        tokens = load_tokens(data_dir)
        tokens[token] = {"user": user, "role": role}
        path = tokens_path(data_dir)
        write_json_atomic(path, {"tokens": tokens}, mode=0o600)
    return token


def identify(data_dir: str | Path, authorization: str | None) -> Identity | None:
    """The identity behind an `Authorization: Bearer <token>` header; None when absent.

    Raises PermissionError for a token that is not in tokens.json.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    entry = load_tokens(data_dir).get(token.strip()) if scheme.lower() == "bearer" else None
    if entry is None:
        raise PermissionError("Invalid credentials in Authorization header")
    return Identity(entry["user"], entry["role"])
