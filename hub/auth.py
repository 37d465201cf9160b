"""The Hub token: found, checked, and kept out of every message.

The token comes only from `HF_TOKEN` or the huggingface_hub login cache (`get_token()`); it is
never read from a config, never printed, and scrubbed from any error text that leaves this
package. `preflight` fails in seconds, before hours of training end in a push that cannot work.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from training.errors import HubError

if TYPE_CHECKING:
    from hub.config import HubConfig

REDACTED = "hf_***"


def current_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError(
            "no Hub token: set HF_TOKEN or run `hf auth login` (a token with write access is needed to publish)"
        )
    return token


def redact(text: str, token: str | None) -> str:
    return text.replace(token, REDACTED) if token else text


@contextlib.contextmanager
def hub_errors(what: str, token: str | None = None) -> Iterator[None]:
    """Turn a huggingface_hub / network failure into a one-line HubError without the token."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        yield
    except RepositoryNotFoundError:
        raise HubError(f"{what}: repository not found (or no access with this token)") from None
    except RevisionNotFoundError:
        raise HubError(f"{what}: revision not found") from None
    except (HfHubHTTPError, LocalTokenNotFoundError, httpx2.HTTPError, ConnectionError) as exc:
        raise HubError(f"{what}: {_detail(exc, token)}") from None
    except RuntimeError as exc:  # huggingface_hub wraps a failed LFS upload: RuntimeError from the HTTP error
        if not isinstance(exc.__cause__, (HfHubHTTPError, httpx2.HTTPError, ConnectionError)):
            raise
        raise HubError(f"{what}: {redact(str(exc), token)} ({_detail(exc.__cause__, token)})") from None


def _detail(exc: BaseException, token: str | None) -> str:
    detail = getattr(exc, "server_message", None) or str(exc).strip() or exc.__class__.__name__
    return redact(detail.splitlines()[0], token)


def whoami(token: str) -> dict:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with hub_errors("cannot check the Hub token", token):
        try:
            return HfApi().whoami(token=token)
        except HfHubHTTPError as exc:
            if exc.response is not None and exc.response.status_code == 401:
                raise HubError("the Hub token is invalid or expired (from HF_TOKEN or the login cache)") from None
            raise


def writable_namespaces(identity: dict) -> set[str] | None:
    """Namespaces this token may write to; None when the Hub does not say (then the push decides)."""
    access = (identity.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    member_of = {identity.get("name")} | {org.get("name") for org in identity.get("orgs") or []}
    if role == "read":
        return set()
    if role == "fineGrained":
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        return {
            item.get("entity", {}).get("name")
            for item in scoped
            if "repo.write" in (item.get("permissions") or [])
        } & member_of
    if role is None:
        return None
    return member_of


def check_writable(identity: dict, repo_ids: Iterable[str]) -> None:
    user = identity.get("name") or "unknown"
    allowed = writable_namespaces(identity)
    for repo_id in repo_ids:
        namespace = repo_id.split("/", 1)[0]
        if allowed is not None and namespace not in allowed:
            kind = "read-only token" if not allowed else f"token cannot write to '{namespace}'"
            raise HubError(f"{kind} for user '{user}': {repo_id} needs a token with write access")


def preflight(repo_ids: Iterable[str] = ()) -> str:
    """Check the token can write every `namespace/name` in repo_ids; return the token's user name."""
    identity = whoami(current_token())
    check_writable(identity, repo_ids)
    return identity.get("name") or "unknown"


def preflight_config(config: HubConfig, kinds: Iterable[str] = ("dataset", "adapter")) -> dict[str, str]:
    """`preflight` for the repositories of a hub.yaml (namespace None: the token's user); returns their ids.

    `hub push --check` (run by `make train push` before any work) calls this, so a bad token fails in seconds.
    """
    identity = whoami(current_token())
    ids = config.repo_ids(config.namespace or identity.get("name") or "unknown")
    check_writable(identity, [ids[kind] for kind in kinds])
    return ids
