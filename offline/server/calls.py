"""What every handler of the local Hub server shares: the server's state, one call (request) as the
handlers see it, and answers and errors in the Hub's shape.

Handlers are plain functions that Starlette runs on its thread pool, because the store is blocking
file I/O and hashing. A request body still arrives on the event loop, so `Call.chunks` fetches it
from there one piece at a time (`anyio.from_thread`): bodies of any size keep memory flat. Starlette
and uvicorn have no per-request body limit, so the limits below are kept here.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import anyio.from_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from offline.server import auth
from offline.server.storage import Resolved, Store, StoreError, repo_path_problem

if TYPE_CHECKING:
    from offline.server.faults import Faults

logger = logging.getLogger("offline.server")
PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Request bodies: a write token may send a commit of many regular files (base64, each under the LFS
# threshold); anyone else only small JSON (validate-yaml, paths-info). An LFS PUT may send exactly
# the size its batch call declared.
BODY_LIMIT = 256 * 1024 * 1024
ANONYMOUS_BODY_LIMIT = 1024 * 1024
# A refused body is read and thrown away up to this size, so the client (which sends all of it
# before reading) sees the answer; beyond it the connection is closed instead.
DISCARD_LIMIT = 1024 * 1024 * 1024
PIECE = 1024 * 1024  # bytes a handler's thread takes from the event loop at once, and a file answer sends at once


@dataclass
class Hub:
    """The server's state, shared by every request."""

    data_dir: Path
    store: Store
    faults: Faults | None  # fault injection exists only in a server started for reliability tests
    lfs_tickets: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)  # ticket -> (sha256, size)
    tickets_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Repo:
    """A repository the caller was allowed to reach, with its settings (`repo.json`)."""

    type: str
    id: str
    meta: dict


class HttpError(Exception):
    """An answer in the Hub's error shape; `code` becomes X-Error-Code (what the client's exceptions key on)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class Call:
    """One request as the handlers see it: who asks, what they may reach, its body read within limits."""

    def __init__(self, request: Request, hub: Hub):
        self.request, self.hub, self.store = request, hub, hub.store
        self.identity: auth.Identity | None = None
        self.body_read = False  # read to its end: nothing is left to drain before answering

    def identify(self) -> None:
        """Who is asking, from the Authorization header alone (401 for an unknown token)."""
        self.identity = auth.identify(self.hub.data_dir, self.request.headers.get("authorization"))

    # ---- access ------------------------------------------------------------------------
    def repo(self, repo_type: str, repo_id: str, access: str) -> Repo:
        check = {"read": self.readable, "download": self.downloadable, "write": self.writable}[access]
        return Repo(repo_type, repo_id, check(repo_type, repo_id))

    def readable(self, repo_type: str, repo_id: str) -> dict:
        meta = self.store.repo_meta(repo_type, repo_id)
        owner = repo_id.split("/")[0]
        if meta is None or (meta.get("private") and not (self.identity and self.identity.user == owner)):
            raise HttpError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return meta

    def downloadable(self, repo_type: str, repo_id: str) -> dict:
        """A readable repo whose files this caller may download: gated repos need granted access."""
        meta = self.readable(repo_type, repo_id)
        if not meta.get("gated"):
            return meta
        user = self.identity.user if self.identity else None
        if user == repo_id.split("/")[0] or user in meta.get("granted", []):
            return meta
        if user is None:  # the Hub's answers: 401 to anonymous callers, 403 to users not on the list
            raise HttpError(401, f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be "
                                 "authenticated to access it. Please log in.", "GatedRepo")
        raise HttpError(403, f"Access to {repo_type} {repo_id} is restricted and you are not in the authorized list. "
                             f"Visit {self.repo_url(repo_type, repo_id)} to ask for access.", "GatedRepo")

    def writer(self, namespace: str | None = None) -> auth.Identity:
        """The caller, who must hold a write token (for `namespace` when given)."""
        if self.identity is None:
            raise HttpError(401, "You must be authenticated with a write token to do this")
        if not self.identity.can_write:
            raise HttpError(403, "This token has read-only access")
        if namespace is not None and self.identity.user != namespace:
            raise HttpError(403, f"You don't have the rights to write to the namespace {namespace}")
        return self.identity

    def writable(self, repo_type: str, repo_id: str) -> dict:
        meta = self.readable(repo_type, repo_id)
        self.writer(repo_id.split("/")[0])
        return meta

    # ---- revisions and files -----------------------------------------------------------
    def split_revision(self, repo: Repo, segments: list[str]) -> tuple[Resolved, str]:
        """(resolved revision, path) from `rev/path...`; accepts a revision sent with a literal `/`."""
        for i in range(1, len(segments) + 1):
            try:
                return self.store.resolve(repo.type, repo.id, "/".join(segments[:i])), "/".join(segments[i:])
            except StoreError:
                continue
        raise HttpError(404, f"Invalid rev id: {segments[0] if segments else ''}", "RevisionNotFound")

    def file_at(self, repo: Repo, segments: list[str]) -> tuple[Resolved, str, dict]:
        """(resolved revision, path, tree entry) for `rev/path...`; 404 EntryNotFound if absent."""
        resolved, path = self.split_revision(repo, segments)
        entry = resolved.commit["tree"].get(path)
        if entry is None:
            raise HttpError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": resolved.commit_id})
        return resolved, path, entry

    def check_intact(self, entry: dict, repo: Repo, path: str) -> None:
        """500 (and one log line naming it) when a blob's bytes no longer hash to its id: never served."""
        if not self.store.blob_intact(entry["sha256"]):
            logger.error("blob %s (%s/%s) does not match its sha256 on disk: not served", entry["sha256"], repo.id, path)
            raise HttpError(500, f"stored content of {path} is damaged; it is not served")

    # ---- query and body ----------------------------------------------------------------
    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)

    def flag(self, name: str) -> bool:
        return self.query(name, "false").lower() in ("1", "true")

    def body_limit(self) -> int:
        return BODY_LIMIT if self.identity is not None and self.identity.can_write else ANONYMOUS_BODY_LIMIT

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """The body as it arrives; 413 past `limit`, before reading when Content-Length declares more.

        What is left after a 413 is drained by the endpoint before it answers (`finish`).
        """
        limit = self.body_limit() if limit is None else limit
        declared = self.request.headers.get("content-length")  # a number: uvicorn refuses any other
        if declared is not None and int(declared) > limit:
            raise HttpError(413, f"Request body of {declared} bytes is larger than the {limit}-byte limit")
        stream, received = self.request.stream(), 0
        while (chunk := anyio.from_thread.run(_next_piece, stream)) is not None:
            received += len(chunk)
            if received > limit:
                raise HttpError(413, f"Request body is larger than the {limit}-byte limit")
            yield chunk
        self.body_read = True

    def body(self) -> bytes:
        return b"".join(self.chunks())

    def json(self) -> dict:
        """The body as a JSON object; 400 with the Hub's error shape for anything else."""
        raw = self.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise HttpError(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            raise HttpError(400, f"Request body must be a JSON object, not {json_kind(body)}")
        return body

    # ---- answers -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return str(self.request.base_url).rstrip("/")

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.base_url}/{PREFIXES[repo_type]}{repo_id}"

    def page(self, items: list, default_size: int) -> Response:
        """One page of `items` (`cursor` = offset, `limit` = size) with a Link header to the next, as the Hub pages."""
        start = int(self.query("cursor", "0"))
        size = max(1, min(int(self.query("limit", str(default_size))), default_size))
        headers = {}
        if start + size < len(items):
            query = urlencode({**self.request.query_params, "cursor": str(start + size)})
            headers["Link"] = f'<{self.base_url}{raw_path(self.request.scope)}?{query}>; rel="next"'
        return json_response(items[start:start + size], headers=headers)


async def _next_piece(stream) -> bytes | None:
    """Up to PIECE bytes of the body (None at its end): one trip from the handler's thread to the
    event loop brings many of uvicorn's 64 KiB chunks."""
    chunks, size = [], 0
    while size < PIECE and (chunk := await anext(stream, None)) is not None:
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) or None


def raw_path(scope) -> str:
    """The path as sent, still percent-encoded: what routes match and what the log shows."""
    return scope["raw_path"].decode("latin-1")


def json_response(obj, status: int = 200, headers: dict | None = None,
                  media_type: str = "application/json") -> Response:
    # json.dumps as it is: Starlette's JSONResponse refuses NaN, which a card's metrics may hold
    return Response(json.dumps(obj), status, headers, media_type)


def header_text(text: str) -> str:
    """`text` as a header value: one line of latin-1 (how headers travel), so that a message naming a
    file in another script still goes out."""
    return text.replace("\n", " ").encode("latin-1", "replace").decode("latin-1")


def error_response(exc: HttpError) -> Response:
    headers = {"X-Error-Message": header_text(str(exc)), **exc.headers}
    if exc.code:
        headers["X-Error-Code"] = exc.code
    return json_response({"error": str(exc)}, exc.status, headers)


async def finish(request: Request, response: Response, body_read: bool) -> Response:
    """`response`, sent once the unread body is drained (in pieces, memory stays flat): a client sends
    all of its body before reading the answer. Past DISCARD_LIMIT the connection is closed instead."""
    if body_read:
        return response
    dropped = 0
    try:
        async for chunk in request.stream():
            dropped += len(chunk)
            if dropped > DISCARD_LIMIT:
                response.headers["Connection"] = "close"
                break
    except ClientDisconnect:
        pass  # nobody is left to answer
    except RuntimeError:
        pass  # Starlette's "Stream consumed": its last piece came with the one that went past a limit
    return response


# ---- request bodies, checked in the Hub's words ------------------------------------------
_JSON_KINDS = {str: "a string", int: "a number", list: "an array", dict: "of type object"}


def json_kind(value) -> str:
    """How an error message names the JSON type of `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def field(obj: dict, key: str, kind: type, required: bool = True):
    """`obj[key]` checked to be a `kind` (None when absent and not required); 400 in the Hub's words."""
    value = obj.get(key)
    if value is None:
        if required:
            raise HttpError(400, f'"{key}" is required')
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HttpError(400, f'"{key}" must be {_JSON_KINDS[kind]}, not {json_kind(value)}')
    if kind is str and required and not value:
        raise HttpError(400, f'"{key}" is not allowed to be empty')
    return value


def repo_path(value: dict, where: str, folder: bool = False) -> str:
    """A file path from a request, refused (400) where the Hub refuses it; a folder may end with `/`."""
    path = value.get("path")
    if not isinstance(path, str):
        raise HttpError(400, f'"{where}" must be a string, not {json_kind(path)}')
    path = path.rstrip("/") if folder else path
    if problem := repo_path_problem(path):
        raise HttpError(400, problem)
    return path


def decode_base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f'"{where}" must be base64')
