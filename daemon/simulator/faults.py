"""Fault injection, switchable at run time: from Python (`sim.faults.add(...)`) or over HTTP
(`/_sim/faults`, outside `/api`).

Each rule has a kind, an optional request filter (method, a substring of the path), and a trigger:
a probability per matching request (`rate`, drawn from an RNG seeded by the simulator's seed),
a window of *simulated* time (`start`/`end`, epoch seconds of the simulator's clock), and/or a
budget (`count`: fire at most this many times). Kinds and what a vastpy client sees:

- `latency`: waits `seconds` (real, default 0.5) before answering normally → vastpy is just slow.
- `error`: answers `status` (default 503) with a JSON body → `RESTFailure(status=503)`.
- `rate_limit`: 429 with `Retry-After: <retry_after>` and DRF's "Request was throttled" detail.
  → `RESTFailure(status=429)`; but for GET, urllib3 inside vastpy first honours `Retry-After`
  itself (sleeps, retries 3 times), so a GET sees the 429 only if all 4 attempts are throttled.
- `timeout`: holds the request `seconds` (real, default 30; released at once when the server
  stops), then drops the connection → with a client read timeout urllib3 raises
  `ReadTimeoutError` (GET: `MaxRetryError` after its retries).
- `drop`: closes the connection without an answer → urllib3 `ProtocolError` (GET:
  `MaxRetryError` after urllib3's own 3 retries).
- `malformed`: 200 with a cut-off JSON body (`application/json`) → `json.JSONDecodeError`.
- `truncated_page`: a list answer loses its second half (in a paged answer `count` and `next`
  stay as they were) → no exception: a careful client notices `len(results) < count`.
- `token_expired`: 401 `{"detail": "Token has expired."}` → `RESTFailure(status=401)`.
- `applied_answer_lost`: the request is carried out (a PATCH applied), then the connection is
  dropped without an answer (after holding it `seconds`, real, default 0) → the client sees
  `ProtocolError`/a timeout although VMS did the write: the outcome is unknown to it.
- `delayed_apply`: a write (PATCH/PUT of `quotas/{id}`) is *not* applied now: the connection is
  held `seconds` (real, default 0) and dropped, and the write is applied `apply_after` simulated
  seconds later (default 300) — a request that lands after the client gave up, or after it
  restarted. Other requests are just dropped.
- `rewrite`: a 200 answer has fields of the objects whose `name` or `path` equals `match` (every
  object when `match` is not given) replaced by `values` (e.g. `{"used_capacity": 99e12}`):
  a glitching VMS, a proxy rewriting records. Applies to lists, pages and single objects.
- `empty`: a list answer comes back empty (`[]`, or a page with `count` 0) → no exception.

`latency` combines with the others; of the remaining kinds the first matching rule wins.
`rewrite` and `truncated_page` change the answer of a request that is otherwise served.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

FAULT_KINDS = ("latency", "error", "rate_limit", "timeout", "drop", "malformed", "truncated_page",
               "token_expired", "applied_answer_lost", "delayed_apply", "rewrite", "empty")
ANSWER_CHANGING_KINDS = ("truncated_page", "rewrite", "empty")
"""Kinds that let the request be served and change its answer."""


@dataclass
class FaultRule:
    """One fault. `seconds` is real time (latency, timeout hold); `start`/`end` simulated time."""

    id: int
    kind: str
    rate: float = 1.0
    count: int | None = None
    start: float | None = None
    end: float | None = None
    path: str | None = None
    method: str | None = None
    status: int = 503
    retry_after: int = 1
    seconds: float | None = None
    apply_after: float = 300.0
    match: str | None = None
    values: dict[str, Any] | None = None
    fired: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultError(ValueError):
    """A fault rule with a bad field (the admin endpoint answers 400 naming it)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_FIELDS = {"kind", "rate", "count", "start", "end", "path", "method", "status", "retry_after", "seconds",
           "apply_after", "match", "values"}


class Faults:
    """The simulator's fault rules. Not thread-safe: used from the server's event loop."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed ^ 0x5EED)
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self.fired_total = 0

    @property
    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def add(self, kind: str, *, rate: float = 1.0, count: int | None = None, start: float | None = None,
            end: float | None = None, path: str | None = None, method: str | None = None, status: int = 503,
            retry_after: int = 1, seconds: float | None = None, apply_after: float = 300.0,
            match: str | None = None, values: dict[str, Any] | None = None) -> FaultRule:
        """Add a rule; returns it (its `id` removes it, its `fired` counts how often it fired)."""
        if kind not in FAULT_KINDS:
            raise FaultError("kind", f"must be one of {', '.join(FAULT_KINDS)}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise FaultError("rate", "must be a number in [0, 1]")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise FaultError("count", "must be a non-negative integer")
        if kind == "error" and (isinstance(status, bool) or not isinstance(status, int)
                                or not 500 <= status <= 599):
            raise FaultError("status", "must be a 5xx status")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise FaultError("retry_after", "must be a non-negative integer (seconds)")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                                    or seconds < 0):
            raise FaultError("seconds", "must be a non-negative number")
        for name, value in (("start", start), ("end", end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise FaultError(name, "must be epoch seconds of the simulator clock")
        for name, text in (("path", path), ("method", method), ("match", match)):
            if text is not None and not isinstance(text, str):
                raise FaultError(name, "must be a string")
        if isinstance(apply_after, bool) or not isinstance(apply_after, int | float) or not apply_after >= 0 \
                or apply_after == float("inf"):
            raise FaultError("apply_after", "must be a finite non-negative number (simulated seconds)")
        if values is not None and (not isinstance(values, dict) or not all(isinstance(k, str) for k in values)):
            raise FaultError("values", "must be a table of field names to values")
        if kind == "rewrite" and not values:
            raise FaultError("values", "a rewrite needs the fields to replace")
        rule = FaultRule(self._next_id, kind, float(rate), count, start, end, path,
                         method.upper() if method else None, status, retry_after,
                         None if seconds is None else float(seconds), float(apply_after), match,
                         None if values is None else dict(values))
        self._next_id += 1
        self._rules.append(rule)
        return rule

    def add_from_json(self, body: object) -> FaultRule:
        """A rule from the admin endpoint's JSON body (`{"kind": "error", "rate": 0.5, ...}`)."""
        if not isinstance(body, dict):
            raise FaultError("body", "must be a JSON object")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise FaultError(unknown[0], "unknown field")
        if "kind" not in body:
            raise FaultError("kind", "is required")
        return self.add(**body)

    def remove(self, rule_id: int) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()

    def pick(self, method: str, path: str, now: float) -> tuple[float, FaultRule | None]:
        """For one request: (latency seconds to add, the fault rule to apply or None)."""
        latency = 0.0
        chosen: FaultRule | None = None
        for rule in self._rules:
            if rule.count is not None and rule.fired >= rule.count:
                continue
            if rule.method is not None and rule.method != method:
                continue
            if rule.path is not None and rule.path not in path:
                continue
            if rule.start is not None and now < rule.start:
                continue
            if rule.end is not None and now >= rule.end:
                continue
            if rule.kind != "latency" and chosen is not None:
                continue
            if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                continue
            rule.fired += 1
            self.fired_total += 1
            if rule.kind == "latency":
                latency += 0.5 if rule.seconds is None else rule.seconds
            else:
                chosen = rule
        return latency, chosen
