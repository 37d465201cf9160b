"""Spaces: their settings are recorded (variables, secret names, hardware, sleep time); nothing is built or run."""
from __future__ import annotations

from starlette.responses import Response

from offline.server.calls import Call, Repo, field, json_response
from offline.server.storage import DEFAULT_BRANCH, Store, now_iso

APP_FILES = ("app.py", "Dockerfile", "index.html")


def new_space_meta(body: dict) -> dict:
    """A new Space's settings from the create-repo body (sdk, hardware, variables, secret names)."""
    return {"sdk": body.get("sdk"),
            "hardware": {"current": "cpu-basic", "requested": body.get("hardware") or "cpu-basic"},
            "gcTimeout": body.get("sleepTimeSeconds"),
            "variables": {var["key"]: _variable(var) for var in body.get("variables") or []},
            "secrets": sorted({secret["key"] for secret in body.get("secrets") or []})}


def _variable(body: dict) -> dict:
    return {"value": str(body.get("value", "")), "description": body.get("description"), "updatedAt": now_iso()}


def runtime_of(store: Store, repo_id: str, meta: dict) -> dict:
    """The recorded runtime; the stage says whether an app file is there, nothing is run."""
    tree = store.resolve("space", repo_id, DEFAULT_BRANCH).commit["tree"]
    has_app = any(path in tree for path in APP_FILES) or meta.get("sdk") == "static"
    return {"stage": "RUNNING" if has_app else "NO_APP_FILE", "hardware": meta.get("hardware", {}),
            "gcTimeout": meta.get("gcTimeout"), "storage": None, "devMode": False,
            "variables": meta.get("variables", {}), "secrets": meta.get("secrets", [])}


def runtime(call: Call, repo: Repo) -> Response:
    return json_response(runtime_of(call.store, repo.id, repo.meta))


def variables(call: Call, repo: Repo) -> Response:
    return json_response(repo.meta.get("variables", {}))


def set_variable(call: Call, repo: Repo) -> Response:
    body = call.json()
    key = field(body, "key", str)

    def change(meta: dict) -> None:
        meta["variables"][key] = _variable(body)

    return json_response(call.store.update_meta(repo.type, repo.id, change)["variables"])


def delete_variable(call: Call, repo: Repo) -> Response:
    key = field(call.json(), "key", str)

    def change(meta: dict) -> None:
        meta["variables"].pop(key, None)

    return json_response(call.store.update_meta(repo.type, repo.id, change)["variables"])


def set_secret(call: Call, repo: Repo) -> Response:
    return _secret_names(call, repo, add=True)


def delete_secret(call: Call, repo: Repo) -> Response:
    return _secret_names(call, repo, add=False)


def _secret_names(call: Call, repo: Repo, add: bool) -> Response:
    key = field(call.json(), "key", str)

    def change(meta: dict) -> None:  # only the name is kept: the value is never written to disk
        names = set(meta.get("secrets", []))
        names.add(key) if add else names.discard(key)
        meta["secrets"] = sorted(names)

    call.store.update_meta(repo.type, repo.id, change)
    return json_response({})


def hardware(call: Call, repo: Repo) -> Response:
    body = call.json()
    flavor = field(body, "flavor", str)
    sleep = field(body, "sleepTimeSeconds", int, required=False)

    def change(meta: dict) -> None:
        meta["hardware"] = {"current": flavor, "requested": flavor}
        if sleep is not None:
            meta["gcTimeout"] = sleep

    return json_response(runtime_of(call.store, repo.id, call.store.update_meta(repo.type, repo.id, change)))


def sleeptime(call: Call, repo: Repo) -> Response:
    seconds = field(call.json(), "seconds", int, required=False)
    meta = call.store.update_meta(repo.type, repo.id, lambda m: m.update(gcTimeout=seconds))
    return json_response(runtime_of(call.store, repo.id, meta))
