"""A small client of the quotapilot pipeline API, for pipeline code (Airflow tasks, batch scripts,
Kubernetes jobs). Importable without the daemon's dependencies: the sync `Client` is stdlib only;
`AsyncClient` imports aiohttp when first used.

    from quotapilot.daemon.pipeline_client import Client, Refused

    qp = Client("http://127.0.0.1:9187", token=open("/etc/quotapilot/write.token").read().strip())
    if not qp.preflight("/cosmos7/processed", 40 * 10**12, needed_for="6h").fits:
        qp.wait_for_room("/cosmos7/processed", 40 * 10**12, deadline_seconds=3600)   # or a `grow` answer
    with qp.reservation("/cosmos7/processed", 40 * 10**12, ttl="6h") as held:
        run_the_transformation()

Every call retries what is worth retrying — connection failures (an answer cut short is one), 429,
502, 503, 504 — with jittered exponential backoff, waiting at least `Retry-After`, within a deadline
(`RetryPolicy`, the daemon's one retry policy, stdlib only); everything else raises a typed error
at once (`BadRequest`, `Unauthorized`, `NotFound`, `Refused`). A reservation reuses
one idempotency key across its retries, so a retried POST never reserves twice.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from quotapilot.daemon.runtime.retry import RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_URL", "ApiError", "AsyncClient", "BadRequest", "Client", "ClientError", "ConnectionFailed",
    "DeadlineExceeded", "NotFound", "Preflight", "Refused", "Reservation", "RetryPolicy", "Unauthorized",
    "Unavailable", "error_for", "parse_retry_after",
]

DEFAULT_URL = "http://127.0.0.1:9187"
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


# ----------------------------------------------------------------------------------- errors
class ClientError(Exception):
    """Base of every error this client raises."""


class ConnectionFailed(ClientError):
    """The daemon could not be reached (after retries)."""


class DeadlineExceeded(ClientError):
    """The deadline passed before an answer (or before there was room). `last` is the last
    error or preflight answer seen."""

    def __init__(self, message: str, last: object = None) -> None:
        super().__init__(message)
        self.last = last


class ApiError(ClientError):
    """The daemon answered with an error status. `body` is its JSON answer."""

    def __init__(self, status: int, body: Mapping[str, Any], retry_after: float | None = None) -> None:
        error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
        self.status = status
        self.body = dict(body)
        self.code: str = str(error.get("code", "")) if error else ""
        self.field: str | None = error.get("field") if error else None
        self.message: str = str(error.get("message", "")) if error else str(body)[:200]
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {self.message or self.code}")


class BadRequest(ApiError):
    """400/413/422: the request is wrong (`field` names the culprit)."""


class Unauthorized(ApiError):
    """401/403: missing or wrong write token, or writes disabled on the daemon."""


class NotFound(ApiError):
    """404: unknown target or reservation."""


class Refused(ApiError):
    """409/507: a reservation was refused. `guard` says why, `earliest_at` when it could be
    granted (epoch seconds; None when a person must act: ceiling, cluster reserve)."""

    @property
    def guard(self) -> str | None:
        guard = self.body.get("guard")
        return str(guard) if guard is not None else None

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", self.message))

    @property
    def earliest_at(self) -> float | None:
        value = self.body.get("earliest_at")
        return float(value) if isinstance(value, int | float) else None


class Unavailable(ApiError):
    """429/5xx that outlasted the retries."""


def error_for(status: int, body: Mapping[str, Any], retry_after: float | None = None) -> ApiError:
    kind: type[ApiError]
    if status in (400, 413, 422):
        kind = BadRequest
    elif status in (401, 403):
        kind = Unauthorized
    elif status == 404:
        kind = NotFound
    elif status in (409, 507):
        kind = Refused
    elif status in RETRYABLE_STATUSES or status >= 500:
        kind = Unavailable
    else:
        kind = ApiError
    return kind(status, body, retry_after)


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Preflight:
    """The daemon's answer to a preflight: `fits` (over `needed_for`, after the forecast),
    `fits_now`, what it would do (`action`), and the whole JSON in `raw`."""

    fits: bool
    fits_now: bool
    action: Mapping[str, Any]
    earliest_fit_at: float | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def grows_on_reservation(self) -> bool:
        """It does not fit yet, but the daemon would grow the target for it now: a reservation is
        granted and grown for (a preflight alone is not demand, so nothing grows for it)."""
        return not self.fits and self.action.get("kind") == "grow"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Preflight:
        earliest = body.get("earliest_fit_at")
        return cls(bool(body.get("fits")), bool(body.get("fits_now")), body.get("action") or {},
                   float(earliest) if isinstance(earliest, int | float) else None, body)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted reservation."""

    id: str
    status: str
    expires_at: float | None
    idempotency_key: str
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Reservation:
        expires = body.get("expires_at")
        return cls(str(body["id"]), str(body.get("status", "")),
                   float(expires) if isinstance(expires, int | float) else None,
                   str(body.get("idempotency_key", "")), body)


# ----------------------------------------------------------------------------------- retries
# `RetryPolicy` and `parse_retry_after` are the daemon's one retry policy (stdlib only), re-exported
# here because pipelines configure their client with `Client(retry=RetryPolicy(...))`.


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Mapping[str, Any]
    retry_after: float | None


def _decode(raw: bytes) -> Mapping[str, Any]:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {"error": {"code": "not_json", "message": raw[:200].decode("utf-8", "replace")}}
    return body if isinstance(body, Mapping) else {"value": body}


def _target_path(target: str, action: str = "") -> str:
    return f"/api/v1/targets/{urllib.parse.quote(target, safe='')}{action}"


def _body_preflight(target: str, nbytes: int | str, inodes: int | None,
                    needed_for: str | float | None, cluster: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"target": target, "bytes": nbytes}
    if inodes is not None:
        body["inodes"] = inodes
    if needed_for is not None:
        body["needed_for"] = needed_for
    if cluster is not None:
        body["cluster"] = cluster
    return body


def _body_pause(until: str | float | None, reason: str) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": reason}
    if until is not None:
        body["until"] = until
    return body


class _Base:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout_seconds: float = 10.0,
                 retry: RetryPolicy | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_seconds = timeout_seconds
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.clock = clock
        self.wall = wall

    def _headers(self, write: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json",
                   "User-Agent": "quotapilot-client/1"}
        if write and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _next_wait(self, attempt: int, started: float, answer: _Answer | None, error: Exception) -> float:
        """Seconds to wait before the next attempt; raises when there is none."""
        if self.retry.exhausted(attempt):
            raise error
        delay = self.retry.delay(attempt, answer.retry_after if answer else None, self.rng)
        left = self.retry.time_left(self.clock() - started)
        if delay > left:
            raise DeadlineExceeded(
                f"deadline of {self.retry.deadline_seconds or 0:.0f}s would pass before the next attempt "
                f"(wait {delay:.1f}s, {max(left, 0):.1f}s left): {error}", error) from error
        return delay

    def _attempt_timeout(self, started: float, error: Exception | None) -> float:
        """The time one attempt may take: `timeout_seconds`, cut to what is left of the deadline
        (a hung daemon must not hold a call past it); `DeadlineExceeded` when nothing is left."""
        left = self.retry.time_left(self.clock() - started)
        if left <= 0:
            raise DeadlineExceeded(f"deadline of {self.retry.deadline_seconds or 0:.0f}s passed: {error}", error)
        return min(self.timeout_seconds, left)

    @staticmethod
    def _result(answer: _Answer) -> Mapping[str, Any]:
        if 200 <= answer.status < 300:
            return answer.body
        raise error_for(answer.status, answer.body, answer.retry_after)


# ----------------------------------------------------------------------------------- sync
class Client(_Base):
    """Blocking client (urllib). `sleep` is injectable so tests never sleep for real."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        self.sleep = sleep

    def _once(self, method: str, path: str, body: Mapping[str, Any] | None, write: bool,
              timeout: float | None = None) -> _Answer:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self._headers(write))
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout_seconds) as resp:
                return _Answer(resp.status, _decode(resp.read()), None)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return _Answer(exc.code, _decode(raw), parse_retry_after(exc.headers.get("Retry-After"), self.wall()))

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                write: bool = False) -> Mapping[str, Any]:
        """One API call with retries; the JSON answer on 2xx, else a typed error."""
        started = self.clock()
        attempt = 0
        error: Exception | None = None
        while True:
            answer: _Answer | None = None
            timeout = self._attempt_timeout(started, error)
            try:
                answer = self._once(method, path, body, write, timeout)
                if answer.status not in RETRYABLE_STATUSES:
                    return self._result(answer)
                error = error_for(answer.status, answer.body, answer.retry_after)
            # HTTPException: an answer cut short (IncompleteRead, the daemon restarting mid-answer)
            # or garbled; like a refused connection, the request may be retried.
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                error = ConnectionFailed(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}")
            self.sleep(self._next_wait(attempt, started, answer, error))
            attempt += 1

    # -------------------------------------------------------------- the API
    def targets(self) -> list[Mapping[str, Any]]:
        return list(self.request("GET", "/api/v1/targets").get("targets", []))

    def target(self, target: str) -> Mapping[str, Any]:
        return self.request("GET", _target_path(target))

    def preflight(self, target: str, nbytes: int | str, *, inodes: int | None = None,
                  needed_for: str | float | None = None, cluster: str | None = None) -> Preflight:
        body = _body_preflight(target, nbytes, inodes, needed_for, cluster)
        return Preflight.from_json(self.request("POST", "/api/v1/preflight", body))

    def reserve(self, target: str, nbytes: int | str, *, ttl: str | float, inodes: int | None = None,
                idempotency_key: str | None = None, cluster: str | None = None) -> Reservation:
        """Reserve; raises `Refused` (with `guard`, `earliest_at`) when the daemon says no."""
        body = _body_preflight(target, nbytes, inodes, None, cluster)
        body.update(ttl=ttl, idempotency_key=idempotency_key or uuid.uuid4().hex)
        return Reservation.from_json(self.request("POST", "/api/v1/reservations", body, write=True))

    def release(self, reservation_id: str) -> Mapping[str, Any]:
        return self.request("DELETE", f"/api/v1/reservations/{urllib.parse.quote(reservation_id, safe='')}",
                            write=True)

    def pause(self, target: str, *, until: str | float | None = None, reason: str = "") -> Mapping[str, Any]:
        return self.request("POST", _target_path(target, "/pause"), _body_pause(until, reason), write=True)

    def resume(self, target: str) -> Mapping[str, Any]:
        return self.request("POST", _target_path(target, "/resume"), {}, write=True)

    def wait_for_room(self, target: str, nbytes: int | str, *, inodes: int | None = None,
                      needed_for: str | float | None = None, deadline_seconds: float = 3600.0,
                      poll_seconds: float = 60.0) -> Preflight:
        """Ask until the write fits, or until the daemon would grow the target for it now (then
        return that answer), waiting `poll_seconds` between asks (less when the daemon names an
        earlier time); `DeadlineExceeded` when time runs out. A preflight is a question, not
        demand: on an answer that does not fit but says `grow`, reserve — the daemon grows for a
        granted reservation at once; waiting would never see room."""
        started = self.clock()
        while True:
            answer = self.preflight(target, nbytes, inodes=inodes, needed_for=needed_for)
            if answer.fits or answer.grows_on_reservation:
                return answer
            wait = _room_wait(answer, poll_seconds, self.wall(), self.rng)
            if self.clock() - started + wait > deadline_seconds:
                raise DeadlineExceeded(f"no room for {nbytes} bytes in {target} within {deadline_seconds:.0f}s "
                                       f"({answer.action.get('reason', '')})", answer)
            self.sleep(wait)

    @contextmanager
    def reservation(self, target: str, nbytes: int | str, *, ttl: str | float, inodes: int | None = None,
                    idempotency_key: str | None = None) -> Iterator[Reservation]:
        """Reserve for the duration of a `with` block; released on exit (even on error)."""
        held = self.reserve(target, nbytes, ttl=ttl, inodes=inodes, idempotency_key=idempotency_key)
        try:
            yield held
        finally:
            self.release(held.id)


def _room_wait(answer: Preflight, poll_seconds: float, now: float, rng: random.Random) -> float:
    wait = poll_seconds
    if answer.earliest_fit_at is not None and answer.earliest_fit_at > now:
        wait = min(wait, answer.earliest_fit_at - now)
    return max(1.0, wait * (0.8 + 0.2 * rng.random()))


# ----------------------------------------------------------------------------------- async
class AsyncClient(_Base):
    """The same API for asyncio code (aiohttp, imported on first use). Use as `async with`."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        self.sleep = sleep
        self._session: Any = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _once(self, method: str, path: str, body: Mapping[str, Any] | None, write: bool,
                    limit_seconds: float | None = None) -> _Answer:
        import aiohttp  # lazily: pipelines using only the sync client need not have it

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        data = json.dumps(body).encode() if body is not None else None
        async with self._session.request(method, self.url + path, data=data, headers=self._headers(write),
                                         timeout=aiohttp.ClientTimeout(total=limit_seconds or self.timeout_seconds),
                                         ) as resp:
            raw = await resp.read()
            return _Answer(resp.status, _decode(raw), parse_retry_after(resp.headers.get("Retry-After"), self.wall()))

    async def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                      write: bool = False) -> Mapping[str, Any]:
        import aiohttp

        started = self.clock()
        attempt = 0
        error: Exception | None = None
        while True:
            answer: _Answer | None = None
            timeout = self._attempt_timeout(started, error)
            try:
                answer = await self._once(method, path, body, write, timeout)
                if answer.status not in RETRYABLE_STATUSES:
                    return self._result(answer)
                error = error_for(answer.status, answer.body, answer.retry_after)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = ConnectionFailed(f"cannot reach {self.url}: {exc!r}")
            await self.sleep(self._next_wait(attempt, started, answer, error))
            attempt += 1

    async def targets(self) -> list[Mapping[str, Any]]:
        return list((await self.request("GET", "/api/v1/targets")).get("targets", []))

    async def target(self, target: str) -> Mapping[str, Any]:
        return await self.request("GET", _target_path(target))

    async def pause(self, target: str, *, until: str | float | None = None, reason: str = "") -> Mapping[str, Any]:
        return await self.request("POST", _target_path(target, "/pause"), _body_pause(until, reason), write=True)

    async def resume(self, target: str) -> Mapping[str, Any]:
        return await self.request("POST", _target_path(target, "/resume"), {}, write=True)

    async def preflight(self, target: str, nbytes: int | str, *, inodes: int | None = None,
                        needed_for: str | float | None = None, cluster: str | None = None) -> Preflight:
        body = _body_preflight(target, nbytes, inodes, needed_for, cluster)
        return Preflight.from_json(await self.request("POST", "/api/v1/preflight", body))

    async def reserve(self, target: str, nbytes: int | str, *, ttl: str | float, inodes: int | None = None,
                      idempotency_key: str | None = None, cluster: str | None = None) -> Reservation:
        body = _body_preflight(target, nbytes, inodes, None, cluster)
        body.update(ttl=ttl, idempotency_key=idempotency_key or uuid.uuid4().hex)
        return Reservation.from_json(await self.request("POST", "/api/v1/reservations", body, write=True))

    async def release(self, reservation_id: str) -> Mapping[str, Any]:
        return await self.request(
            "DELETE", f"/api/v1/reservations/{urllib.parse.quote(reservation_id, safe='')}", write=True)

    async def wait_for_room(self, target: str, nbytes: int | str, *, inodes: int | None = None,
                            needed_for: str | float | None = None, deadline_seconds: float = 3600.0,
                            poll_seconds: float = 60.0) -> Preflight:
        started = self.clock()
        while True:
            answer = await self.preflight(target, nbytes, inodes=inodes, needed_for=needed_for)
            if answer.fits or answer.grows_on_reservation:
                return answer
            wait = _room_wait(answer, poll_seconds, self.wall(), self.rng)
            if self.clock() - started + wait > deadline_seconds:
                raise DeadlineExceeded(f"no room for {nbytes} bytes in {target} within {deadline_seconds:.0f}s "
                                       f"({answer.action.get('reason', '')})", answer)
            await self.sleep(wait)

    @asynccontextmanager
    async def reservation(self, target: str, nbytes: int | str, *, ttl: str | float, inodes: int | None = None,
                          idempotency_key: str | None = None) -> AsyncIterator[Reservation]:
        held = await self.reserve(target, nbytes, ttl=ttl, inodes=inodes, idempotency_key=idempotency_key)
        try:
            yield held
        finally:
            await self.release(held.id)
