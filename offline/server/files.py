"""Files and LFS: tree listings, paths-info, downloads (resolve), preupload, the LFS batch API and its uploads."""
from __future__ import annotations

import hashlib
import os
import secrets
from urllib.parse import parse_qs

from starlette.responses import FileResponse, Response

from offline.server import pages
from offline.server.calls import PIECE, Call, HttpError, Repo, decode_base64, field, json_response, repo_path
from offline.server.storage import lfs_pointer, valid_sha256

# Binary formats the Hub's default .gitattributes sends to LFS; parquet must be LFS
# (datasets deletes its temporary shard right after preupload).
LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".arrow", ".h5", ".onnx", ".pkl",
                ".npy", ".npz", ".msgpack", ".model", ".gz", ".zip", ".tar", ".png", ".jpg", ".jpeg", ".gif", ".webp")
LFS_MIN_SIZE = 10 * 1024 * 1024
TREE_PAGE, TREE_PAGE_EXPANDED = 1000, 50


# ---- listing -----------------------------------------------------------------------------
def tree(call: Call, repo: Repo, location: list[str]) -> Response:
    resolved, path = call.split_revision(repo, location)
    path = path.strip("/")
    recursive, expand = call.flag("recursive"), call.flag("expand")
    files = resolved.commit["tree"]
    prefix = f"{path}/" if path else ""
    entries: dict[str, dict] = {}
    for file_path, entry in files.items():
        if not file_path.startswith(prefix):
            continue
        parts = file_path[len(prefix):].split("/")
        for depth in range(1, len(parts)):  # the folders on the way
            folder = prefix + "/".join(parts[:depth])
            # once per folder: its entry hashes every file below it
            if (recursive or depth == 1) and folder not in entries:
                entries[folder] = folder_entry(folder, files)
        if recursive or len(parts) == 1:
            entries[file_path] = file_entry(file_path, entry)
    if path and not entries:
        raise HttpError(404, f"{path} does not exist on {resolved.commit_id}", "EntryNotFound",
                        {"X-Repo-Commit": resolved.commit_id})
    items = [entries[key] for key in sorted(entries)]
    if expand:
        _add_last_commits(call, items, resolved.commit_id)
    return call.page(items, TREE_PAGE_EXPANDED if expand else TREE_PAGE)


def _add_last_commits(call: Call, items: list[dict], head: str) -> None:
    """For each file, the newest commit that changed it (walks the history once)."""
    pending = {item["path"]: item for item in items if item["type"] == "file"}
    history = list(call.store.history(head))
    for (commit_id, commit), parent in zip(history, history[1:] + [(None, {"tree": {}})]):
        for path in [p for p in pending if commit["tree"].get(p) != parent[1]["tree"].get(p)]:
            pending.pop(path)["lastCommit"] = {"id": commit_id, "title": commit["title"], "date": commit["date"]}


def paths_info(call: Call, repo: Repo, revision: str) -> Response:
    if call.request.headers.get("content-type", "").startswith("application/json"):
        paths = field(call.json(), "paths", list, required=False) or []
        if not all(isinstance(p, str) for p in paths):
            raise HttpError(400, '"paths" must be an array of strings')
    else:  # what huggingface_hub sends: form-encoded `paths=a&paths=b&expand=false`
        paths = parse_qs(call.body().decode("utf-8", errors="replace")).get("paths", [])
    files = call.store.resolve(repo.type, repo.id, revision).commit["tree"]
    found = []
    for path in (p.strip("/") for p in paths):
        if path in files:
            found.append(file_entry(path, files[path]))
        elif any(p.startswith(path + "/") for p in files):
            found.append(folder_entry(path, files))
    return json_response(found)


def file_entry(path: str, entry: dict) -> dict:
    item = {"type": "file", "path": path, "size": entry["size"], "oid": entry["sha1"]}
    if entry["lfs"]:
        item["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                       "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
    return item


def folder_entry(path: str, files: dict) -> dict:
    children = sorted(f"{p}:{e['sha1']}" for p, e in files.items() if p.startswith(path + "/"))
    return {"type": "directory", "path": path, "oid": hashlib.sha1("\n".join(children).encode()).hexdigest()}


# ---- downloading -------------------------------------------------------------------------
def resolve(call: Call, repo: Repo, location: list[str]) -> Response:
    """A file as the clients download it: HEAD with its true size, GET whole or by Range (Starlette's
    FileResponse answers 206 with Content-Range, or 416), named by its content hash (ETag)."""
    resolved, path, entry = call.file_at(repo, location)
    if call.request.method == "GET":
        call.check_intact(entry, repo, path)
    blob = call.store.blob_path(entry["sha256"])
    headers = {"X-Repo-Commit": resolved.commit_id, "ETag": f'"{entry["sha256"] if entry["lfs"] else entry["sha1"]}"',
               **pages.user_file_headers(path)}
    response = FileResponse(blob, headers=headers, media_type="application/octet-stream", stat_result=os.stat(blob))
    response.chunk_size = PIECE  # each read is a trip to a worker thread: 64 KiB ones made downloads slower
    return response


# ---- uploading ---------------------------------------------------------------------------
def preupload(call: Call, repo: Repo, revision: str) -> Response:
    """Which files go through LFS, and the oid of each one already there (so unchanged files are skipped)."""
    files = field(call.json(), "files", list)
    existing_files = call.store.resolve(repo.type, repo.id, revision).commit["tree"]
    answer = []
    for i, item in enumerate(files):
        if not isinstance(item, dict):
            raise HttpError(400, f'"files[{i}]" must be of type object')
        path = repo_path(item, f"files[{i}].path")
        sample = decode_base64(field(item, "sample", str, required=False) or "", f"files[{i}].sample")
        size = field(item, "size", int, required=False) or 0
        lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample
        existing = existing_files.get(path)
        oid = None
        if existing is not None and existing["lfs"] == lfs:
            oid = existing["sha256"] if lfs else existing["sha1"]
        answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
    return json_response({"files": answer})


def lfs_batch(call: Call, repo: Repo) -> Response:
    """The git-lfs batch API: an upload ticket (URL) for each object not stored yet."""
    body = call.json()
    if body.get("operation") != "upload":
        raise HttpError(400, "only the upload operation is supported")
    objects = []
    for i, obj in enumerate(field(body, "objects", list)):
        if not isinstance(obj, dict):
            raise HttpError(400, f'"objects[{i}]" must be of type object')
        oid, size = field(obj, "oid", str), field(obj, "size", int)
        if not valid_sha256(oid) or size < 0:
            raise HttpError(400, f"LFS object {oid[:80]!r}: the oid must be a sha256 hex digest and the size "
                                 "a byte count")
        answer = {"oid": oid, "size": size}
        if not call.store.has_blob(oid):
            ticket = secrets.token_urlsafe(24)
            with call.hub.tickets_lock:
                call.hub.lfs_tickets[ticket] = (oid, size)
            answer["actions"] = {"upload": {"href": f"{call.base_url}/_local/lfs/{ticket}", "header": {}}}
        objects.append(answer)
    return json_response({"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json")


def lfs_upload(call: Call, ticket: str) -> Response:
    """An LFS upload: the ticket from the batch answer stands for the write token (LFS PUTs carry none)."""
    with call.hub.tickets_lock:
        target = call.hub.lfs_tickets.get(ticket)
    if target is None:
        raise HttpError(404, "unknown or used LFS upload ticket")
    oid, size = target
    # exactly the declared size: a longer body is refused before it is stored
    call.store.put_blob_stream(call.chunks(limit=size), oid, size)
    with call.hub.tickets_lock:
        call.hub.lfs_tickets.pop(ticket, None)
    return json_response({})
