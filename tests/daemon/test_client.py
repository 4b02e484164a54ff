"""The pipeline client: typed errors, retries with jittered exponential backoff honouring
Retry-After (faults injected with the simulator's fault rules), deadlines, wait_for_room, and the
CLI wrappers (`preflight`, `status`, `pause`, `resume`). No test sleeps for real."""

from __future__ import annotations

import http.server
import importlib.util
import json
import random
import socket
import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from api_fakes import (
    TIB,
    TOKEN,
    FakeDaemon,
    FakeTime,
    default_quotas,
    fault_middleware,
    make_settings,
    serve_in_thread,
)

from quotapilot.daemon.cli import main
from quotapilot.daemon.http.api import add_api_routes
from quotapilot.daemon.pipeline_client import (
    AsyncClient,
    BadRequest,
    Client,
    ConnectionFailed,
    DeadlineExceeded,
    NotFound,
    Refused,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    parse_retry_after,
)
from quotapilot.daemon.simulator.faults import Faults
from quotapilot.daemon.store.db import Database


@pytest.fixture
def daemon(tmp_path: Path) -> FakeDaemon:
    settings = make_settings(tmp_path)
    return FakeDaemon(settings=settings, db=Database(settings.store.path), quotas=default_quotas())


def client(url: str, fake: FakeTime, token: str | None = TOKEN, **policy: float) -> Client:
    retry = RetryPolicy(**policy)  # type: ignore[arg-type]
    return Client(url, token, retry=retry, sleep=fake.sleep, clock=fake.monotonic, rng=random.Random(1))


class CutShortDaemon:
    """A daemon that dies mid-answer: for the first `cut` requests it promises a Content-Length and
    closes after a few bytes (what a restart mid-answer looks like), then answers whole. Records
    each request's JSON body. Raw sockets, because aiohttp and http.server always answer whole."""

    def __init__(self, answer: dict[str, Any], cut: int) -> None:
        self.whole = json.dumps(answer).encode()
        self.cut = cut
        self.bodies: list[dict[str, Any]] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _read_request(self, conn: socket.socket) -> None:
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionResetError("client left mid-request")
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        self.bodies.append(json.loads(body) if body else {})

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed by __exit__
                return
            with conn, suppress(OSError):
                self._read_request(conn)
                body = self.whole[:5] if len(self.bodies) <= self.cut else self.whole
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(self.whole)}\r\nConnection: close\r\n\r\n".encode() + body)

    def __enter__(self) -> CutShortDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with suppress(OSError):  # on Linux, shutdown wakes a thread waiting in accept(); close does not
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(5)


class TestBackoff:
    """429 waits exactly Retry-After; 5xx backs off exponentially with jitter; deadlines hold."""

    def test_429_honours_retry_after(self, daemon: FakeDaemon) -> None:
        faults, fake = Faults(seed=1), FakeTime()
        rule = faults.add("rate_limit", retry_after=7, count=2, path="/api/v1/preflight")
        with serve_in_thread(daemon, faults) as url:
            answer = client(url, fake).preflight("cosmos7-temp", 10**9)
        assert answer.fits is True
        assert fake.sleeps == [7.0, 7.0]
        assert rule.fired == 2

    def test_503_backs_off_exponentially_with_jitter(self, daemon: FakeDaemon) -> None:
        faults, fake = Faults(seed=1), FakeTime()
        faults.add("error", status=503, count=3)
        with serve_in_thread(daemon, faults) as url:
            targets = client(url, fake, base_seconds=1.0).targets()
        assert len(targets) == 3
        assert len(fake.sleeps) == 3
        for attempt, slept in enumerate(fake.sleeps):
            assert 0.5 * 2**attempt <= slept <= 2**attempt

    def test_gives_up_after_attempts_with_a_typed_error(self, daemon: FakeDaemon) -> None:
        faults, fake = Faults(seed=1), FakeTime()
        faults.add("error", status=502)
        with serve_in_thread(daemon, faults) as url, pytest.raises(Unavailable) as caught:
            client(url, fake, attempts=3).targets()
        assert caught.value.status == 502
        assert len(fake.sleeps) == 2

    def test_retry_after_beyond_the_deadline_fails_at_once(self, daemon: FakeDaemon) -> None:
        faults, fake = Faults(seed=1), FakeTime()
        faults.add("rate_limit", retry_after=300)
        with serve_in_thread(daemon, faults) as url, pytest.raises(DeadlineExceeded):
            client(url, fake, deadline_seconds=60).preflight("cosmos7-temp", 1)
        assert fake.sleeps == []

    def test_connection_refused_is_retried_then_typed(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        fake = FakeTime()
        with pytest.raises(ConnectionFailed):
            client(f"http://127.0.0.1:{port}", fake, attempts=2).targets()
        assert len(fake.sleeps) == 1

    def test_an_answer_cut_short_is_retried_as_a_connection_failure(self) -> None:
        """The daemon restarting mid-answer (http.client.IncompleteRead, an HTTPException, not an
        OSError) is a connection failure: retried within the deadline, not an untyped traceback."""
        fake = FakeTime()
        with CutShortDaemon({"targets": [{"name": "raw"}]}, cut=1) as cut_short:
            targets = client(cut_short.url, fake).targets()
        assert targets == [{"name": "raw"}]
        assert len(fake.sleeps) == 1

    def test_an_answer_always_cut_short_ends_typed(self) -> None:
        """Out of attempts, the CLI and Airflow code see `ConnectionFailed`, naming the cause."""
        fake = FakeTime()
        with CutShortDaemon({"targets": []}, cut=99) as cut_short, pytest.raises(ConnectionFailed) as caught:
            client(cut_short.url, fake, attempts=2).targets()
        assert "IncompleteRead" in str(caught.value)
        assert len(fake.sleeps) == 1

    def test_a_reservation_cut_short_keeps_its_idempotency_key(self) -> None:
        """A retried POST must not reserve twice: every attempt carries the same key."""
        granted = {"id": "r1", "target": "cosmos7-temp", "status": "granted", "bytes": 10**9}
        fake = FakeTime()
        with CutShortDaemon(granted, cut=2) as cut_short:
            held = client(cut_short.url, fake).reserve("cosmos7-temp", 10**9, ttl=600)
        assert held.id == "r1"
        assert len(cut_short.bodies) == 3
        assert len({body["idempotency_key"] for body in cut_short.bodies}) == 1

    def test_retry_after_as_http_date(self) -> None:
        assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", 1_767_225_600.0) == 60.0
        assert parse_retry_after("3", 0.0) == 3.0
        assert parse_retry_after("soon", 0.0) is None


class TestTypedErrors:
    """Every error status has its exception; refusals carry guard and earliest time."""

    def test_errors(self, daemon: FakeDaemon, tmp_path: Path) -> None:
        fake = FakeTime()
        with serve_in_thread(daemon) as url:
            qp = client(url, fake)
            with pytest.raises(NotFound):
                qp.preflight("/no/such", 1)
            with pytest.raises(BadRequest) as bad:
                qp.preflight("cosmos7-raw", "lots")
            assert bad.value.field == "bytes"
            with pytest.raises(Unauthorized):
                client(url, fake, token="wrong").reserve("cosmos7-raw", 1, ttl="1h")
            with pytest.raises(Refused) as refused:
                qp.reserve("cosmos7-raw", 50 * TIB, ttl="1h")
            assert refused.value.guard == "observe_mode"
            assert refused.value.status == 409
        assert fake.sleeps == []

    def test_reservation_context_releases(self, daemon: FakeDaemon) -> None:
        fake = FakeTime()
        with serve_in_thread(daemon) as url:
            qp = client(url, fake)
            with qp.reservation("/cosmos7/temp", "1TiB", ttl="1h", idempotency_key="ctx") as held:
                assert held.status == "granted"
                assert qp.target("/cosmos7/temp")["reserved_bytes"] == TIB
            assert qp.target("/cosmos7/temp")["reserved_bytes"] == 0


class TestWaitForRoom:
    """wait_for_room asks again until the daemon says it fits, within the deadline."""

    def test_returns_once_the_quota_grew(self, daemon: FakeDaemon) -> None:
        fake = FakeTime()
        raw = daemon.quotas[0]

        def sleep(seconds: float) -> None:
            fake.sleep(seconds)
            if len(fake.sleeps) == 2:
                raw.hard = 400 * TIB  # the daemon grew the quota meanwhile

        with serve_in_thread(daemon) as url:
            qp = Client(url, TOKEN, sleep=sleep, clock=fake.monotonic, rng=random.Random(0))
            answer = qp.wait_for_room("cosmos7-raw", 80 * TIB, needed_for="1h", poll_seconds=30)
        assert answer.fits is True
        assert len(fake.sleeps) == 2
        assert all(24 <= s <= 30 for s in fake.sleeps)

    def test_deadline(self, daemon: FakeDaemon) -> None:
        fake = FakeTime()
        with serve_in_thread(daemon) as url, pytest.raises(DeadlineExceeded) as caught:
            client(url, fake).wait_for_room("cosmos7-raw", 80 * TIB, deadline_seconds=100, poll_seconds=30)
        assert sum(fake.sleeps) <= 100
        assert caught.value.last is not None


class TestAsyncClient:
    """The asyncio client behaves the same (aiohttp, fake sleep)."""

    async def test_retries_and_reserves(self, daemon: FakeDaemon) -> None:
        from aiohttp import web

        faults, fake = Faults(seed=1), FakeTime()
        faults.add("rate_limit", retry_after=2, count=1, path="/api/v1/reservations")
        app = web.Application(middlewares=[fault_middleware(faults, daemon.clock)])
        add_api_routes(app, daemon)
        async with TestServer(app) as server:
            url = str(server.make_url("")).rstrip("/")
            async with AsyncClient(url, TOKEN, sleep=fake.async_sleep, clock=fake.monotonic) as qp:
                assert (await qp.preflight("cosmos7-temp", "1TB")).fits
                async with qp.reservation("cosmos7-temp", "1TiB", ttl=600) as held:
                    assert held.status == "granted"
                with pytest.raises(Refused):
                    await qp.reserve("cosmos7-raw", 50 * TIB, ttl="1h")
        assert fake.sleeps == [2.0]

    async def test_an_answer_cut_short_is_retried(self) -> None:
        """aiohttp reports a cut body as ClientPayloadError, a ClientError: retried, then typed."""
        fake = FakeTime()
        with CutShortDaemon({"targets": [{"name": "raw"}]}, cut=1) as cut_short:
            async with AsyncClient(cut_short.url, TOKEN, sleep=fake.async_sleep, clock=fake.monotonic) as qp:
                targets = await qp.targets()
        assert targets == [{"name": "raw"}]
        assert len(fake.sleeps) == 1


class TestCli:
    """`quotapilot preflight/status/pause/resume` against a served API."""

    def test_preflight_exit_codes(self, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
        with serve_in_thread(daemon) as url:
            assert main(["preflight", "cosmos7-temp", "1TB", "--url", url]) == 0
            assert "fits" in capsys.readouterr().out
            assert main(["preflight", "/cosmos7/raw", "80TiB", "--url", url, "--json"]) == 3
            body = json.loads(capsys.readouterr().out)
            assert body["fits"] is False
            assert main(["preflight", "/nope", "1", "--url", url]) == 1
            assert main(["preflight", "cosmos7-raw", "many", "--url", url]) == 2

    def test_status_sorted_by_urgency(self, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
        with serve_in_thread(daemon) as url:
            assert main(["status", "--url", url, "--json"]) == 0
            body = json.loads(capsys.readouterr().out)
            assert main(["status", "--url", url]) == 0
            table = capsys.readouterr().out
        assert [t["name"] for t in body["targets"]] == ["cosmos7-raw", "cosmos7-processed", "cosmos7-temp"]
        lines = table.splitlines()
        assert lines[0].split()[:4] == ["TARGET", "USED", "LIMIT", "UTIL"]
        assert lines[1].startswith("/cosmos7/raw")
        # who leads what: the single SQLite instance leads its cluster, epoch 0, no expiry
        assert body["leadership"] == {"instance": "ops1", "clusters": [
            {"cluster": "sim", "role": "leader", "epoch": 0, "holder": "ops1", "lease_epoch": 0,
             "expires_in_seconds": None}]}
        assert lines[-2].split() == ["CLUSTER", "HOLDER", "EPOCH", "EXPIRES", "IN", "THIS", "INSTANCE"]
        assert lines[-1].split() == ["sim", "ops1", "0", "—", "leader"]

    def test_status_of_a_daemon_without_the_leadership_endpoint(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A daemon older than `/api/v1/leadership` (404): the targets alone, no error."""

        class Older(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/api/v1/targets"
                body = json.dumps({"targets": []} if found else {"error": "not_found", "message": "no route"})
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None: ...  # quiet

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Older)
        thread = threading.Thread(target=server.serve_forever, name="older-daemon", daemon=True)
        thread.start()
        try:
            assert main(["status", "--url", f"http://127.0.0.1:{server.server_address[1]}"]) == 0
        finally:
            server.shutdown()
            thread.join()
        out = capsys.readouterr().out
        assert "no targets yet" in out and "CLUSTER" not in out

    def test_pause_resume(self, daemon: FakeDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("QUOTAPILOT_WRITE_TOKEN", raising=False)
        with serve_in_thread(daemon) as url:
            assert main(["pause", "/cosmos7/raw", "--url", url]) == 2
            assert main(["pause", "/cosmos7/raw", "--url", url, "--token", "nope"]) == 1
            assert main(["pause", "/cosmos7/raw", "--until", "12h", "--reason", "migration", "--url", url,
                         "--token", TOKEN]) == 0
            assert "paused /cosmos7/raw until" in capsys.readouterr().out
            monkeypatch.setenv("QUOTAPILOT_WRITE_TOKEN", TOKEN)
            assert main(["resume", "cosmos7-raw", "--url", url]) == 0
            assert "resumed /cosmos7/raw" in capsys.readouterr().out

    def test_url_and_token_from_config(self, daemon: FakeDaemon, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("QUOTAPILOT_WRITE_TOKEN", raising=False)
        with serve_in_thread(daemon) as url:
            port = url.rsplit(":", 1)[1]
            config = tmp_path / "q.toml"
            config.write_text(f'[http]\nlisten = "0.0.0.0:{port}"\nwrite_token = "{TOKEN}"\n')
            assert main(["pause", "cosmos7-temp", "--config", str(config)]) == 0
        assert "paused /cosmos7/temp until resumed" in capsys.readouterr().out

    def test_daemon_down(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("quotapilot.daemon.commands.client.CLI_RETRY", RetryPolicy(attempts=2, base_seconds=0.001))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == 1
        assert "cannot reach" in capsys.readouterr().err


class TestExamplePipelineStep:
    """deploy/examples/pipeline_step.py reserves, runs the work, releases; refusals exit 75."""

    def _load(self) -> Any:
        path = Path(__file__).parents[2] / "deploy" / "examples" / "pipeline_step.py"
        spec = importlib.util.spec_from_file_location("pipeline_step", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def test_reserve_run_release(self, daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        step = self._load()
        marker = tmp_path / "ran"
        with serve_in_thread(daemon) as url:
            monkeypatch.setenv("QUOTAPILOT_URL", url)
            monkeypatch.setenv("QUOTAPILOT_WRITE_TOKEN", TOKEN)
            code = step.main(["--target", "/cosmos7/temp", "--bytes", "1TB", "--run-id", "r1", "--",
                              sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')"])
            assert code == 0 and marker.exists()
            assert client(url, FakeTime()).target("cosmos7-temp")["reserved_bytes"] == 0
            refused = step.main(["--target", "/cosmos7/raw", "--bytes", "50TiB", "--wait", "0"])
        assert refused == 75
