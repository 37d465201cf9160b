"""Fault injection for reliability tests: answer matching requests with an error, a delay,
or a dropped connection, a given number of times.

Rules come from `POST /_local/faults` as `{"rules": [{"method": "PUT", "path": "regex",
"action": "status"|"delay"|"drop", "status": 503, "seconds": 1.5, "times": 2}]}`;
`GET /_local/faults` lists what is left, `DELETE /_local/faults` clears them. `times` absent
means every matching request. Faults apply before anything else, the token check included.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from offline.server.calls import Call, HttpError, error_response, field, finish, json_response, raw_path

ACTIONS = ("status", "delay", "drop")
logger = logging.getLogger("offline.server")


@dataclass
class Rule:
    action: str
    path: re.Pattern
    method: str | None = None
    status: int = 503
    seconds: float = 0.0
    times: int | None = None

    @classmethod
    def from_json(cls, raw: dict) -> "Rule":
        if raw.get("action") not in ACTIONS:
            raise ValueError(f"fault action must be one of {ACTIONS}, got {raw.get('action')!r}")
        return cls(
            action=raw["action"],
            path=re.compile(raw.get("path", ".*")),
            method=raw["method"].upper() if raw.get("method") else None,
            status=int(raw.get("status", 503)),
            seconds=float(raw.get("seconds", 0.0)),
            times=int(raw["times"]) if raw.get("times") is not None else None,
        )

    def matches(self, method: str, path: str) -> bool:
        return (self.method in (None, method)) and self.path.search(path) is not None


class Faults:
    """The active rules; thread-safe, first matching rule wins and uses up one of its `times`."""

    def __init__(self):
        self._rules: list[Rule] = []
        self._lock = threading.Lock()

    def set(self, raw_rules: list[dict]) -> None:
        rules = [Rule.from_json(raw) for raw in raw_rules]
        with self._lock:
            self._rules = rules

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def describe(self) -> list[dict]:
        """The rules still active, as JSON (what is left of each one's `times`)."""
        with self._lock:
            return [{"action": r.action, "method": r.method, "path": r.path.pattern, "times": r.times}
                    for r in self._rules]

    def take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return None


class FaultInjection:
    """ASGI middleware answering requests that match a rule as the rule says."""

    def __init__(self, app: ASGIApp, faults: Faults):
        self.app, self.faults = app, faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = raw_path(scope) if scope["type"] == "http" else ""
        rule = self.faults.take(scope["method"], path) if path and not path.startswith("/_local/faults") else None
        if rule is None:
            return await self.app(scope, receive, send)
        logger.info("%s %s fault: %s", scope["method"], path, rule.action)
        if rule.action == "delay":
            await anyio.sleep(rule.seconds)  # this request only: others are served meanwhile
            return await self.app(scope, receive, send)
        if rule.action == "drop":
            return await _drop_connection(receive)
        response = error_response(HttpError(rule.status, f"injected fault {rule.status}"))
        await (await finish(Request(scope, receive), response, body_read=False))(scope, receive, send)


async def _drop_connection(receive: Receive) -> None:
    """Close the connection without an answer.

    ASGI has no message for this; uvicorn's `receive` is a method of its request cycle, which holds
    the connection's transport. Once uvicorn has seen the connection go, it sends nothing for us.
    """
    receive.__self__.transport.close()
    while (await receive())["type"] != "http.disconnect":
        pass


# ---- /_local/faults: the rules, set by a write token ----------------------------------------
def _rules(call: Call) -> Faults:
    if call.identity is None or not call.identity.can_write:
        raise HttpError(403, "fault injection needs a write token")
    return call.hub.faults


def describe_rules(call: Call) -> Response:
    return json_response({"rules": _rules(call).describe()})


def set_rules(call: Call) -> Response:
    faults = _rules(call)
    try:
        faults.set(field(call.json(), "rules", list, required=False) or [])
    except (ValueError, re.error, KeyError, TypeError, AttributeError) as exc:
        raise HttpError(400, f"bad fault rules: {exc}")
    return json_response({})


def clear_rules(call: Call) -> Response:
    _rules(call).clear()
    return json_response({})
