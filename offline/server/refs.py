"""Refs and commits: branches and tags, a revision's history, and NDJSON commits onto a branch."""
from __future__ import annotations

import json

from starlette.responses import Response

from offline.server import metadata
from offline.server.calls import Call, HttpError, Repo, decode_base64, field, json_response, repo_path
from offline.server.storage import DEFAULT_BRANCH, valid_sha256

COMMITS_PAGE = 50


def list_refs(call: Call, repo: Repo) -> Response:
    refs = call.store.refs(repo.type, repo.id)

    def listed(kind: str, prefix: str) -> list[dict]:
        return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": c} for n, c in sorted(refs[kind].items())]

    return json_response({"branches": listed("branches", "refs/heads/"), "tags": listed("tags", "refs/tags/"),
                          "converts": [], "pullRequests": []})


def create_branch(call: Call, repo: Repo, revision: str) -> Response:
    start = field(call.json(), "startingPoint", str, required=False) or DEFAULT_BRANCH
    call.store.create_ref(repo.type, repo.id, "branches", revision, start)
    return json_response({})


def create_tag(call: Call, repo: Repo, revision: str) -> Response:
    """Tag `revision` with the body's `tag`."""
    tag = field(call.json(), "tag", str)
    call.store.create_ref(repo.type, repo.id, "tags", tag, revision)
    return json_response({})


def delete_branch(call: Call, repo: Repo, revision: str) -> Response:
    if revision == DEFAULT_BRANCH:
        raise HttpError(403, "the main branch cannot be deleted")
    call.store.delete_ref(repo.type, repo.id, "branches", revision)
    return json_response({})


def delete_tag(call: Call, repo: Repo, revision: str) -> Response:
    call.store.delete_ref(repo.type, repo.id, "tags", revision)
    return json_response({})


def commits(call: Call, repo: Repo, revision: str) -> Response:
    head = call.store.resolve(repo.type, repo.id, revision).commit_id
    items = [{"id": cid, "title": c["title"], "message": c["message"], "date": c["date"],
              "authors": [{"user": c["author"] or "system"}]}
             for cid, c in call.store.history(head)]
    return call.page(items, COMMITS_PAGE)


def commit(call: Call, repo: Repo, revision: str) -> Response:
    if call.flag("create_pr"):
        raise HttpError(400, "pull requests are not supported by the local Hub server")
    header, operations = commit_lines(call.body())
    for op in operations:
        if op["op"] == "add" and op["path"] == "README.md":  # the Hub checks the card on every commit
            errors = metadata.card_errors(op["data"].decode("utf-8", errors="replace"), repo.type)
            if errors:
                raise HttpError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
    if revision not in call.store.refs(repo.type, repo.id)["branches"]:
        call.store.resolve(repo.type, repo.id, revision)  # RevisionNotFound for unknown revisions
        raise HttpError(400, f"{revision} is not a branch; commits go to branches")
    commit_id = call.store.apply_commit(repo.type, repo.id, revision, operations,
                                        field(header, "summary", str, required=False) or "update",
                                        field(header, "description", str, required=False) or "", call.identity.user,
                                        field(header, "parentCommit", str, required=False))
    return json_response({"success": True, "commitOid": commit_id, "pullRequestUrl": None,
                          "commitUrl": f"{call.repo_url(repo.type, repo.id)}/commit/{commit_id}"})


def commit_lines(raw: bytes) -> tuple[dict, list[dict]]:
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
            content = field(value, "content", str, required=False) or ""
            operations.append({"op": "add", "path": repo_path(value, where),
                               "data": decode_base64(content, f"line {number} value.content")})
        elif key == "lfsFile":
            oid = field(value, "oid", str)
            if not valid_sha256(oid):
                raise HttpError(400, f"line {number}: LFS oid must be a sha256 hex digest")
            size = field(value, "size", int, required=False)  # absent in a copy
            operations.append({"op": "lfs", "path": repo_path(value, where), "oid": oid, "size": size})
        elif key in ("deletedFile", "deletedFolder"):
            op = "delete" if key == "deletedFile" else "delete_folder"
            operations.append({"op": op, "path": repo_path(value, where, folder=key == "deletedFolder")})
        else:
            raise HttpError(400, f"unknown commit line key {str(key)[:80]!r}")
    return header, operations
