"""Repositories on disk: content-addressed blobs, immutable commits, one refs file per repo.

Layout under the data directory:
    objects/blobs/<sha256>         file contents, named by their sha256
    objects/commits/<id>.json      a commit: parents, tree (path -> blob), message, author, date
    repos/<type>/<ns>/<name>/repo.json   settings (private, Space sdk, variables, hardware)
    repos/<type>/<ns>/<name>/refs.json   {"branches": {name: commit}, "tags": {name: commit}}

A commit writes its objects first and then replaces refs.json with os.replace, so a crash
mid-commit leaves the branch at its previous commit. Writers to one repo hold that repo's lock.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

# The client's own definition of a file's git blob id, so both sides agree by construction.
from huggingface_hub.utils.sha import git_hash

from common.atomic import write_bytes_atomic, write_json_atomic

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REF_RE = re.compile(r"^(?!/)(?!.*//)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}(?<!/)$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
MAX_PATH_LENGTH = 1000
# Folders the Hub refuses to write into (huggingface_hub's FORBIDDEN_FOLDERS, git's own folder).
FORBIDDEN_SEGMENTS = (".git", ".cache")

def valid_repo_id(repo_id: str) -> bool:
    namespace, _, name = repo_id.partition("/")
    return bool(_NAME_RE.match(namespace) and _NAME_RE.match(name))


def valid_sha256(oid: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{64}", oid))


def repo_path_problem(path) -> str | None:
    """Why the Hub would refuse `path` as a file path in a commit; None when it is fine."""
    if not isinstance(path, str) or not path:
        return "a file path must be a non-empty string"
    segments = path.split("/")
    if path.startswith("/"):
        problem = "is absolute"
    elif len(path) > MAX_PATH_LENGTH:
        problem = f"is longer than {MAX_PATH_LENGTH} characters"
    elif re.search(r"[\x00-\x1f\x7f\\]", path):
        problem = "contains a control character or a backslash"
    elif "" in segments:
        problem = "has an empty segment"
    elif any(part in (".", "..") for part in segments):
        problem = "has a '.' or '..' segment"
    elif any(part in FORBIDDEN_SEGMENTS for part in segments):
        problem = f"is inside a {'/'.join(FORBIDDEN_SEGMENTS)} folder"
    else:
        return None
    return f"Invalid path {path[:200]!r}: it {problem}"


class StoreError(Exception):
    """A request the store refuses; `code` becomes the X-Error-Code header."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


@dataclass(frozen=True)
class Resolved:
    """A revision resolved to a commit."""

    commit_id: str
    commit: dict


class Store:
    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)
        self.blobs = self.root / "objects" / "blobs"
        self.commits = self.root / "objects" / "commits"
        for folder in (self.blobs, self.commits, self.root / "repos"):
            folder.mkdir(parents=True, exist_ok=True)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # sha256 -> the file's (inode, size, mtime, ctime) when its content last hashed right:
        # a blob is re-hashed only after it changed on disk
        self._verified: dict[str, tuple[int, int, int, int]] = {}

    # ---- repos -------------------------------------------------------------------------
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / repo_id

    def lock(self, repo_type: str, repo_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((repo_type, repo_id), threading.Lock())

    def repo_meta(self, repo_type: str, repo_id: str) -> dict | None:
        if not valid_repo_id(repo_id):  # also keeps `..` in a URL from reaching outside repos/
            return None
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_meta(self, repo_type: str, repo_id: str, meta: dict) -> None:
        write_json_atomic(self.repo_dir(repo_type, repo_id) / "repo.json", meta)

    def update_meta(self, repo_type: str, repo_id: str, change: Callable[[dict], object]) -> dict:
        """Apply `change` to the repo's settings and save them, under the repo's lock (nothing is
        saved when `change` raises); return the new settings."""
        with self.lock(repo_type, repo_id):
            meta = self.repo_meta(repo_type, repo_id)
            change(meta)
            self.save_meta(repo_type, repo_id, meta)
        return meta

    def create_repo(self, repo_type: str, repo_id: str, meta: dict) -> bool:
        """Create a repo with an initial commit holding .gitattributes; False if it exists."""
        if not valid_repo_id(repo_id):
            raise StoreError(400, f"invalid repo name {repo_id!r}")
        with self.lock(repo_type, repo_id):
            if self.repo_meta(repo_type, repo_id) is not None:
                return False
            tree = {".gitattributes": self._blob_entry(self.put_blob(GITATTRIBUTES), GITATTRIBUTES, lfs=False)}
            commit_id = self._write_commit([], tree, "initial commit", "", "system")  # as the Hub does
            self._write_refs(repo_type, repo_id, {"branches": {DEFAULT_BRANCH: commit_id}, "tags": {}})
            # repo.json last: a repo exists once both files are in place
            self.save_meta(repo_type, repo_id, {**meta, "createdAt": now_iso()})
        return True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock(repo_type, repo_id):
            folder = self.repo_dir(repo_type, repo_id)
            # rename first so a half-deleted repo is never visible
            trash = Path(tempfile.mkdtemp(prefix=".deleted-", dir=self.root / "repos"))
            os.replace(folder, trash / "repo")
            shutil.rmtree(trash)

    # ---- refs --------------------------------------------------------------------------
    def refs(self, repo_type: str, repo_id: str) -> dict:
        return json.loads((self.repo_dir(repo_type, repo_id) / "refs.json").read_text())

    def _write_refs(self, repo_type: str, repo_id: str, refs: dict) -> None:
        write_json_atomic(self.repo_dir(repo_type, repo_id) / "refs.json", refs)

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> Resolved:
        refs = self.refs(repo_type, repo_id)
        commit_id = refs["branches"].get(revision) or refs["tags"].get(revision)
        if commit_id is None and revision.startswith("refs/heads/"):
            commit_id = refs["branches"].get(revision[len("refs/heads/"):])
        if commit_id is None and revision.startswith("refs/tags/"):
            commit_id = refs["tags"].get(revision[len("refs/tags/"):])
        if commit_id is None and _SHORT_SHA_RE.match(revision):
            commit_id = self._commit_by_prefix(refs, revision)
        if commit_id is None:
            raise StoreError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return Resolved(commit_id, self.commit(commit_id))

    def _commit_by_prefix(self, refs: dict, prefix: str) -> str | None:
        """The one commit of this repo's history whose id starts with `prefix` (7 to 40 hex digits).

        Commits are global objects, so only those reachable from this repo's refs count; an
        ambiguous prefix resolves to nothing, as in git.
        """
        heads = list(refs["branches"].values()) + list(refs["tags"].values())
        matches = {c for head in heads for c, _ in self.history(head) if c.startswith(prefix)}
        return matches.pop() if len(matches) == 1 else None

    def create_ref(self, repo_type: str, repo_id: str, kind: str, name: str, start: str) -> None:
        """Create branch or tag `name` (kind "branches" or "tags") at revision `start`."""
        if not _REF_RE.match(name):
            raise StoreError(400, f"invalid {kind[:-1] if kind == 'branches' else 'tag'} name {name!r}")
        with self.lock(repo_type, repo_id):
            refs = self.refs(repo_type, repo_id)
            if name in refs[kind]:
                raise StoreError(409, f"Reference {name} already exists")
            refs[kind][name] = self.resolve(repo_type, repo_id, start).commit_id
            self._write_refs(repo_type, repo_id, refs)

    def delete_ref(self, repo_type: str, repo_id: str, kind: str, name: str) -> None:
        with self.lock(repo_type, repo_id):
            refs = self.refs(repo_type, repo_id)
            if refs[kind].pop(name, None) is None:
                raise StoreError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            self._write_refs(repo_type, repo_id, refs)

    # ---- objects -----------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def has_blob(self, sha256: str) -> bool:
        """True when the blob is stored and its bytes still hash to its name."""
        return valid_sha256(sha256) and self.blob_intact(sha256)

    def blob_size(self, sha256: str) -> int:
        return self.blob_path(sha256).stat().st_size

    def blob_intact(self, sha256: str) -> bool:
        """Whether the stored bytes of `sha256` still hash to it (re-hashed only when the file changed)."""
        path = self.blob_path(sha256)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._verified.get(sha256) == stamp:
            return True
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            self._verified.pop(sha256, None)
            return False
        self._verified[sha256] = stamp
        return True

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha):  # absent, or damaged on disk: this upload repairs it
            write_bytes_atomic(self.blob_path(sha), data)
        return sha

    def put_blob_stream(self, chunks: Iterator[bytes], expected_sha256: str, expected_size: int) -> None:
        """Store an uploaded blob; refuse it unless it has `expected_size` bytes hashing to `expected_sha256`."""
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self.blobs)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
            if size != expected_size:
                raise StoreError(400, f"LFS object {expected_sha256} was declared as {expected_size} bytes, "
                                      f"{size} were uploaded")
            if digest.hexdigest() != expected_sha256:
                raise StoreError(400, f"content does not match oid {expected_sha256}")
            os.replace(tmp, self.blob_path(expected_sha256))
        finally:
            Path(tmp).unlink(missing_ok=True)

    @staticmethod
    def _blob_entry(sha256: str, data_or_pointer: bytes, lfs: bool, size: int | None = None) -> dict:
        """A tree entry; `sha1` is the git blob id (of the LFS pointer for LFS files, as git has it)."""
        size = len(data_or_pointer) if size is None else size
        return {"sha256": sha256, "sha1": git_hash(data_or_pointer), "size": size, "lfs": lfs}

    def commit(self, commit_id: str) -> dict:
        return json.loads((self.commits / f"{commit_id}.json").read_text())

    def _write_commit(self, parents: list[str], tree: dict, title: str, message: str, author: str) -> str:
        body = {"parents": parents, "tree": tree, "title": title, "message": message, "author": author,
                "date": now_iso()}
        # the date and parents make the id unique even for identical trees
        commit_id = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        write_json_atomic(self.commits / f"{commit_id}.json", {"id": commit_id, **body})
        return commit_id

    def history(self, commit_id: str) -> Iterator[tuple[str, dict]]:
        """Commits from `commit_id` back to the first, following first parents."""
        while commit_id:
            commit = self.commit(commit_id)
            yield commit_id, commit
            commit_id = commit["parents"][0] if commit["parents"] else ""

    # ---- commits -----------------------------------------------------------------------
    def apply_commit(self, repo_type: str, repo_id: str, branch: str, operations: list[dict],
                     title: str, message: str, author: str, parent: str | None) -> str:
        """Apply add/lfs/delete operations to `branch` as one commit; return its id.

        Operations: {"op": "add", "path", "data"}, {"op": "lfs", "path", "oid", "size"} (size None
        for a copy, which names the object by its oid only), {"op": "delete", "path"},
        {"op": "delete_folder", "path"}. A file path the Hub would refuse is refused (400).
        """
        for op in operations:
            if problem := repo_path_problem(op["path"]):
                raise StoreError(400, problem)
        with self.lock(repo_type, repo_id):
            refs = self.refs(repo_type, repo_id)
            head = refs["branches"].get(branch)
            if head is None:
                raise StoreError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if parent and parent != head:
                raise StoreError(412, f"A commit has happened since: parentCommit {parent} is not the head {head}")
            tree = dict(self.commit(head)["tree"])
            for op in operations:
                self._apply(tree, op)
            commit_id = self._write_commit([head], tree, title, message, author)
            refs["branches"][branch] = commit_id
            self._write_refs(repo_type, repo_id, refs)
            return commit_id

    def _apply(self, tree: dict, op: dict) -> None:
        path = op["path"]
        if op["op"] == "add":
            tree[path] = self._blob_entry(self.put_blob(op["data"]), op["data"], lfs=False)
        elif op["op"] == "lfs":
            if not self.has_blob(op["oid"]):
                raise StoreError(422, f"LFS object {op['oid']} for {path} was never uploaded")
            size = self.blob_size(op["oid"])
            if op.get("size") is not None and op["size"] != size:
                raise StoreError(400, f"LFS object {op['oid']} for {path} has {size} bytes, "
                                      f"the commit declares {op['size']}")
            tree[path] = self._blob_entry(op["oid"], lfs_pointer(op["oid"], size), lfs=True, size=size)
        elif op["op"] == "delete":
            if tree.pop(path, None) is None:
                raise StoreError(404, f"{path} does not exist", "EntryNotFound")
        elif op["op"] == "delete_folder":
            for name in [p for p in tree if p.startswith(path + "/")]:
                del tree[name]
