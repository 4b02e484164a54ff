"""Issue 14: hostile input to /api/v1 is a JSON 4xx, never a 500. JSON bodies are parsed with a
size and a depth limit before validation; unknown routes and methods answer in the API's JSON
error shape too."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from api_fakes import FakeDaemon, api_client, auth, default_quotas, make_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from quotapilot.daemon.http.api.body import MAX_JSON_DEPTH, json_depth
from quotapilot.daemon.http.api.models import PAUSE_MAX_SECONDS
from quotapilot.daemon.store.db import Database


@pytest.fixture
def daemon(tmp_path: Path) -> FakeDaemon:
    config = make_settings(tmp_path)
    return FakeDaemon(settings=config, db=Database(config.store.path), quotas=default_quotas())


WRITES = [("POST", "/api/v1/reservations"), ("POST", "/api/v1/killswitch"),
          ("POST", "/api/v1/targets/cosmos7-raw/pause")]
ENDPOINTS = [("POST", "/api/v1/preflight"), *WRITES]


async def answer(daemon: FakeDaemon, method: str, path: str, body: bytes,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    with capture_logs() as logs:
        async with api_client(daemon) as client:
            resp = await client.request(method, path, data=body,
                                        headers={**auth(), "Content-Type": "application/json", **(headers or {})})
            assert resp.content_type == "application/json"
            return resp.status, await resp.json(), logs


class TestDeepJson:
    """`[` × 30,000 to preflight (no auth needed) was a 500 with a RecursionError in the log."""

    @pytest.mark.parametrize(("method", "path"), ENDPOINTS)
    async def test_30000_brackets_is_400(self, daemon: FakeDaemon, method: str, path: str) -> None:
        status, body, logs = await answer(daemon, method, path, b"[" * 30_000)
        assert (status, body["error"]["code"], body["error"]["field"]) == (400, "too_deep", "body")
        assert not [e for e in logs if e["event"] == "api.failed"]

    async def test_deep_but_balanced_object_is_400(self, daemon: FakeDaemon) -> None:
        deep = '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)
        status, body, _ = await answer(daemon, "POST", "/api/v1/preflight", deep.encode())
        assert (status, body["error"]["code"]) == (400, "too_deep")

    async def test_brackets_inside_strings_do_not_count(self, daemon: FakeDaemon) -> None:
        payload = {"target": "/cosmos7/raw", "bytes": "1TB", "cluster": "[" * 150 + '\\"{' * 20}
        status, body, _ = await answer(daemon, "POST", "/api/v1/preflight", json.dumps(payload).encode())
        assert (status, body["error"]["code"]) == (404, "unknown_target")  # validated, then looked up


class TestNotJson:
    """Bodies that Python's json module would take but JSON does not allow, or cannot parse at all."""

    @pytest.mark.parametrize("raw", [
        b'{"target": "/cosmos7/raw", "bytes": NaN}',
        b'{"target": "/cosmos7/raw", "bytes": 1, "needed_for": Infinity}',
        b'{"target": "/cosmos7/raw", "bytes": -Infinity}',
        b'{"target": "/cosmos7/raw", "bytes": ' + b"9" * 5000 + b"}",
        b'{"target": "\xff\xfe"}',
        b'\x00',
        b'{"target": "/cosmos7/raw", "bytes": 1',
    ])
    @pytest.mark.parametrize(("method", "path"), ENDPOINTS)
    async def test_400_bad_json(self, daemon: FakeDaemon, raw: bytes, method: str, path: str) -> None:
        status, body, logs = await answer(daemon, method, path, raw)
        assert (status, body["error"]["code"], body["error"]["field"]) == (400, "bad_json", "body")
        assert not [e for e in logs if e["event"] == "api.failed"]

    async def test_duplicate_keys_are_refused(self, daemon: FakeDaemon) -> None:
        raw = b'{"target": "/cosmos7/raw", "bytes": 1, "bytes": 2}'
        status, body, _ = await answer(daemon, "POST", "/api/v1/preflight", raw)
        assert (status, body["error"]["code"]) == (400, "bad_json")


class TestJsonErrorsEverywhere:
    """Routing errors under /api/v1 use the same `{"error": {...}}` shape as the handlers."""

    async def test_unknown_route_is_404_json(self, daemon: FakeDaemon) -> None:
        status, body, _ = await answer(daemon, "GET", "/api/v1/nothing-here", b"")
        assert (status, body["error"]["code"]) == (404, "not_found")

    async def test_wrong_method_is_405_json(self, daemon: FakeDaemon) -> None:
        async with api_client(daemon) as client:
            resp = await client.put("/api/v1/preflight", data=b"{}")
            assert (resp.status, resp.content_type) == (405, "application/json")
            assert "POST" in resp.headers["Allow"]
            assert (await resp.json())["error"]["code"] == "method_not_allowed"

    @pytest.mark.parametrize("query", ["limit=1e9", "limit=0", "limit=" + "9" * 5000, "since=nan",
                                       "since=inf", "since=" + "1" * 5000, "limit=%00"])
    async def test_bad_query_is_400(self, daemon: FakeDaemon, query: str) -> None:
        status, body, _ = await answer(daemon, "GET", f"/api/v1/actions?{query}", b"")
        assert (status, body["error"]["code"]) == (400, "invalid")

    @pytest.mark.parametrize(("query", "field"), [
        ("limit=1e9", "limit"), ("limit=0", "limit"), ("limit=x", "limit"),
        ("since=nan", "since"), ("since=inf", "since"), ("since=-1e400", "since"), ("since=yesterday", "since"),
        ("limit=10&since=x", "since")])
    async def test_bad_query_names_the_parameter(self, daemon: FakeDaemon, query: str, field: str) -> None:
        """`since=nan` was refused as 'limit must be 1..1000', field `limit`."""
        status, body, _ = await answer(daemon, "GET", f"/api/v1/actions?{query}", b"")
        assert (status, body["error"]["field"]) == (400, field)
        assert body["error"]["message"].startswith(field)


class TestDurationBounds:
    """Durations in write bodies have the bounds a user expects: a pause `until` given as an ISO
    time was unbounded (`9999-12-31T00:00:00Z` paused a target for 8,000 years, though the same
    pause as a duration stops at 400 days), and a reservation `ttl` of 1e-300 s was granted."""

    @pytest.mark.parametrize("until", ["9999-12-31T00:00:00Z", "2027-02-05T00:00:01Z",
                                       "9999-12-31T23:59:59-23:59"])
    async def test_pause_until_beyond_400_days_is_400(self, daemon: FakeDaemon, until: str) -> None:
        """T0 is 2026-01-01T00:00:00Z: 2027-02-05T00:00:01Z is 400 days and a second later."""
        status, body, logs = await answer(daemon, "POST", "/api/v1/targets/cosmos7-raw/pause",
                                          json.dumps({"until": until}).encode())
        assert (status, body["error"]["code"], body["error"]["field"]) == (400, "invalid", "until")
        assert not [e for e in logs if e["event"] == "api.failed"]

    async def test_pause_until_400_days_ahead_is_accepted(self, daemon: FakeDaemon) -> None:
        status, body, _ = await answer(daemon, "POST", "/api/v1/targets/cosmos7-raw/pause",
                                       b'{"until": "2027-02-05T00:00:00Z"}')
        assert (status, body["paused_until"]) == (200, daemon.clock.now() + PAUSE_MAX_SECONDS)

    @pytest.mark.parametrize("ttl", ["1e-300", "5e-324", "0.5", "0", "1e999", '"0s"'])
    async def test_ttl_under_a_second_or_not_finite_is_400(self, daemon: FakeDaemon, ttl: str) -> None:
        raw = f'{{"target": "cosmos7-temp", "bytes": 1, "ttl": {ttl}, "idempotency_key": "k"}}'.encode()
        status, body, _ = await answer(daemon, "POST", "/api/v1/reservations", raw)
        assert (status, body["error"]["code"], body["error"]["field"]) == (400, "invalid", "ttl")

    async def test_ttl_of_one_second_is_granted(self, daemon: FakeDaemon) -> None:
        raw = b'{"target": "cosmos7-temp", "bytes": 1, "ttl": 1, "idempotency_key": "k"}'
        status, body, _ = await answer(daemon, "POST", "/api/v1/reservations", raw)
        assert (status, body["status"]) == (201, "granted")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('[]{}",:\\ab')),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=30)


def nesting(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    return 0


class TestDepthScanner:
    @settings(max_examples=300, deadline=None)
    @given(json_values)
    def test_depth_is_the_nesting(self, value: object) -> None:
        assert nesting(value) == json_depth(json.dumps(value).encode())


class TestTokenNotUtf8:
    """A bearer token of bytes that are not UTF-8 (`s3cret\\xe9`, `\\xff\\xfe`) was a 500: aiohttp
    hands the header over surrogate-escaped, `.encode()` raised UnicodeEncodeError, and `api.failed`
    logged the presented token with a traceback. It is a wrong token: 401, nothing of it logged."""

    @pytest.mark.parametrize("token", [b"s3cret\xe9", b"\xff\xfe", "s3cr\u00e9t".encode()])
    async def test_401_and_nothing_logged(self, daemon: FakeDaemon, token: bytes) -> None:
        body = b'{"enabled": false}'
        with capture_logs() as logs:
            async with api_client(daemon) as client:
                url = client.make_url("/api/v1/killswitch")
                reader, writer = await asyncio.open_connection(url.host, url.port)
                writer.write(b"POST /api/v1/killswitch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"Content-Type: application/json\r\nAuthorization: Bearer " + token + b"\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                reply = await reader.read()
                writer.close()
                await writer.wait_closed()
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert b'WWW-Authenticate: Bearer realm="quotapilot"' in head
        assert json.loads(payload)["error"]["code"] == "unauthorized"
        assert [e for e in logs if e["event"] == "api.failed"] == []
        assert token.decode("utf-8", "surrogateescape") not in repr(logs)

    async def test_the_right_token_still_passes(self, daemon: FakeDaemon) -> None:
        status, _, _ = await answer(daemon, "POST", "/api/v1/killswitch", b'{"enabled": false}')
        assert status == 200
