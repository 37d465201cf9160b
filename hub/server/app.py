"""The HTTP side of the local Hub server: routing the Hub's API paths onto the store.

Paths are routed on the raw (still percent-encoded) path, split on `/` and decoded per
segment, so a revision sent as `exp%2Flr-1e-4` stays one segment. Every error carries
`X-Error-Code` where the real Hub sends one, `X-Error-Message`, and a JSON `{"error"}` body,
because huggingface_hub turns those into RepositoryNotFoundError, RevisionNotFoundError, ...
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import mimetypes
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

from hub.server import auth
from hub.server.faults import Faults
from hub.server.storage import (DEFAULT_BRANCH, REPO_TYPES, Store, StoreError, lfs_pointer, now_iso,
                                 valid_sha256)

logger = logging.getLogger("hub.server")

PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
# Binary formats the Hub's default .gitattributes sends to LFS; parquet must be LFS
# (datasets deletes its temporary shard right after preupload).
LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".arrow", ".h5", ".onnx", ".pkl",
                ".npy", ".npz", ".msgpack", ".model", ".gz", ".zip", ".tar", ".png", ".jpg", ".jpeg", ".gif", ".webp")
LFS_MIN_SIZE = 10 * 1024 * 1024
TREE_PAGE, TREE_PAGE_EXPANDED, COMMITS_PAGE = 1000, 50, 50
_CHUNK = 1 << 20


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.store = Store(self.data_dir)
        self.faults = Faults()
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
        split = urlsplit(self.path)
        self.raw_path, self.query = split.path, parse_qs(split.query)
        try:
            if not self._apply_fault():
                return
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
        if self.raw_path.startswith("/_local/faults"):
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

    def _iter_body(self):
        """The request body in chunks; understands Content-Length and chunked encoding."""
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(_CHUNK, remaining))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                remaining -= len(chunk)
                yield chunk

    def _body(self) -> bytes:
        return b"".join(self._iter_body()) if not self._body_read else b""

    def _json_body(self) -> dict:
        raw = self._body()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise HttpError(400, "request body is not valid JSON")

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json") -> None:
        if not self._body_read:
            self._body()  # drain, so keep-alive connections stay in sync
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
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

    def _writer(self, namespace: str) -> auth.Identity:
        if self.identity is None:
            raise HttpError(401, "You must be authenticated with a write token to do this")
        if not self.identity.can_write:
            raise HttpError(403, "This token has read-only access")
        if self.identity.user != namespace:
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
        body = self._json_body()
        if self.identity is None:
            raise HttpError(401, "You must be authenticated with a write token to create a repo")
        namespace = body.get("organization") or self.identity.user
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES or not body.get("name"):
            raise HttpError(400, f"invalid repo type {repo_type!r} or missing name")
        repo_id = f"{namespace}/{body['name']}"
        self._writer(namespace)
        private = body.get("visibility") == "private" if "visibility" in body else bool(body.get("private"))
        meta = {"type": repo_type, "id": repo_id, "private": private}
        if repo_type == "space":
            meta.update(sdk=body.get("sdk"), variables={}, secrets=[],
                        hardware={"current": "cpu-basic", "requested": body.get("hardware") or "cpu-basic"},
                        gcTimeout=body.get("sleepTimeSeconds"))
            for var in body.get("variables") or []:
                meta["variables"][var["key"]] = {"value": var["value"], "description": var.get("description"),
                                                 "updatedAt": now_iso()}
            meta["secrets"] = sorted({s["key"] for s in body.get("secrets") or []})
        url = self._repo_url(repo_type, repo_id)
        if not self.server.store.create_repo(repo_type, repo_id, meta):
            return self._json({"error": "You already created this repo", "url": url}, 409,
                              {"X-Error-Message": "You already created this repo"})
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self):
        body = self._json_body()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or (self.identity.user if self.identity else "")
        repo_id = f"{namespace}/{body.get('name')}"
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
            meta["gated"] = body["gated"]
        with self.server.store.lock(repo_type, repo_id):
            self.server.store.save_meta(repo_type, repo_id, meta)
        self._json({})

    def _validate_yaml(self):
        content = self._json_body().get("content", "")
        try:
            _front_matter(content)
        except yaml.YAMLError as exc:
            message = f"Invalid YAML in the card metadata: {exc}".replace("\n", " ")
            return self._json({"error": message, "errors": [{"message": message}], "warnings": []}, 400,
                              {"X-Error-Message": message})
        self._json({"errors": [], "warnings": []})

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
            return _front_matter(text)
        except yaml.YAMLError:
            return None

    def _info(self, repo_type: str, repo_id: str, revision: str):
        meta = self._readable(repo_type, repo_id)
        resolved = self._resolve_rev(repo_type, repo_id, revision)
        tree = resolved.commit["tree"]
        info = {
            "_id": repo_id, "id": repo_id, "author": repo_id.split("/")[0], "sha": resolved.commit_id,
            "lastModified": resolved.commit["date"], "createdAt": meta.get("createdAt"),
            "private": meta.get("private", False), "gated": meta.get("gated", False), "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "cardData": self._card_data(tree),
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
        raw = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(raw or b"{}").get("paths", [])
        else:
            paths = parse_qs(raw.decode()).get("paths", [])
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

    def _resolve(self, repo_type: str, repo_id: str, segs: list[str]):
        resolved, path, entry = self._entry(repo_type, repo_id, segs)
        size = entry["size"]
        headers = {
            "X-Repo-Commit": resolved.commit_id,
            "ETag": f'"{entry["sha256"] if entry["lfs"] else entry["sha1"]}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{Path(path).name}"',
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
        self._body()
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
        data = self.server.store.blob_path(entry["sha256"]).read_bytes()
        if not path.endswith(".md"):
            kind = mimetypes.guess_type(path)[0] or "text/plain; charset=utf-8"
            return self._send(200, data, {"X-Repo-Commit": resolved.commit_id}, kind)
        title = html.escape(f"{repo_id} @ {resolved.commit_id[:10]} : {path}")
        page = f"<!doctype html><meta charset=utf-8><title>{title}</title><h3>{title}</h3>" + _markdown_html(data)
        self._send(200, page.encode(), {"X-Repo-Commit": resolved.commit_id}, "text/html; charset=utf-8")

    # ---- writing -----------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str):
        files = self._json_body().get("files", [])
        self._writable(repo_type, repo_id)
        tree = self._resolve_rev(repo_type, repo_id, revision).commit["tree"]
        answer = []
        for item in files:
            path = item["path"]
            sample = base64.b64decode(item.get("sample", ""))
            lfs = path.lower().endswith(LFS_SUFFIXES) or item.get("size", 0) >= LFS_MIN_SIZE or b"\0" in sample
            existing = tree.get(path)
            oid = None
            if existing is not None and existing["lfs"] == lfs:
                oid = existing["sha256"] if lfs else existing["sha1"]
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": answer})

    def _lfs_batch(self, repo_type: str, repo_id: str):
        body = self._json_body()
        self._writable(repo_type, repo_id)
        if body.get("operation") != "upload":
            raise HttpError(400, "only the upload operation is supported")
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj.get("oid")), int(obj.get("size", 0))
            if not valid_sha256(oid):
                raise HttpError(400, f"LFS oid must be a sha256 hex digest, got {oid[:80]!r}")
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
            self.server.store.put_blob_stream(self._iter_body(), target[0])
            with self.server.tickets_lock:
                self.server.lfs_tickets.pop(segs[1], None)
            return self._json({})
        if segs == ["faults"] and method in ("GET", "POST", "DELETE"):
            body = self._json_body()
            if self.identity is None or not self.identity.can_write:
                raise HttpError(403, "fault injection needs a write token")
            if method == "GET":
                return self._json({"rules": self.server.faults.describe()})
            if method == "DELETE":
                self.server.faults.clear()
            else:
                try:
                    self.server.faults.set(body.get("rules", []))
                except (ValueError, re.error, KeyError) as exc:
                    raise HttpError(400, f"bad fault rules: {exc}")
            return self._json({})
        raise HttpError(404, "Not Found")

    def _commit(self, repo_type: str, repo_id: str, revision: str):
        raw = self._body()
        self._writable(repo_type, repo_id)
        if self.query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HttpError(400, "pull requests are not supported by the local Hub server")
        header, operations = {}, []
        for line in raw.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                operations.append({"op": "add", "path": value["path"], "data": base64.b64decode(value["content"])})
            elif key == "lfsFile":
                operations.append({"op": "lfs", "path": value["path"], "oid": value["oid"], "size": int(value["size"])})
            elif key == "deletedFile":
                operations.append({"op": "delete", "path": value["path"]})
            elif key == "deletedFolder":
                operations.append({"op": "delete_folder", "path": value["path"]})
            else:
                raise HttpError(400, f"unknown commit line key {key!r}")
        store = self.server.store
        if revision not in store.refs(repo_type, repo_id)["branches"]:
            self._resolve_rev(repo_type, repo_id, revision)  # RevisionNotFound for unknown revisions
            raise HttpError(400, f"{revision} is not a branch; commits go to branches")
        commit_id = store.apply_commit(repo_type, repo_id, revision, operations, header.get("summary") or "update",
                                       header.get("description") or "", self.identity.user, header.get("parentCommit"))
        self._json({"success": True, "commitOid": commit_id, "pullRequestUrl": None,
                    "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{commit_id}"})

    def _create_ref(self, repo_type: str, repo_id: str, kind: str, name: str):
        body = self._json_body()
        self._writable(repo_type, repo_id)
        start = body.get("startingPoint") or DEFAULT_BRANCH
        self.server.store.create_ref(repo_type, repo_id, kind, name, start)
        self._json({})

    def _create_tag(self, repo_type: str, repo_id: str, revision: str):
        body = self._json_body()
        self._writable(repo_type, repo_id)
        if not body.get("tag"):
            raise HttpError(400, "missing tag name")
        self.server.store.create_ref(repo_type, repo_id, "tags", body["tag"], revision)
        self._json({})

    def _delete_ref(self, repo_type: str, repo_id: str, kind: str, name: str):
        self._writable(repo_type, repo_id)
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
        if not body.get("key"):
            raise HttpError(400, "missing variable key")

        def change(meta):
            if delete:
                meta["variables"].pop(body["key"], None)
            else:
                meta["variables"][body["key"]] = {"value": str(body.get("value", "")),
                                                  "description": body.get("description"), "updatedAt": now_iso()}

        self._json(self._update_space(repo_id, change)["variables"])

    def _space_secret(self, repo_id: str, delete: bool):
        body = self._json_body()
        key = body.get("key")
        if not key:
            raise HttpError(400, "missing secret key")

        def change(meta):  # only the name is kept: the value is never written to disk
            names = set(meta.get("secrets", []))
            names.discard(key) if delete else names.add(key)
            meta["secrets"] = sorted(names)

        self._update_space(repo_id, change)
        self._json({})

    def _space_hardware(self, repo_id: str):
        body = self._json_body()
        if not body.get("flavor"):
            raise HttpError(400, "missing hardware flavor")

        def change(meta):
            meta["hardware"] = {"current": body["flavor"], "requested": body["flavor"]}
            if body.get("sleepTimeSeconds") is not None:
                meta["gcTimeout"] = body["sleepTimeSeconds"]

        self._json(self._runtime(repo_id, self._update_space(repo_id, change)))

    def _space_sleeptime(self, repo_id: str):
        body = self._json_body()
        meta = self._update_space(repo_id, lambda m: m.update(gcTimeout=body.get("seconds")))
        self._json(self._runtime(repo_id, meta))

    def _runtime(self, repo_id: str, meta: dict) -> dict:
        """The recorded runtime; the stage says whether an app file is there, nothing is run."""
        tree = self._resolve_rev("space", repo_id, DEFAULT_BRANCH).commit["tree"]
        has_app = any(p in tree for p in ("app.py", "Dockerfile", "index.html")) or meta.get("sdk") == "static"
        return {"stage": "RUNNING" if has_app else "NO_APP_FILE", "hardware": meta.get("hardware", {}),
                "gcTimeout": meta.get("gcTimeout"), "storage": None, "devMode": False,
                "variables": meta.get("variables", {}), "secrets": meta.get("secrets", [])}


_FRONT_MATTER = re.compile(r"^\s*---[ \t]*\n(.*?)\n---[ \t]*(\n|$)", re.S)


def _front_matter(card: str) -> dict | None:
    """The YAML metadata block of a card (README.md); raises yaml.YAMLError when it is invalid."""
    match = _FRONT_MATTER.match(card)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else None


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


def _markdown_html(data: bytes) -> str:
    """Card body as HTML (front matter shown as code); plain text when `markdown` is missing."""
    text = data.decode("utf-8", errors="replace")
    match = _FRONT_MATTER.match(text)
    head = f"<pre>{html.escape(match.group(1))}</pre>" if match else ""
    text = text[match.end():] if match else text
    try:
        import markdown
    except ImportError:
        return head + f"<pre>{html.escape(text)}</pre>"
    # Raw HTML in a card stays text (`<` escaped); `>` is left alone, it starts Markdown quotes.
    inert = text.replace("&", "&amp;").replace("<", "&lt;")
    return head + markdown.markdown(inert, extensions=["tables", "fenced_code"])
