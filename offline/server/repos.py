"""Accounts and repositories: whoami, create, delete, settings, gated access, repo info, card validation."""
from __future__ import annotations

from starlette.responses import Response

from offline.server import metadata, spaces
from offline.server.calls import Call, HttpError, Repo, field, header_text, json_response
from offline.server.storage import DEFAULT_BRANCH, REPO_TYPES, Store, lfs_pointer

GATED_MODES = ("auto", "manual")


def whoami(call: Call) -> Response:
    if call.identity is None:
        raise HttpError(401, "Invalid credentials in Authorization header")
    user, role = call.identity.user, call.identity.role
    return json_response({"type": "user", "id": user, "name": user, "fullname": user, "orgs": [],
                          "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": role}}})


def _repo_type(body: dict, key: str) -> str:
    repo_type = field(body, key, str, required=False) or "model"
    if repo_type not in REPO_TYPES:
        raise HttpError(400, f'"{key}" must be one of [{", ".join(REPO_TYPES)}]')
    return repo_type


def create(call: Call) -> Response:
    call.writer()
    body = call.json()
    namespace = field(body, "organization", str, required=False) or call.identity.user
    repo_type = _repo_type(body, "type")
    repo_id = f"{namespace}/{field(body, 'name', str)}"
    for key in ("variables", "secrets"):
        for item in field(body, key, list, required=False) or []:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                raise HttpError(400, f'"{key}" must be an array of {{"key", "value"}} objects')
    call.writer(namespace)
    private = body.get("visibility") == "private" if "visibility" in body else bool(body.get("private"))
    meta = {"type": repo_type, "id": repo_id, "private": private}
    if repo_type == "space":
        meta.update(spaces.new_space_meta(body))
    url = call.repo_url(repo_type, repo_id)
    if not call.store.create_repo(repo_type, repo_id, meta):
        # the body names the url too: create_repo(exist_ok=True) reads it from the 409
        return json_response({"error": "You already created this repo", "url": url}, 409,
                             {"X-Error-Message": "You already created this repo"})
    return json_response({"url": url, "name": repo_id, "id": repo_id})


def delete(call: Call) -> Response:
    call.writer()
    body = call.json()
    repo_type = _repo_type(body, "type")
    namespace = field(body, "organization", str, required=False) or call.identity.user
    repo_id = f"{namespace}/{field(body, 'name', str)}"
    call.writable(repo_type, repo_id)
    call.store.delete_repo(repo_type, repo_id)
    return json_response({})


def settings(call: Call, repo: Repo) -> Response:
    body = call.json()

    def change(meta: dict) -> None:
        if "visibility" in body:
            meta["private"] = body["visibility"] == "private"
        elif "private" in body:
            meta["private"] = bool(body["private"])
        if "gated" in body:
            if body["gated"] not in (*GATED_MODES, False):
                raise HttpError(400, f'"gated" must be one of [{", ".join(GATED_MODES)}, false]')
            meta["gated"] = body["gated"]

    call.store.update_meta(repo.type, repo.id, change)
    return json_response({})


def grant_access(call: Call, repo: Repo) -> Response:
    """`grant_access`: the owner lets `user` download a gated repo (the Hub's status codes)."""
    user = field(call.json(), "user", str)

    def change(meta: dict) -> None:
        if not meta.get("gated"):
            raise HttpError(400, f"Repo {repo.id} is not gated")
        if user in meta.get("granted", []):
            raise HttpError(400, f"User {user} already has access to {repo.id}")
        meta["granted"] = sorted({*meta.get("granted", []), user})

    call.store.update_meta(repo.type, repo.id, change)
    return json_response({"user": user, "status": "accepted"})


def validate_yaml(call: Call) -> Response:
    body = call.json()
    content = field(body, "content", str)
    errors = metadata.card_errors(content, _repo_type(body, "repoType"))
    if not errors:
        return json_response({"errors": [], "warnings": []})
    headers = {"X-Error-Message": header_text(errors[0])}
    if call.request.headers.get("accept", "").startswith("text/plain"):  # what RepoCard.validate asks for
        return Response("\n".join(f"- Error: {e}" for e in errors), 400, headers, "text/plain; charset=utf-8")
    return json_response({"error": "\n".join(errors), "errors": [{"message": e} for e in errors], "warnings": []},
                         400, headers)


def info(call: Call, repo: Repo, revision: str = DEFAULT_BRANCH) -> Response:
    resolved = call.store.resolve(repo.type, repo.id, revision)
    tree = resolved.commit["tree"]
    card = _card_data(call.store, tree)
    answer = {
        "_id": repo.id, "id": repo.id, "author": repo.id.split("/")[0], "sha": resolved.commit_id,
        "lastModified": resolved.commit["date"], "createdAt": repo.meta.get("createdAt"),
        "private": repo.meta.get("private", False), "gated": repo.meta.get("gated", False), "disabled": False,
        "downloads": 0, "likes": 0, "tags": metadata.card_tags(repo.type, card, list(tree)), "cardData": card,
        "siblings": [_sibling(path, entry) for path, entry in sorted(tree.items())],
        "usedStorage": sum(e["size"] for e in tree.values()),
    }
    if repo.type == "space":
        answer.update(sdk=repo.meta.get("sdk"), runtime=spaces.runtime_of(call.store, repo.id, repo.meta))
    return json_response(answer)


def _card_data(store: Store, tree: dict) -> dict | None:
    entry = tree.get("README.md")
    if entry is None:
        return None
    return metadata.front_matter(store.blob_path(entry["sha256"]).read_text(encoding="utf-8", errors="replace"))


def _sibling(path: str, entry: dict) -> dict:
    item = {"rfilename": path, "size": entry["size"], "blobId": entry["sha1"]}
    if entry["lfs"]:
        item["lfs"] = {"sha256": entry["sha256"], "size": entry["size"],
                       "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
    return item
