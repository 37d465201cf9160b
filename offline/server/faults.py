"""Fault injection for reliability tests: answer matching requests with an error, a delay,
or a dropped connection, a given number of times.

Rules come from `POST /_local/faults` as `{"rules": [{"method": "PUT", "path": "regex",
"action": "status"|"delay"|"drop", "status": 503, "seconds": 1.5, "times": 2}]}`;
`GET /_local/faults` lists what is left, `DELETE /_local/faults` clears them. `times` absent
means every matching request.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

ACTIONS = ("status", "delay", "drop")


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
