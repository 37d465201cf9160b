"""Hub and network failures as one line: which repo@revision, what happened, and the fix.

Every command that talks to the Hub (prepare's Hub sources, train's base model, evaluate's
MedQA and base model, push, deploy-space, verification, the demo) wraps its Hub calls in
`hub_errors(repo_id, revision, action)`; failures it recognises become a `HubError` (exit 4),
anything else keeps its traceback, because it is a bug.

huggingface_hub 2.x raises its own errors for HTTP answers (`HfHubHTTPError` and subclasses)
but lets the HTTP library's errors through for the network (`httpx2.ConnectError`, ...), often
wrapped (`LocalEntryNotFoundError`, transformers' `OSError`, a `RuntimeError` around a failed
LFS upload). So the cause is found by walking the whole exception chain, not by the outer type.

Self-contained on purpose (no imports from the rest of the project but `common.errors`): it
is shared kernel code.
"""
from __future__ import annotations

import contextlib
import errno
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from common.errors import HubError

T = TypeVar("T")

REDACTED = "hf_***"
# Anything that looks like a Hub token is scrubbed from a message, not only the one in use.
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9_]{8,}")
# Words the OS (glibc, macOS, Windows) uses when a host name cannot be resolved.
NAME_RESOLUTION_WORDS = ("name or service not known", "nodename nor servname", "temporary failure in name resolution",
                         "getaddrinfo failed", "no address associated with hostname", "name resolution")
NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
# A commit whose parent moved (412) or that raced another one in progress (409).
CONFLICT_STATUSES = (409, 412)
CONFLICT_RETRIES = 5

RETRY_LATER = "it is usually temporary: run the command again in a few minutes"
CHECK_NETWORK = ("check the network and HF_ENDPOINT, or work offline (HF_HUB_OFFLINE=1) from a copy "
                 "downloaded earlier")


# ---- the mapping -------------------------------------------------------------------------------

def explain(exc: BaseException, repo_id: str, revision: str | None, missing: str | None = None
            ) -> tuple[str, str] | None:
    """(what happened, the fix) for a Hub or network failure, or None when `exc` is not one."""
    chain = list(exception_chain(exc))
    return (_http_answer(chain, repo_id, revision, missing) or _local_state(chain) or _network(chain)
            or _not_cached(chain))


def hub_error(exc: BaseException, repo_id: str, revision: str | None = None, action: str = "cannot reach",
              token: str | None = None, missing: str | None = None, target: str | None = None) -> HubError:
    """The one-line HubError for `exc`: `<action> <repo>@<revision>: <what happened>; <fix>`.

    `target` replaces `<repo>@<revision>` for a call about several repositories (the token check).
    """
    explained = explain(exc, repo_id, revision, missing)
    if explained is None:  # not recognised: say what it was rather than guess
        explained = (f"{type(exc).__name__}: {first_line(exc)}", "check the repository id, revision and files")
    happened, fix = explained
    return HubError(redact(f"{action} {target or where(repo_id, revision)}: {happened}; {fix}", token))


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None, action: str = "cannot reach", token: str | None = None,
               missing: str | None = None, target: str | None = None,
               also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn the Hub and network failures of the block into one-line HubErrors; anything else propagates.

    `missing` replaces "repository not found ..." where the caller knows better (a source that may
    also have been meant as a local file). `also`: exception types that, unrecognised, still mean the
    download failed (datasets and snapshot_download raise many kinds of OSError for "cannot get the files").
    """
    bound_timeouts()
    try:
        yield
    except HubError:
        raise
    except Exception as exc:
        if explain(exc, repo_id, revision, missing) is None and not isinstance(exc, also):
            raise
        raise hub_error(exc, repo_id, revision, action, token, missing, target) from None


def where(repo_id: str, revision: str | None) -> str:
    # No revision means the repository's default branch, which on the Hub is main.
    return f"{repo_id}@{revision or 'main'}"


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then what caused it (`raise ... from`) or was being handled when it was raised, as a
    traceback would show them (`from None` ends the chain)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__


def _http_answer(chain, repo_id: str, revision: str | None, missing: str | None) -> tuple[str, str] | None:
    """The Hub answered, with an error status."""
    from huggingface_hub.errors import (
        DisabledRepoError, GatedRepoError, HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for exc in chain:
        if isinstance(exc, GatedRepoError):
            return ("gated repository, and this token has not been granted access",
                    f"accept its terms on its Hub page ({repo_id}), then log in (`hf auth login` or HF_TOKEN)")
        if isinstance(exc, RevisionNotFoundError):
            return (f"revision '{revision or 'main'}' not found",
                    "check the branch, tag or commit (`hf repo-files` or the repository page lists them)")
        if isinstance(exc, RemoteEntryNotFoundError):
            name = str(getattr(exc.response, "url", "") or "").rsplit("/", 1)[-1] or "a file"
            return f"{name} not found at this revision", "check the repository holds that file at this revision"
        if isinstance(exc, DisabledRepoError):
            return "the repository has been disabled by its owner", "use another repository"
        if isinstance(exc, RepositoryNotFoundError):
            return (missing or "repository not found on the Hub (or no read access with this token)",
                    "check the id; for a private repository log in (`hf auth login`) or set HF_TOKEN")
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            return _status(exc.response.status_code, _server_message(exc))
    return None


def _status(code: int, message: str) -> tuple[str, str]:
    said = f": {message}" if message else ""
    if code == 401:
        if _has_token():
            return (f"the Hub token is invalid or expired (HTTP 401{said})",
                    "log in again (`hf auth login`) or set HF_TOKEN to a valid token")
        return f"the Hub asks for a token and none is set (HTTP 401{said})", "run `hf auth login` or set HF_TOKEN"
    if code == 403:
        return (f"the token may not do this (HTTP 403{said}): a read-only token, or no write access here",
                "use a token with write access to this namespace (huggingface.co/settings/tokens)")
    if code in CONFLICT_STATUSES:
        return (f"another commit changed the branch at the same time (HTTP {code})",
                "run the command again; it re-reads the branch")
    if code == 429:
        return (f"rate limited by the Hub (HTTP 429{said})",
                "wait a few minutes and run the command again; logged-in users get higher limits")
    if code == 408:
        return f"the Hub timed out the request (HTTP 408{said})", RETRY_LATER
    if code >= 500:
        return f"server error HTTP {code} from the Hub, after retries{said}", RETRY_LATER
    return f"the Hub refused the request (HTTP {code}{said})", "check the repository id, revision and token"


def _local_state(chain) -> tuple[str, str] | None:
    """No token, or offline mode: the request was never sent."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, LocalTokenNotFoundError, OfflineModeIsEnabled

    for exc in chain:
        if isinstance(exc, LocalTokenNotFoundError):
            return "no Hub token", "set HF_TOKEN or run `hf auth login`"
        if isinstance(exc, OfflineModeIsEnabled) or (
                constants.is_offline_mode() and isinstance(exc, (LocalEntryNotFoundError, _datasets_not_found()))):
            return ("offline mode (HF_HUB_OFFLINE=1) and no copy in the local cache",
                    "unset HF_HUB_OFFLINE (publishing always needs the Hub), or run once online to cache a download")
    return None


def _network(chain) -> tuple[str, str] | None:
    """The request did not get an answer: name resolution, refused, timed out, dropped."""
    timeouts, dropped, network = _network_error_types()
    endpoint = _endpoint(chain)
    for exc in chain:  # the precise causes first: an outer ConnectError only repeats them
        said = str(exc).lower() if isinstance(exc, (OSError, *network)) else ""  # some stacks keep only the text
        if isinstance(exc, socket.gaierror) or any(words in said for words in NAME_RESOLUTION_WORDS):
            return f"name resolution failed for the Hub at {endpoint} (no network or DNS?)", CHECK_NETWORK
        if isinstance(exc, ConnectionRefusedError) or "connection refused" in said:
            return f"connection refused by the Hub at {endpoint}", CHECK_NETWORK
    for exc in chain:
        if isinstance(exc, timeouts):
            return (f"timed out waiting for the Hub at {endpoint}",
                    f"{RETRY_LATER} (a slow network: raise HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT)")
        if isinstance(exc, dropped):
            return f"the Hub at {endpoint} dropped the connection", RETRY_LATER
        if isinstance(exc, OSError) and exc.errno in NETWORK_ERRNOS:
            return f"the Hub at {endpoint} is unreachable ({exc.strerror})", CHECK_NETWORK
    for exc in chain:
        if isinstance(exc, network):
            return f"the Hub at {endpoint} is unreachable ({type(exc).__name__}: {first_line(exc)})", CHECK_NETWORK
    return None


def _not_cached(chain) -> tuple[str, str] | None:
    """huggingface_hub could not reach the Hub for a reason it kept to itself, and has no cached copy."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RevisionResolutionError

    for exc in chain:
        if isinstance(exc, (LocalEntryNotFoundError, RevisionResolutionError)):
            return f"the Hub at {_endpoint(chain)} could not be reached and there is no cached copy", CHECK_NETWORK
    return None


def _network_error_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(timeouts, dropped connections, any other network failure) of every HTTP stack in use here."""
    import http.client

    import httpcore2
    import httpx2

    timeouts: list[type] = [TimeoutError, httpx2.TimeoutException, httpcore2.TimeoutException]
    dropped: list[type] = [httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError, httpcore2.RemoteProtocolError,
                           httpcore2.ReadError, httpcore2.WriteError, ConnectionResetError, ConnectionAbortedError,
                           BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead]
    network: list[type] = [httpx2.TransportError, httpcore2.NetworkError, httpcore2.ProxyError, ConnectionError]
    for module, timeout, drop, other in (("requests.exceptions", "Timeout", "ChunkedEncodingError", "ConnectionError"),
                                         ("urllib3.exceptions", "TimeoutError", "ProtocolError", "HTTPError"),
                                         ("httpx", "TimeoutException", "RemoteProtocolError", "TransportError")):
        loaded = _optional(module)  # other clients (transformers' extras, gradio) bring their own stacks
        if loaded is not None:
            timeouts.append(getattr(loaded, timeout))
            dropped.append(getattr(loaded, drop))
            network.append(getattr(loaded, other))
    return tuple(timeouts), tuple(dropped), tuple(network)


def _optional(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _datasets_not_found() -> tuple[type, ...]:
    datasets_exceptions = _optional("datasets.exceptions")
    return (datasets_exceptions.DatasetNotFoundError,) if datasets_exceptions else ()


def _endpoint(chain) -> str:
    """scheme://host[:port] the failed request went to (the configured endpoint if unknown)."""
    for exc in chain:
        try:
            url = exc.request.url  # httpx2 errors; raises RuntimeError when the request is unknown
        except (AttributeError, RuntimeError):
            continue
        return f"{url.scheme}://{url.netloc.decode() if isinstance(url.netloc, bytes) else url.netloc}"
    from huggingface_hub import constants

    return constants.ENDPOINT


def _server_message(exc) -> str:
    lines = (getattr(exc, "server_message", None) or "").strip().splitlines()
    return lines[0][:200] if lines else ""


def _has_token() -> bool:
    from huggingface_hub import get_token

    return bool(get_token())


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def redact(text: str, token: str | None = None) -> str:
    if token:
        text = text.replace(token, REDACTED)
    return TOKEN_PATTERN.sub(REDACTED, text)


# ---- retrying a commit that raced another one ------------------------------------------------------

def is_commit_conflict(exc: BaseException) -> bool:
    """A 412 (the parent commit moved) or 409 (another commit in progress) anywhere in the chain."""
    import httpx2

    for link in exception_chain(exc):
        response = getattr(link, "response", None)
        if isinstance(link, httpx2.HTTPStatusError) or response is not None:
            if getattr(response, "status_code", None) in CONFLICT_STATUSES:
                return True
    return False


def retry_commit_conflicts(commit: Callable[[], T], attempts: int = CONFLICT_RETRIES, wait_s: float = 1.0) -> T:
    """Run `commit` (which must re-read the branch head itself) again while it loses a race to another commit."""
    for attempt in range(1, attempts + 1):
        try:
            return commit()
        except Exception as exc:
            if attempt == attempts or not is_commit_conflict(exc):
                raise
        time.sleep(wait_s * attempt)
    raise AssertionError("unreachable")


# ---- bounded waits -------------------------------------------------------------------------------

_BOUNDED = False
# A call without its own timeout (huggingface_hub's client has none, and HfApi passes None) gets
# these, so a Hub that accepts and never answers costs a minute, not forever.
READ_TIMEOUT_FACTOR = 6  # read/write waits: 6 x HF_HUB_DOWNLOAD_TIMEOUT (60 s by default)


def bound_timeouts() -> None:
    """Give every huggingface_hub request a finite connect and read timeout (idempotent)."""
    global _BOUNDED
    if _BOUNDED:
        return
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    def factory():
        client = _http.default_client_factory()
        client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], _fill_timeouts]}
        return client

    set_client_factory(factory)
    _BOUNDED = True


def _fill_timeouts(request) -> None:
    from huggingface_hub import constants

    read = float(constants.HF_HUB_DOWNLOAD_TIMEOUT) * READ_TIMEOUT_FACTOR
    defaults = {"connect": float(constants.HF_HUB_ETAG_TIMEOUT), "read": read, "write": read, "pool": read}
    given = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {key: given.get(key) if given.get(key) is not None else value
                                     for key, value in defaults.items()}
