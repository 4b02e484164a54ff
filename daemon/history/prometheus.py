"""The Prometheus HTTP API client (`/api/v1/query_range`), the only module that talks to Prometheus.

`query_range` splits a long range into chunks of at most `max_points_per_query` steps (Prometheus
refuses a query that would return more than 11,000 points per series) and merges the chunks per
series. One request is retried on temporary failures (connection errors, timeouts, 5xx, 429 —
honouring `Retry-After`) with jittered exponential backoff; `sleep` is injected so tests never wait.
A refused query (400/422: bad PromQL; 401/403: credentials) is a `PermanentError`.
"""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.settings import HistorySettings, expand_path, read_secret_file, url_for_display

log = get_logger(__name__)

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class RangeSeries:
    """One series of a range query: its labels and `(t, value)` points, oldest first."""

    labels: Labels
    points: list[tuple[float, float]] = field(default_factory=list)

    def label(self, name: str) -> str | None:
        return next((value for key, value in self.labels if key == name), None)


def chunk_ranges(start: float, end: float, step: float, max_points: int) -> list[tuple[float, float]]:
    """`[start, end]` as consecutive inclusive sub-ranges of at most `max_points` evaluation steps,
    on the grid `start + k * step` (no step evaluated twice, none skipped)."""
    if end < start:
        return []
    span = (max_points - 1) * step
    chunks = []
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(end, chunk_start + span)
        chunks.append((chunk_start, chunk_end))
        chunk_start = chunk_end + step
    return chunks


class PrometheusClient:
    """An async client for one Prometheus; use as `async with PrometheusClient(settings) as prom`."""

    def __init__(self, settings: HistorySettings, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if settings.prometheus_url is None:
            raise PermanentError("[history] prometheus_url is not set")
        self.settings = settings
        self.base_url = settings.prometheus_url.rstrip("/")
        self.where = url_for_display(self.base_url)
        """What errors and logs say of the URL: a user or password in it stays out of them."""
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    async def __aenter__(self) -> PrometheusClient:
        headers: dict[str, str] = {"Accept": "application/json"}
        s = self.settings
        if s.bearer_token_file is not None:
            headers["Authorization"] = f"Bearer {read_secret_file(s.bearer_token_file)}"
        if s.basic_auth_user is not None and s.basic_auth_password_file is not None:
            pair = f"{s.basic_auth_user}:{read_secret_file(s.basic_auth_password_file)}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode('ascii')}"
        connector = None
        if s.ca_file is not None:
            connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(expand_path(s.ca_file))))
        self._session = aiohttp.ClientSession(
            headers=headers, connector=connector,
            timeout=aiohttp.ClientTimeout(total=s.timeout_seconds))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------------------ queries
    async def query_range(self, query: str, start: float, end: float, step: float | None = None,
                          *, on_chunk: Callable[[], None] | None = None) -> list[RangeSeries]:
        """Every series of `query` over `[start, end]` at `step`, chunked; `on_chunk` after each."""
        step = step or self.settings.step_seconds
        merged: dict[Labels, RangeSeries] = {}
        for chunk_start, chunk_end in chunk_ranges(start, end, step, self.settings.max_points_per_query):
            data = await self._get("/api/v1/query_range", {
                "query": query, "start": _num(chunk_start), "end": _num(chunk_end), "step": _num(step)})
            for item in _result(data, "matrix"):
                try:
                    labels = tuple(sorted((str(k), str(v)) for k, v in item.get("metric", {}).items()))
                    points = [(float(t), float(v)) for t, v in item.get("values", ())]
                except (AttributeError, TypeError, ValueError) as exc:
                    raise PermanentError(f"Prometheus answered a malformed series for {query!r}: {exc}") from exc
                merged.setdefault(labels, RangeSeries(labels)).points.extend(points)
            if on_chunk is not None:
                on_chunk()
        return list(merged.values())

    async def ready(self) -> bool:
        """Whether Prometheus answers `/-/ready` with 200 (once, no retries; False when unreachable)."""
        assert self._session is not None, "use PrometheusClient as an async context manager"
        try:
            async with self._session.get(self.base_url + "/-/ready") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def chunks(self, start: float, end: float, step: float | None = None) -> int:
        """How many requests `query_range` will make (for a progress bar)."""
        return len(chunk_ranges(start, end, step or self.settings.step_seconds, self.settings.max_points_per_query))

    async def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        assert self._session is not None, "use PrometheusClient as an async context manager"
        attempt = 0
        while True:
            try:
                return await self._get_once(path, params)
            except TemporaryError as exc:
                if attempt >= self.settings.max_retries:
                    raise
                delay = exc.delay if exc.delay is not None else min(
                    60.0, self.settings.backoff_base_seconds * 2**attempt * random.uniform(0.5, 1.0))
                log.info("prometheus.retrying", attempt=attempt + 1, delay_seconds=round(delay, 2), error=str(exc))
                attempt += 1
                await self._sleep(delay)

    async def _get_once(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        assert self._session is not None
        self.requests += 1
        url = self.base_url + path
        try:
            async with self._session.get(url, params=params) as response:
                status = response.status
                if status == 429 or status >= 500:
                    raise TemporaryError(f"Prometheus answered {status}",
                                         delay=_retry_after(response.headers.get("Retry-After")))
                try:
                    body = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError) as exc:
                    raise TemporaryError(f"Prometheus answered {status} with a body that is not JSON") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise TemporaryError(f"cannot reach Prometheus at {self.where}: {exc}") from exc
        except aiohttp.TooManyRedirects as exc:
            raise PermanentError(f"Prometheus at {self.where} redirects in a loop ({path})") from exc
        except aiohttp.ClientResponseError as exc:  # not HTTP at all: another service on that port, say
            reason = exc.message.strip().splitlines()[0] if exc.message.strip() else type(exc).__name__
            raise TemporaryError(f"what answers at {self.where} is not an HTTP server "
                                 f"({exc.status}: {reason})") from exc
        except aiohttp.ClientError as exc:
            raise TemporaryError(f"cannot query Prometheus at {self.where}: {exc}") from exc
        except TimeoutError as exc:
            raise TemporaryError(f"Prometheus at {self.where} did not answer within "
                                 f"{self.settings.timeout_seconds:g} s") from exc
        if status in (401, 403):
            raise PermanentError(f"Prometheus refused the credentials ({status})")
        if not isinstance(body, dict):
            raise TemporaryError("Prometheus answered with an unexpected body")
        if status >= 400 or body.get("status") != "success":
            raise PermanentError(f"Prometheus refused the query ({status}): {body.get('error', body)}")
        return body


def _result(body: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    data = body.get("data") or {}
    if not isinstance(data, dict):
        raise PermanentError(f"Prometheus answered a {type(data).__name__} as data, want an object")
    if data.get("resultType") != kind:
        raise PermanentError(f"Prometheus returned a {data.get('resultType')!r} result, want {kind!r}")
    result = data.get("result") or []
    return [item for item in result if isinstance(item, dict)]


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
