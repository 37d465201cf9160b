"""The HTTP side of the local Hub server: routing the Hub's API paths onto the store.

Paths are routed on the raw (still percent-encoded) path, split on `/` and decoded per
segment, so a revision sent as `exp%2Flr-1e-4` stays one segment. Every error carries
`X-Error-Code` where the real Hub sends one, `X-Error-Message`, and a JSON `{"error"}` body,
because huggingface_hub turns those into RepositoryNotFoundError, RevisionNotFoundError, ...
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

from offline.server import auth, metadata, pages
from offline.server.faults import Faults
from offline.server.storage import (DEFAULT_BRANCH, REPO_TYPES, Store, StoreError, lfs_pointer, now_iso,
                                 repo_path_problem, valid_sha256)

logger = logging.getLogger("offline.server")

PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
# Binary formats the Hub's default .gitattributes sends to LFS; parquet must be LFS
# (datasets deletes its temporary shard right after preupload).
LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".arrow", ".h5", ".onnx", ".pkl",
                ".npy", ".npz", ".msgpack", ".model", ".gz", ".zip", ".tar", ".png", ".jpg", ".jpeg", ".gif", ".webp")
LFS_MIN_SIZE = 10 * 1024 * 1024
TREE_PAGE, TREE_PAGE_EXPANDED, COMMITS_PAGE = 1000, 50, 50
_CHUNK = 1 << 20
_MAX_LINE = 1024  # longest chunk-size or trailer line read from a chunked body
# Request bodies: a write token may send a commit of many regular files (base64, each under
# LFS_MIN_SIZE); anyone else only small JSON (validate-yaml, paths-info). An LFS PUT may send
# exactly the size its batch call declared.
BODY_LIMIT = 256 * 1024 * 1024
ANONYMOUS_BODY_LIMIT = 1024 * 1024
# A refused body is read and thrown away up to this size, so the client sees the answer;
# beyond it the connection is closed instead.
DISCARD_LIMIT = 1024 * 1024 * 1024
GATED_MODES = ("auto", "manual")


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, data_dir: str | Path, faults: bool = False):
        self.data_dir = Path(data_dir)
        self.store = Store(self.data_dir)
        # fault injection exists only in a server started for reliability tests
        self.faults = Faults() if faults else None
        self.lfs_tickets: dict[str, tuple[str, int]] = {}  # upload ticket -> (sha256, size)
        self.tickets_lock = threading.Lock()
        super().__init__(address, HubHandler)


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    # ---- plumbing ----------------------------------------------------------------------
    def do_GET(self):
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_request(self, code="-", size="-"):
        # method, path and status only: never headers (the Authorization token) or bodies
        logger.info("%s %s %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format, *args):
        logger.debug(format, *args)

    def _handle(self):
        self._body_read = False
        self.identity = None
        split = urlsplit(self.path)
        self.raw_path, self.query = split.path, parse_qs(split.query)
        try:
            if not self._apply_fault():
                return
            # who is asking is known before any byte of the body is read
            self.identity = auth.identify(self.server.data_dir, self.headers.get("Authorization"))
            self._route()
        except PermissionError as exc:
            self._error(HttpError(401, str(exc)))
        except HttpError as exc:
            self._error(exc)
        except StoreError as exc:
            self._error(HttpError(exc.status, str(exc), exc.code))
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except (KeyError, ValueError, TypeError) as exc:  # a malformed request body or query
            self._error(HttpError(400, f"malformed request: {exc.__class__.__name__} {exc}"))
        except Exception:
            logger.exception("%s %s failed", self.command, self.raw_path)
            self._error(HttpError(500, "internal error in the local Hub server"))

    def _apply_fault(self) -> bool:
        """Apply an injected fault; False when the request must not be answered normally."""
        if self.server.faults is None or self.raw_path.startswith("/_local/faults"):
            return True
        rule = self.server.faults.take(self.command, self.raw_path)
        if rule is None:
            return True
        logger.info("%s %s fault: %s", self.command, self.raw_path, rule.action)
        if rule.action == "delay":
            time.sleep(rule.seconds)
            return True
        if rule.action == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return False
        self._error(HttpError(rule.status, f"injected fault {rule.status}"))
        return False

    def _body_limit(self) -> int:
        return BODY_LIMIT if self.identity is not None and self.identity.can_write else ANONYMOUS_BODY_LIMIT

    def _declared_length(self) -> int | None:
        """Content-Length as a number (None for a chunked body); 400 when it is not one."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        raw = self.headers.get("Content-Length") or "0"
        if not raw.strip().isdigit():
            self.close_connection = True  # the body's end is unknown: the connection cannot be reused
            raise HttpError(400, f"invalid Content-Length {raw[:40]!r}")
        return int(raw)

    def _chunk_size(self) -> int:
        """The size line of a chunked body (read bounded); 400 and no reuse of the connection if it is not one."""
        line = self.rfile.readline(_MAX_LINE).split(b";")[0].strip()
        if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", line):
            self.close_connection = True
            raise HttpError(400, "malformed chunked request body")
        return int(line, 16)

    def _raw_chunks(self):
        """The request body in chunks as sent; understands Content-Length and chunked encoding."""
        self._body_read = True
        length = self._declared_length()
        if length is None:
            while True:
                size = self._chunk_size()
                if size == 0:
                    while self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size > 0:
                    chunk = self.rfile.read(min(_CHUNK, size))
                    if not chunk:
                        raise ConnectionError("client closed the connection mid-body")
                    size -= len(chunk)
                    yield chunk
                self.rfile.readline()
        else:
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(_CHUNK, remaining))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                remaining -= len(chunk)
                yield chunk

    def _iter_body(self, limit: int | None = None):
        """The request body in chunks; 413 (before reading when the length is declared) past `limit`."""
        limit = self._body_limit() if limit is None else limit
        length = self._declared_length()
        if length is not None and length > limit:
            raise HttpError(413, f"Request body of {length} bytes is larger than the {limit}-byte limit")
        received, chunks = 0, self._raw_chunks()
        for chunk in chunks:
            received += len(chunk)
            if received > limit:
                self._discard(chunks, received)  # the rest is thrown away before the answer
                raise HttpError(413, f"Request body is larger than the {limit}-byte limit")
            yield chunk

    def _body(self) -> bytes:
        return b"".join(self._iter_body()) if not self._body_read else b""

    def _discard_body(self) -> None:
        """Read and drop the unread body (bounded memory), so keep-alive connections stay in sync."""
        try:
            self._discard(self._raw_chunks(), 0)
        except HttpError:  # a malformed Content-Length or chunk: the rest cannot be read
            self.close_connection = True

    def _discard(self, chunks, discarded: int) -> None:
        for chunk in chunks:
            discarded += len(chunk)
            if discarded > DISCARD_LIMIT:  # not worth reading: the connection is closed instead
                self.close_connection = True
                return

    def _json_body(self) -> dict:
        """The body as a JSON object; 400 with the Hub's error shape for anything else."""
        raw = self._body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise HttpError(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            raise HttpError(400, f"Request body must be a JSON object, not {_json_kind(body)}")
        return body

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json") -> None:
        if not self._body_read:
            self._discard_body()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, exc: HttpError) -> None:
        headers = {"X-Error-Message": str(exc).replace("\n", " "), **exc.headers}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        try:
            self._send(exc.status, json.dumps({"error": str(exc)}).encode(), headers)
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

    # ---- access ------------------------------------------------------------------------
    def _readable(self, repo_type: str, repo_id: str) -> dict:
        meta = self.server.store.repo_meta(repo_type, repo_id)
        owner = repo_id.split("/")[0]
        if meta is None or (meta.get("private") and not (self.identity and self.identity.user == owner)):
            raise HttpError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return meta

    def _downloadable(self, repo_type: str, repo_id: str) -> dict:
        """A readable repo whose files this caller may download: gated repos need granted access."""
        meta = self._readable(repo_type, repo_id)
        if not meta.get("gated"):
            return meta
        user = self.identity.user if self.identity else None
        if user == repo_id.split("/")[0] or user in meta.get("granted", []):
            return meta
        if user is None:  # the Hub's answers: 401 to anonymous callers, 403 to users not on the list
            raise HttpError(401, f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be "
                                 "authenticated to access it. Please log in.", "GatedRepo")
        raise HttpError(403, f"Access to {repo_type} {repo_id} is restricted and you are not in the authorized list. "
                             f"Visit {self._repo_url(repo_type, repo_id)} to ask for access.", "GatedRepo")

    def _writer(self, namespace: str | None = None) -> auth.Identity:
        """The caller, who must hold a write token (for `namespace` when given)."""
        if self.identity is None:
            raise HttpError(401, "You must be authenticated with a write token to do this")
        if not self.identity.can_write:
            raise HttpError(403, "This token has read-only access")
        if namespace is not None and self.identity.user != namespace:
            raise HttpError(403, f"You don't have the rights to write to the namespace {namespace}")
        return self.identity

    def _writable(self, repo_type: str, repo_id: str) -> dict:
        meta = self._readable(repo_type, repo_id)
        self._writer(repo_id.split("/")[0])
        return meta

    # ---- routing -----------------------------------------------------------------------
    def _route(self):
        segs = [unquote(s) for s in self.raw_path.strip("/").split("/")]
        method = self.command
        if segs[0] == "_local":
            return self._local(method, segs[1:])
        if segs[0] == "api":
            return self._api(method, segs[1:])
        repo_type = "model"
        if segs[0] in ("datasets", "spaces") and len(segs) > 2:
            repo_type, segs = PLURALS[segs[0]], segs[1:]
        if len(segs) == 6 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{segs[0]}/{segs[1][:-4]}")
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3:])
        if len(segs) >= 5 and segs[2] == "blob" and method == "GET":
            return self._blob(repo_type, f"{segs[0]}/{segs[1]}", segs[3:])
        raise HttpError(404, "Not Found")

    def _api(self, method: str, segs: list[str]):
        head = segs[0] if segs else ""
        if head == "whoami-v2" and method == "GET":
            return self._whoami()
        if head == "repos" and segs[1:] == ["create"] and method == "POST":
            return self._create_repo()
        if head == "repos" and segs[1:] == ["delete"] and method == "DELETE":
            return self._delete_repo()
        if head == "validate-yaml" and method == "POST":
            return self._validate_yaml()
        if head in PLURALS and len(segs) >= 3:
            repo_type, repo_id, rest = PLURALS[head], f"{segs[1]}/{segs[2]}", segs[3:]
            return self._repo_api(method, repo_type, repo_id, rest)
        raise HttpError(404, "Not Found")

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str]):
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        routes = {
            ("GET", ""): lambda: self._info(repo_type, repo_id, DEFAULT_BRANCH),
            ("GET", "revision"): lambda: self._info(repo_type, repo_id, "/".join(args)),
            ("GET", "refs"): lambda: self._refs(repo_type, repo_id),
            ("POST", "branch"): lambda: self._create_ref(repo_type, repo_id, "branches", "/".join(args)),
            ("DELETE", "branch"): lambda: self._delete_ref(repo_type, repo_id, "branches", "/".join(args)),
            ("POST", "tag"): lambda: self._create_tag(repo_type, repo_id, "/".join(args)),
            ("DELETE", "tag"): lambda: self._delete_ref(repo_type, repo_id, "tags", "/".join(args)),
            ("GET", "tree"): lambda: self._tree(repo_type, repo_id, args),
            ("POST", "paths-info"): lambda: self._paths_info(repo_type, repo_id, "/".join(args)),
            ("GET", "commits"): lambda: self._commits(repo_type, repo_id, "/".join(args)),
            ("POST", "preupload"): lambda: self._preupload(repo_type, repo_id, "/".join(args)),
            ("POST", "commit"): lambda: self._commit(repo_type, repo_id, "/".join(args)),
            ("PUT", "settings"): lambda: self._settings(repo_type, repo_id),
            ("POST", "user-access-request"): lambda: self._grant_access(repo_type, repo_id, args),
        }
        if repo_type == "space":
            routes.update({
                ("GET", "variables"): lambda: self._json(self._readable(repo_type, repo_id).get("variables", {})),
                ("POST", "variables"): lambda: self._space_variable(repo_id, delete=False),
                ("DELETE", "variables"): lambda: self._space_variable(repo_id, delete=True),
                ("POST", "secrets"): lambda: self._space_secret(repo_id, delete=False),
                ("DELETE", "secrets"): lambda: self._space_secret(repo_id, delete=True),
                ("POST", "hardware"): lambda: self._space_hardware(repo_id),
                ("POST", "sleeptime"): lambda: self._space_sleeptime(repo_id),
                ("GET", "runtime"): lambda: self._json(self._runtime(repo_id, self._readable(repo_type, repo_id))),
            })
        handler = routes.get((method, action))
        if handler is None:
            raise HttpError(404, "Not Found")
        if method != "GET" and action != "paths-info":
            # before the body is read; the one write check of preupload, commit, branch and tag calls
            self._writable(repo_type, repo_id)
        return handler()

    # ---- account and repos -------------------------------------------------------------
    def _whoami(self):
        if self.identity is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        user, role = self.identity.user, self.identity.role
        self._json({"type": "user", "id": user, "name": user, "fullname": user, "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": role}}})

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.base_url}/{PREFIXES[repo_type]}{repo_id}"

    def _create_repo(self):
        self._writer()
        body = self._json_body()
        namespace = _field(body, "organization", str, required=False) or self.identity.user
        repo_type = _field(body, "type", str, required=False) or "model"
        if repo_type not in REPO_TYPES:
            raise HttpError(400, f'"type" must be one of [{", ".join(REPO_TYPES)}]')
        _field(body, "name", str)
        for key in ("variables", "secrets"):
            for item in _field(body, key, list, required=False) or []:
                if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                    raise HttpError(400, f'"{key}" must be an array of {{"key", "value"}} objects')
        repo_id = f"{namespace}/{body['name']}"
        self._writer(namespace)
        private = body.get("visibility") == "private" if "visibility" in body else bool(body.get("private"))
        meta = {"type": repo_type, "id": repo_id, "private": private}
        if repo_type == "space":
            meta.update(sdk=body.get("sdk"), variables={}, secrets=[],
                        hardware={"current": "cpu-basic", "requested": body.get("hardware") or "cpu-basic"},
                        gcTimeout=body.get("sleepTimeSeconds"))
            for var in body.get("variables") or []:
                meta["variables"][var["key"]] = {"value": str(var.get("value", "")),
                                                 "description": var.get("description"), "updatedAt": now_iso()}
            meta["secrets"] = sorted({s["key"] for s in body.get("secrets") or []})
        url = self._repo_url(repo_type, repo_id)
        if not self.server.store.create_repo(repo_type, repo_id, meta):
            return self._json({"error": "You already created this repo", "url": url}, 409,
                              {"X-Error-Message": "You already created this repo"})
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self):
        self._writer()
        body = self._json_body()
        repo_type = _field(body, "type", str, required=False) or "model"
        if repo_type not in REPO_TYPES:
            raise HttpError(400, f'"type" must be one of [{", ".join(REPO_TYPES)}]')
        namespace = _field(body, "organization", str, required=False) or self.identity.user
        repo_id = f"{namespace}/{_field(body, 'name', str)}"
        self._writable(repo_type, repo_id)
        self.server.store.delete_repo(repo_type, repo_id)
        self._json({})

    def _settings(self, repo_type: str, repo_id: str):
        body = self._json_body()
        meta = self._writable(repo_type, repo_id)
        if "visibility" in body:
            meta["private"] = body["visibility"] == "private"
        elif "private" in body:
            meta["private"] = bool(body["private"])
        if "gated" in body:
            if body["gated"] not in (*GATED_MODES, False):
                raise HttpError(400, f'"gated" must be one of [{", ".join(GATED_MODES)}, false]')
            meta["gated"] = body["gated"]
        with self.server.store.lock(repo_type, repo_id):
            self.server.store.save_meta(repo_type, repo_id, meta)
        self._json({})

    def _grant_access(self, repo_type: str, repo_id: str, args: list[str]):
        """`grant_access`: the owner lets `user` download a gated repo (the Hub's status codes)."""
        if args != ["grant"]:
            raise HttpError(404, "Not Found")
        user = _field(self._json_body(), "user", str)
        meta = self._writable(repo_type, repo_id)
        if not meta.get("gated"):
            raise HttpError(400, f"Repo {repo_id} is not gated")
        if user in meta.get("granted", []):
            raise HttpError(400, f"User {user} already has access to {repo_id}")
        with self.server.store.lock(repo_type, repo_id):
            meta["granted"] = sorted({*meta.get("granted", []), user})
            self.server.store.save_meta(repo_type, repo_id, meta)
        self._json({"user": user, "status": "accepted"})

    def _validate_yaml(self):
        body = self._json_body()
        content = _field(body, "content", str)
        repo_type = _field(body, "repoType", str, required=False) or "model"
        if repo_type not in REPO_TYPES:
            raise HttpError(400, f'"repoType" must be one of [{", ".join(REPO_TYPES)}]')
        errors = metadata.card_errors(content, repo_type)
        if not errors:
            return self._json({"errors": [], "warnings": []})
        if self.headers.get("Accept", "").startswith("text/plain"):  # what RepoCard.validate asks for
            text = "\n".join(f"- Error: {e}" for e in errors)
            return self._send(400, text.encode(), {"X-Error-Message": errors[0]}, "text/plain; charset=utf-8")
        self._json({"error": "\n".join(errors), "errors": [{"message": e} for e in errors], "warnings": []}, 400,
                   {"X-Error-Message": errors[0]})

    # ---- reading -----------------------------------------------------------------------
    def _resolve_rev(self, repo_type: str, repo_id: str, revision: str):
        return self.server.store.resolve(repo_type, repo_id, revision)

    def _split_rev(self, repo_type: str, repo_id: str, segs: list[str]):
        """(resolved revision, path) from `rev/path...`; accepts a revision sent with a literal `/`."""
        for i in range(1, len(segs) + 1):
            try:
                return self._resolve_rev(repo_type, repo_id, "/".join(segs[:i])), "/".join(segs[i:])
            except StoreError:
                continue
        raise HttpError(404, f"Invalid rev id: {segs[0] if segs else ''}", "RevisionNotFound")

    def _card_data(self, tree: dict) -> dict | None:
        entry = tree.get("README.md")
        if entry is None:
            return None
        try:
            text = self.server.store.blob_path(entry["sha256"]).read_text(encoding="utf-8", errors="replace")
            return metadata.front_matter(text)
        except yaml.YAMLError:
            return None

    def _info(self, repo_type: str, repo_id: str, revision: str):
        meta = self._readable(repo_type, repo_id)
        resolved = self._resolve_rev(repo_type, repo_id, revision)
        tree = resolved.commit["tree"]
        card = self._card_data(tree)
        info = {
            "_id": repo_id, "id": repo_id, "author": repo_id.split("/")[0], "sha": resolved.commit_id,
            "lastModified": resolved.commit["date"], "createdAt": meta.get("createdAt"),
            "private": meta.get("private", False), "gated": meta.get("gated", False), "disabled": False,
            "downloads": 0, "likes": 0, "tags": metadata.card_tags(repo_type, card, list(tree)), "cardData": card,
            "siblings": [_sibling(path, entry) for path, entry in sorted(tree.items())],
            "usedStorage": sum(e["size"] for e in tree.values()),
        }
        if repo_type == "space":
            info.update(sdk=meta.get("sdk"), runtime=self._runtime(repo_id, meta))
        self._json(info)

    def _refs(self, repo_type: str, repo_id: str):
        self._readable(repo_type, repo_id)
        refs = self.server.store.refs(repo_type, repo_id)
        def listed(kind: str, prefix: str) -> list[dict]:
            return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": c} for n, c in sorted(refs[kind].items())]

        self._json({"branches": listed("branches", "refs/heads/"), "tags": listed("tags", "refs/tags/"),
                    "converts": [], "pullRequests": []})

    def _paginate(self, items: list, default_size: int):
        """One page of `items` (`cursor` = offset, `limit` = size) with a Link header to the next."""
        start = int(self.query.get("cursor", ["0"])[0])
        size = max(1, min(int(self.query.get("limit", [default_size])[0]), default_size))
        headers = {}
        if start + size < len(items):
            query = {k: v[0] for k, v in self.query.items()} | {"cursor": str(start + size)}
            headers["Link"] = f'<{self.base_url}{self.raw_path}?{urlencode(query)}>; rel="next"'
        self._json(items[start:start + size], headers=headers)

    def _tree(self, repo_type: str, repo_id: str, segs: list[str]):
        self._readable(repo_type, repo_id)
        resolved, path = self._split_rev(repo_type, repo_id, segs)
        path = path.strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
        tree = resolved.commit["tree"]
        prefix = f"{path}/" if path else ""
        entries: dict[str, dict] = {}
        for file_path, entry in tree.items():
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                # once per folder: its entry hashes every file below it
                if (recursive or depth == 1) and folder not in entries:
                    entries[folder] = _folder_entry(folder, tree)
            if recursive or len(parts) == 1:
                entries[file_path] = _file_entry(file_path, entry)
        if path and not entries:
            raise HttpError(404, f"{path} does not exist on {resolved.commit_id}", "EntryNotFound",
                            {"X-Repo-Commit": resolved.commit_id})
        items = [entries[key] for key in sorted(entries)]
        if expand:
            self._add_last_commits(items, resolved.commit_id)
        self._paginate(items, TREE_PAGE_EXPANDED if expand else TREE_PAGE)

    def _add_last_commits(self, items: list[dict], head: str) -> None:
        """For each file, the newest commit that changed it (walks the history once)."""
        pending = {item["path"]: item for item in items if item["type"] == "file"}
        history = list(self.server.store.history(head))
        for (commit_id, commit), parent in zip(history, history[1:] + [(None, {"tree": {}})]):
            for path in [p for p in pending if commit["tree"].get(p) != parent[1]["tree"].get(p)]:
                pending.pop(path)["lastCommit"] = {"id": commit_id, "title": commit["title"], "date": commit["date"]}

    def _paths_info(self, repo_type: str, repo_id: str, revision: str):
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = _field(self._json_body(), "paths", list, required=False) or []
            if not all(isinstance(p, str) for p in paths):
                raise HttpError(400, '"paths" must be an array of strings')
        else:
            paths = parse_qs(self._body().decode("utf-8", errors="replace")).get("paths", [])
        self._readable(repo_type, repo_id)
        tree = self._resolve_rev(repo_type, repo_id, revision).commit["tree"]
        found = []
        for path in (p.strip("/") for p in paths):
            if path in tree:
                found.append(_file_entry(path, tree[path]))
            elif any(p.startswith(path + "/") for p in tree):
                found.append(_folder_entry(path, tree))
        self._json(found)

    def _commits(self, repo_type: str, repo_id: str, revision: str):
        self._readable(repo_type, repo_id)
        head = self._resolve_rev(repo_type, repo_id, revision).commit_id
        items = [
            {"id": cid, "title": c["title"], "message": c["message"], "date": c["date"],
             "authors": [{"user": c["author"] or "system"}]}
            for cid, c in self.server.store.history(head)
        ]
        self._paginate(items, COMMITS_PAGE)

    def _entry(self, repo_type: str, repo_id: str, segs: list[str]):
        """(resolved revision, path, tree entry) for `rev/path...`; 404 EntryNotFound if absent."""
        self._readable(repo_type, repo_id)
        resolved, path = self._split_rev(repo_type, repo_id, segs)
        entry = resolved.commit["tree"].get(path)
        if entry is None:
            raise HttpError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": resolved.commit_id})
        return resolved, path, entry

    def _intact(self, entry: dict, repo_id: str, path: str) -> None:
        """500 (and one log line naming it) when a blob's bytes no longer hash to its id: never served."""
        if not self.server.store.blob_intact(entry["sha256"]):
            logger.error("blob %s (%s/%s) does not match its sha256 on disk: not served", entry["sha256"],
                         repo_id, path)
            raise HttpError(500, f"stored content of {path} is damaged; it is not served")

    def _resolve(self, repo_type: str, repo_id: str, segs: list[str]):
        self._downloadable(repo_type, repo_id)
        resolved, path, entry = self._entry(repo_type, repo_id, segs)
        if self.command == "GET":
            self._intact(entry, repo_id, path)
        size = entry["size"]
        headers = {
            "X-Repo-Commit": resolved.commit_id,
            "ETag": f'"{entry["sha256"] if entry["lfs"] else entry["sha1"]}"',
            "Accept-Ranges": "bytes",
            **pages.user_file_headers(path),
        }
        start, end = 0, size - 1
        status = 200
        if "Range" in self.headers:
            span = _parse_range(self.headers["Range"], size)
            if span is None:
                raise HttpError(416, f"Range not satisfiable for a file of {size} bytes", None,
                                {"Content-Range": f"bytes */{size}"})
            start, end = span
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._discard_body()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(self.server.store.blob_path(entry["sha256"]), "rb") as fh:
            fh.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = fh.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _blob(self, repo_type: str, repo_id: str, segs: list[str]):
        """A page for people: Markdown (model cards) rendered as HTML, other files as they are.

        Relative links in a card (its plots) resolve to sibling blob URLs, so images show.
        """
        resolved, path, entry = self._entry(repo_type, repo_id, segs)
        if path != "README.md":  # a gated repo's card is public, as on the Hub; its files are not
            self._downloadable(repo_type, repo_id)
        self._intact(entry, repo_id, path)
        data = self.server.store.blob_path(entry["sha256"]).read_bytes()
        if not path.endswith(".md"):
            return self._send(200, data, {"X-Repo-Commit": resolved.commit_id, **pages.user_file_headers(path)},
                              pages.user_file_type(path))
        page = pages.card_page(f"{repo_id} @ {resolved.commit_id[:10]} : {path}", data)
        self._send(200, page, {"X-Repo-Commit": resolved.commit_id, **pages.card_page_headers()},
                   "text/html; charset=utf-8")

    # ---- writing -----------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str):
        files = _field(self._json_body(), "files", list)
        tree = self._resolve_rev(repo_type, repo_id, revision).commit["tree"]
        answer = []
        for i, item in enumerate(files):
            if not isinstance(item, dict):
                raise HttpError(400, f'"files[{i}]" must be of type object')
            path = _repo_path(item, f"files[{i}].path")
            sample = _base64(_field(item, "sample", str, required=False) or "", f"files[{i}].sample")
            size = _field(item, "size", int, required=False) or 0
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample
            existing = tree.get(path)
            oid = None
            if existing is not None and existing["lfs"] == lfs:
                oid = existing["sha256"] if lfs else existing["sha1"]
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": answer})

    def _lfs_batch(self, repo_type: str, repo_id: str):
        self._writable(repo_type, repo_id)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HttpError(400, "only the upload operation is supported")
        objects = []
        for i, obj in enumerate(_field(body, "objects", list)):
            if not isinstance(obj, dict):
                raise HttpError(400, f'"objects[{i}]" must be of type object')
            oid, size = _field(obj, "oid", str), _field(obj, "size", int)
            if not valid_sha256(oid) or size < 0:
                raise HttpError(400, f"LFS object {oid[:80]!r}: the oid must be a sha256 hex digest and the size "
                                     "a byte count")
            answer = {"oid": oid, "size": size}
            if not self.server.store.has_blob(oid):
                ticket = secrets.token_urlsafe(24)
                with self.server.tickets_lock:
                    self.server.lfs_tickets[ticket] = (oid, size)
                answer["actions"] = {"upload": {"href": f"{self.base_url}/_local/lfs/{ticket}", "header": {}}}
            objects.append(answer)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _local(self, method: str, segs: list[str]):
        if segs[:1] == ["lfs"] and len(segs) == 2 and method == "PUT":
            # the ticket from the batch answer stands for the write token (LFS PUTs carry none)
            with self.server.tickets_lock:
                target = self.server.lfs_tickets.get(segs[1])
            if target is None:
                raise HttpError(404, "unknown or used LFS upload ticket")
            oid, size = target
            # exactly the declared size: a longer body is refused before it is stored
            self.server.store.put_blob_stream(self._iter_body(limit=size), oid, size)
            with self.server.tickets_lock:
                self.server.lfs_tickets.pop(segs[1], None)
            return self._json({})
        if segs == ["faults"] and method in ("GET", "POST", "DELETE") and self.server.faults is not None:
            if self.identity is None or not self.identity.can_write:
                raise HttpError(403, "fault injection needs a write token")
            body = self._json_body()
            if method == "GET":
                return self._json({"rules": self.server.faults.describe()})
            if method == "DELETE":
                self.server.faults.clear()
            else:
                try:
                    self.server.faults.set(_field(body, "rules", list, required=False) or [])
                except (ValueError, re.error, KeyError, TypeError, AttributeError) as exc:
                    raise HttpError(400, f"bad fault rules: {exc}")
            return self._json({})
        raise HttpError(404, "Not Found")

    def _commit(self, repo_type: str, repo_id: str, revision: str):
        if self.query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HttpError(400, "pull requests are not supported by the local Hub server")
        header, operations = _commit_lines(self._body())
        for op in operations:
            if op["op"] == "add" and op["path"] == "README.md":  # the Hub checks the card on every commit
                errors = metadata.card_errors(op["data"].decode("utf-8", errors="replace"), repo_type)
                if errors:
                    raise HttpError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
        store = self.server.store
        if revision not in store.refs(repo_type, repo_id)["branches"]:
            self._resolve_rev(repo_type, repo_id, revision)  # RevisionNotFound for unknown revisions
            raise HttpError(400, f"{revision} is not a branch; commits go to branches")
        commit_id = store.apply_commit(repo_type, repo_id, revision, operations,
                                       _field(header, "summary", str, required=False) or "update",
                                       _field(header, "description", str, required=False) or "", self.identity.user,
                                       _field(header, "parentCommit", str, required=False))
        self._json({"success": True, "commitOid": commit_id, "pullRequestUrl": None,
                    "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{commit_id}"})

    def _create_ref(self, repo_type: str, repo_id: str, kind: str, name: str):
        start = _field(self._json_body(), "startingPoint", str, required=False) or DEFAULT_BRANCH
        self.server.store.create_ref(repo_type, repo_id, kind, name, start)
        self._json({})

    def _create_tag(self, repo_type: str, repo_id: str, revision: str):
        tag = _field(self._json_body(), "tag", str)
        self.server.store.create_ref(repo_type, repo_id, "tags", tag, revision)
        self._json({})

    def _delete_ref(self, repo_type: str, repo_id: str, kind: str, name: str):
        if kind == "branches" and name == DEFAULT_BRANCH:
            raise HttpError(403, "the main branch cannot be deleted")
        self.server.store.delete_ref(repo_type, repo_id, kind, name)
        self._json({})

    # ---- Spaces: settings are recorded, nothing is built or run ------------------------
    def _update_space(self, repo_id: str, change) -> dict:
        meta = self._writable("space", repo_id)
        with self.server.store.lock("space", repo_id):
            change(meta)
            self.server.store.save_meta("space", repo_id, meta)
        return meta

    def _space_variable(self, repo_id: str, delete: bool):
        body = self._json_body()
        _field(body, "key", str)

        def change(meta):
            if delete:
                meta["variables"].pop(body["key"], None)
            else:
                meta["variables"][body["key"]] = {"value": str(body.get("value", "")),
                                                  "description": body.get("description"), "updatedAt": now_iso()}

        self._json(self._update_space(repo_id, change)["variables"])

    def _space_secret(self, repo_id: str, delete: bool):
        key = _field(self._json_body(), "key", str)

        def change(meta):  # only the name is kept: the value is never written to disk
            names = set(meta.get("secrets", []))
            names.discard(key) if delete else names.add(key)
            meta["secrets"] = sorted(names)

        self._update_space(repo_id, change)
        self._json({})

    def _space_hardware(self, repo_id: str):
        body = self._json_body()
        _field(body, "flavor", str)
        _field(body, "sleepTimeSeconds", int, required=False)

        def change(meta):
            meta["hardware"] = {"current": body["flavor"], "requested": body["flavor"]}
            if body.get("sleepTimeSeconds") is not None:
                meta["gcTimeout"] = body["sleepTimeSeconds"]

        self._json(self._runtime(repo_id, self._update_space(repo_id, change)))

    def _space_sleeptime(self, repo_id: str):
        seconds = _field(self._json_body(), "seconds", int, required=False)
        meta = self._update_space(repo_id, lambda m: m.update(gcTimeout=seconds))
        self._json(self._runtime(repo_id, meta))

    def _runtime(self, repo_id: str, meta: dict) -> dict:
        """The recorded runtime; the stage says whether an app file is there, nothing is run."""
        tree = self._resolve_rev("space", repo_id, DEFAULT_BRANCH).commit["tree"]
        has_app = any(p in tree for p in ("app.py", "Dockerfile", "index.html")) or meta.get("sdk") == "static"
        return {"stage": "RUNNING" if has_app else "NO_APP_FILE", "hardware": meta.get("hardware", {}),
                "gcTimeout": meta.get("gcTimeout"), "storage": None, "devMode": False,
                "variables": meta.get("variables", {}), "secrets": meta.get("secrets", [])}


_JSON_KINDS = {str: "a string", int: "a number", list: "an array", dict: "of type object"}


def _json_kind(value) -> str:
    """How an error message names the JSON type of `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _field(obj: dict, key: str, kind: type, required: bool = True):
    """`obj[key]` checked to be a `kind` (None when absent and not required); 400 in the Hub's words."""
    value = obj.get(key)
    if value is None:
        if required:
            raise HttpError(400, f'"{key}" is required')
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HttpError(400, f'"{key}" must be {_JSON_KINDS[kind]}, not {_json_kind(value)}')
    if kind is str and required and not value:
        raise HttpError(400, f'"{key}" is not allowed to be empty')
    return value


def _repo_path(value: dict, where: str, folder: bool = False) -> str:
    """A file path from a request, refused (400) where the Hub refuses it; a folder may end with `/`."""
    path = value.get("path")
    if not isinstance(path, str):
        raise HttpError(400, f'"{where}" must be a string, not {_json_kind(path)}')
    path = path.rstrip("/") if folder else path
    if problem := repo_path_problem(path):
        raise HttpError(400, problem)
    return path


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f'"{where}" must be base64')


def _commit_lines(raw: bytes) -> tuple[dict, list[dict]]:
    """The header and operations of an NDJSON commit body; 400 for any line that is not one."""
    header, operations = {}, []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise HttpError(400, f"commit line {number} is not valid JSON")
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise HttpError(400, f'commit line {number} must be an object with "key" and an object "value"')
        key, value = item.get("key"), item["value"]
        where = f"line {number} value.path"
        if key == "header":
            header = value
        elif key == "file":
            content = _field(value, "content", str, required=False) or ""
            operations.append({"op": "add", "path": _repo_path(value, where),
                               "data": _base64(content, f"line {number} value.content")})
        elif key == "lfsFile":
            oid = _field(value, "oid", str)
            if not valid_sha256(oid):
                raise HttpError(400, f"line {number}: LFS oid must be a sha256 hex digest")
            size = _field(value, "size", int, required=False)  # absent in a copy
            operations.append({"op": "lfs", "path": _repo_path(value, where), "oid": oid, "size": size})
        elif key in ("deletedFile", "deletedFolder"):
            op = "delete" if key == "deletedFile" else "delete_folder"
            operations.append({"op": op, "path": _repo_path(value, where, folder=key == "deletedFolder")})
        else:
            raise HttpError(400, f"unknown commit line key {str(key)[:80]!r}")
    return header, operations


def _file_entry(path: str, entry: dict) -> dict:
    item = {"type": "file", "path": path, "size": entry["size"], "oid": entry["sha1"]}
    if entry["lfs"]:
        item["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                       "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
    return item


def _folder_entry(path: str, tree: dict) -> dict:
    children = sorted(f"{p}:{e['sha1']}" for p, e in tree.items() if p.startswith(path + "/"))
    return {"type": "directory", "path": path, "oid": hashlib.sha1("\n".join(children).encode()).hexdigest()}


def _sibling(path: str, entry: dict) -> dict:
    item = {"rfilename": path, "size": entry["size"], "blobId": entry["sha1"]}
    if entry["lfs"]:
        item["lfs"] = {"sha256": entry["sha256"], "size": entry["size"],
                       "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
    return item


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None when it cannot be satisfied."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None
