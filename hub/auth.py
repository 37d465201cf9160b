"""The Hub token: found, checked, and kept out of every message.

The token comes only from `HF_TOKEN` or the huggingface_hub login cache (`get_token()`); it is
never read from a config, never printed, and scrubbed from any error text that leaves this
package. `preflight` fails in seconds, before hours of training end in a push that cannot work.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from common.errors import HubError
from common.hub_errors import hub_errors, where

if TYPE_CHECKING:
    from hub.config import HubConfig


def current_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError(
            "no Hub token: set HF_TOKEN or run `hf auth login` (a token with write access is needed to publish)"
        )
    return token


def whoami(token: str, target: str = "the Hub") -> dict:
    """The token's identity; `target` (the repositories about to be written) names the failure."""
    from huggingface_hub import HfApi

    with hub_errors(target, action="cannot check the Hub token for", token=token, target=target):
        return HfApi().whoami(token=token)


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
    repo_ids = list(repo_ids)
    identity = whoami(current_token(), ", ".join(where(r, None) for r in repo_ids) or "the Hub")
    check_writable(identity, repo_ids)
    return identity.get("name") or "unknown"


def preflight_config(config: HubConfig, kinds: Iterable[str] = ("dataset", "adapter")) -> dict[str, str]:
    """`preflight` for the repositories of a hub.yaml (namespace None: the token's user); returns their ids.

    `hub push --check` (run by `make train push` before any work) calls this, so a bad token fails in seconds.
    """
    named = config.repo_ids(config.namespace or "<your user>")
    identity = whoami(current_token(), ", ".join(where(named[kind], None) for kind in kinds))
    ids = config.repo_ids(config.namespace or identity.get("name") or "unknown")
    check_writable(identity, [ids[kind] for kind in kinds])
    return ids
