"""The local Hub server's HTTP application: the Hub's API paths, routed by Starlette onto one module per resource.

Routes match the raw (still percent-encoded) path, so a revision sent as `exp%2Flr-1e-4` stays one
segment; handlers get each path parameter decoded. A route's access (read, download, write) is
checked before its handler reads a byte of the body. Every error carries `X-Error-Code` where the
real Hub sends one, `X-Error-Message`, and a JSON `{"error"}` body, because huggingface_hub turns
those into RepositoryNotFoundError, RevisionNotFoundError, ...
"""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from offline.server import faults, files, pages, refs, repos, spaces
from offline.server.calls import PREFIXES, Call, HttpError, Hub, error_response, finish, raw_path
from offline.server.faults import FaultInjection, Faults
from offline.server.storage import Store, StoreError

logger = logging.getLogger("offline.server")

PLURALS = {"model": "models", "dataset": "datasets", "space": "spaces"}

# (method, path under /api/{models|datasets|spaces}/{namespace}/{name}, handler, access)
REPO_API = [
    ("GET", "", repos.info, "read"),
    ("GET", "/revision/{revision:path}", repos.info, "read"),
    ("PUT", "/settings", repos.settings, "write"),
    ("POST", "/user-access-request/grant", repos.grant_access, "write"),
    ("GET", "/refs", refs.list_refs, "read"),
    ("POST", "/branch/{revision:path}", refs.create_branch, "write"),
    ("DELETE", "/branch/{revision:path}", refs.delete_branch, "write"),
    ("POST", "/tag/{revision:path}", refs.create_tag, "write"),
    ("DELETE", "/tag/{revision:path}", refs.delete_tag, "write"),
    ("GET", "/commits/{revision:path}", refs.commits, "read"),
    ("POST", "/commit/{revision:path}", refs.commit, "write"),
    ("GET", "/tree/{location:path}", files.tree, "read"),
    ("POST", "/paths-info/{revision:path}", files.paths_info, "read"),
    ("POST", "/preupload/{revision:path}", files.preupload, "write"),
]
SPACE_API = [
    ("GET", "/variables", spaces.variables, "read"),
    ("POST", "/variables", spaces.set_variable, "write"),
    ("DELETE", "/variables", spaces.delete_variable, "write"),
    ("POST", "/secrets", spaces.set_secret, "write"),
    ("DELETE", "/secrets", spaces.delete_secret, "write"),
    ("POST", "/hardware", spaces.hardware, "write"),
    ("POST", "/sleeptime", spaces.sleeptime, "write"),
    ("GET", "/runtime", spaces.runtime, "read"),
]
# (method, path after /[datasets/|spaces/]{namespace}/{name}, handler, access): git-lfs, downloads, pages
REPO_FILES = [
    ("POST", ".git/info/lfs/objects/batch", files.lfs_batch, "write"),
    ("GET", "/resolve/{location:path}", files.resolve, "download"),  # and HEAD
    ("GET", "/blob/{location:path}", pages.blob, "read"),  # the handler checks downloads but for the card
]
ACCOUNT = [
    ("GET", "/api/whoami-v2", repos.whoami),
    ("POST", "/api/repos/create", repos.create),
    ("DELETE", "/api/repos/delete", repos.delete),
    ("POST", "/api/validate-yaml", repos.validate_yaml),
    ("PUT", "/_local/lfs/{ticket}", files.lfs_upload),
]
FAULT_RULES = [
    ("GET", "/_local/faults", faults.describe_rules),
    ("POST", "/_local/faults", faults.set_rules),
    ("DELETE", "/_local/faults", faults.clear_rules),
]


def create_app(data_dir: Path, with_faults: bool = False) -> Starlette:
    """The server for the repos under `data_dir`; `with_faults` adds fault injection (reliability tests only)."""
    hub = Hub(data_dir, Store(data_dir), Faults() if with_faults else None)
    routes = [Route(path, endpoint(handler), methods=[method])
              for method, path, handler in ACCOUNT + (FAULT_RULES if with_faults else [])]
    for repo_type, plural in PLURALS.items():
        api = REPO_API + (SPACE_API if repo_type == "space" else [])
        routes += [Route(f"/api/{plural}/{{namespace}}/{{name}}{path}", endpoint(handler, repo_type, access),
                       methods=[method]) for method, path, handler, access in api]
    for repo_type in ("dataset", "space", "model"):  # models last: their paths have no prefix
        routes += [Route(f"/{PREFIXES[repo_type]}{{namespace}}/{{name}}{path}", endpoint(handler, repo_type, access),
                         methods=[method]) for method, path, handler, access in REPO_FILES]
    middleware = [Middleware(RequestLog)]
    if with_faults:
        middleware.append(Middleware(FaultInjection, faults=hub.faults))
    middleware.append(Middleware(RawPathRouting))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: not_routed})
    app.router.redirect_slashes = False  # the clients do not follow redirects for API calls
    app.state.hub = hub
    return app


def endpoint(handler, repo_type: str | None = None, access: str | None = None):
    """The Starlette endpoint running `handler(call, [repo,] **path parameters)` on the thread pool.

    For a repo route, `repo` is the repository `access` allows the caller to reach; the token and
    that access are checked before the handler reads any of the body. What the handler left of the
    body is drained before the answer goes out.
    """
    async def run(request: Request) -> Response:
        call = Call(request, request.app.state.hub)

        def handle() -> Response:
            call.identify()
            params = decoded(request.path_params)
            if repo_type is None:
                return handler(call, **params)
            repo = call.repo(repo_type, f"{params.pop('namespace')}/{params.pop('name')}", access)
            return handler(call, repo, **params)

        try:
            response = await run_in_threadpool(handle)
        except ClientDisconnect:
            return Response(status_code=400)  # the client left mid-body: nobody reads this
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer in the Hub's shape
            response = error_response(as_http_error(exc, request))
        return await finish(request, response, call.body_read)

    return run


def decoded(params: dict[str, str]) -> dict:
    """Path parameters as the handlers take them, decoded; `location` (a revision, then a file path)
    as its segments, so that a revision sent as one encoded segment stays one."""
    return {key: [unquote(s) for s in value.strip("/").split("/")] if key == "location" else unquote(value)
            for key, value in params.items()}


def as_http_error(exc: Exception, request: Request) -> HttpError:
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, StoreError):
        return HttpError(exc.status, str(exc), exc.code)
    if isinstance(exc, PermissionError):  # an unknown token
        return HttpError(401, str(exc))
    if isinstance(exc, (KeyError, ValueError, TypeError)):  # a malformed request body or query
        return HttpError(400, f"malformed request: {exc.__class__.__name__} {exc}")
    logger.exception("%s %s failed", request.method, raw_path(request.scope))
    return HttpError(500, "internal error in the local Hub server")


async def not_routed(request: Request, exc: HTTPException) -> Response:
    """404 or 405 from the router, in the Hub's error shape."""
    response = error_response(HttpError(exc.status_code, exc.detail, headers=dict(exc.headers or {})))
    return await finish(request, response, body_read=False)


class RawPathRouting:
    """Routes match the path as sent: a `%2F` inside a revision must not split it into two segments."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "path": raw_path(scope)}
        await self.app(scope, receive, send)


class RequestLog:
    """One INFO line per answer: method, raw path and status; never headers (the token) or bodies."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def logged(message) -> None:
            if message["type"] == "http.response.start":
                logger.info("%s %s %s", scope["method"], raw_path(scope), message["status"])
            await send(message)

        await self.app(scope, receive, logged)
