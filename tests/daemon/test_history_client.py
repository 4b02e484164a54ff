"""The history pieces that need no Prometheus: chunking, the store's import, settings, and the
client's HTTP behaviour against a local receiver (auth headers, 429/5xx retries, refusals)."""

from __future__ import annotations

import dataclasses
import io
import json
import socketserver
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from alert_receivers import serve_app
from structlog.testing import capture_logs

from quotapilot.daemon.errors import ConfigError, PermanentError, TemporaryError
from quotapilot.daemon.history.importer import (
    SOURCE_DEFAULTS,
    TargetMatcher,
    known_targets,
    queries_for,
)
from quotapilot.daemon.history.local import free_port
from quotapilot.daemon.history.prometheus import PrometheusClient, RangeSeries, chunk_ranges
from quotapilot.daemon.settings import HistorySettings, load_settings, url_for_display
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.forecasting.types import Observation, TargetId


class TestChunks:
    def test_every_step_once_within_the_limit(self) -> None:
        chunks = chunk_ranges(0.0, 1000.0, 10.0, 11)
        assert chunks[0] == (0.0, 100.0)
        steps = [t for a, b in chunks for t in range(int(a), int(b) + 1, 10)]
        assert steps == list(range(0, 1001, 10))
        assert all((b - a) / 10 + 1 <= 11 for a, b in chunks)

    def test_short_and_empty_ranges(self) -> None:
        assert chunk_ranges(5.0, 5.0, 60.0, 11_000) == [(5.0, 5.0)]
        assert chunk_ranges(10.0, 5.0, 60.0, 11_000) == []


class TestStoreImport:
    @pytest.fixture
    def store(self, tmp_path: Path) -> Any:
        db = Database(tmp_path / "state.db")
        yield ObservationStore(db, raw_retention_seconds=3 * 86400, hourly_retention_seconds=70 * 86400)
        db.close()

    def test_last_sample_of_each_hour_never_over_local(self, store: ObservationStore) -> None:
        target = TargetId("c", "q", "/q")
        store.write_poll([Observation(target, 7300.0, used_bytes=999, hard_limit_bytes=5000)])  # hour 7200, local
        rows = [Observation(target, t, used_bytes=int(t), hard_limit_bytes=5000)
                for t in (3600.0, 4000.0, 7000.0, 7250.0, 7500.0, 11000.0)]
        assert store.import_history(rows) == 2  # hours 3600 (its last sample: 7000) and 10800
        assert store.import_history(rows) == 0
        hourly = {r["hour"]: (r["t"], r["used_bytes"]) for r in store.db.query(
            "SELECT hour, t, used_bytes FROM observations_hourly ORDER BY hour")}
        assert hourly == {3600.0: (7000.0, 7000), 7200.0: (7300.0, 999), 10800.0: (11000.0, 11000)}
        assert [p[0] for p in store.history(target, since=0)] == [7000.0, 7300.0]  # raw from 7300 on

    def test_nothing_to_import(self, store: ObservationStore) -> None:
        assert store.import_history([]) == 0


class TestSettings:
    def test_defaults_off(self) -> None:
        assert load_settings(None).history.prometheus_url is None
        assert load_settings(None).history.lookback == 28 * 86400

    def test_lookback_as_duration_and_vast_source(self) -> None:
        history = load_settings(None, history={"prometheus_url": "http://p:9090", "lookback": "14d",
                                               "source": "vast"}).history
        assert history.lookback == 14 * 86400
        queries = queries_for(history)
        assert queries == SOURCE_DEFAULTS["vast"]
        assert queries.name_label is None and queries.used_bytes == "vast_quota_used_capacity"

    def test_overrides_and_empty_string_disables(self) -> None:
        history = HistorySettings(prometheus_url="http://p", used_bytes_query="my_used", used_inodes_query="",
                                  name_label="quota")
        queries = queries_for(history)
        assert (queries.used_bytes, queries.used_inodes, queries.name_label) == ("my_used", None, "quota")
        assert queries.hard_limit_bytes == "quotapilot_target_hard_limit_bytes"

    def test_tenant_label_by_source(self) -> None:
        """VAST's exporter carries the tenant (`tenant_name`); quotapilot's `target` label is
        already the target name, another tenant's qualified, so it has none."""
        assert queries_for(HistorySettings(source="vast")).tenant_label == "tenant_name"
        assert queries_for(HistorySettings(source="quotapilot")).tenant_label is None
        assert queries_for(HistorySettings(source="vast", tenant_label="")).tenant_label is None
        assert queries_for(HistorySettings(tenant_label="tenant")).tenant_label == "tenant"

    @pytest.mark.parametrize(("history", "field"), [
        ({"prometheus_url": "ftp://x"}, "history.prometheus_url"),
        ({"basic_auth_user": "u"}, "history.basic_auth_password_file"),
        ({"bearer_token_file": "/t", "basic_auth_user": "u", "basic_auth_password_file": "/p"},
         "history.bearer_token_file"),
        ({"max_points_per_query": 20_000}, "history.max_points_per_query"),
        ({"lookback": "soon"}, "history.lookback"),
        ({"tenant_label": "tenant-name"}, "history.tenant_label"),
        ({"tenant_label": 7}, "history.tenant_label"),
    ])
    def test_bad_values_name_the_field(self, history: dict[str, object], field: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings(None, history=history)
        assert info.value.field == field


class TestMatcher:
    def series(self, **labels: str) -> RangeSeries:
        return RangeSeries(tuple(sorted(labels.items())))

    def test_quotapilot_labels(self) -> None:
        matcher = TargetMatcher(SOURCE_DEFAULTS["quotapilot"], ["c1", "c2"])
        assert matcher.match(self.series(cluster="c2", target="raw", path="/raw")) == TargetId("c2", "raw", "/raw")
        assert matcher.match(self.series(cluster="other", target="raw", path="/raw")) is None

    def test_vast_by_path_one_cluster(self) -> None:
        known = [TargetId("mine", "raw-q", "/cosmos7/raw")]
        matcher = TargetMatcher(SOURCE_DEFAULTS["vast"], ["mine"], known)
        assert matcher.match(self.series(cluster="vast-prod", path="/cosmos7/raw")) == known[0]
        assert matcher.match(self.series(cluster="vast-prod", path="/elsewhere")) is None
        matcher.learn([self.series(cluster="vast-prod", path="/cosmos7/raw")])
        assert matcher.match(self.series(cluster="vast-prod", path="/cosmos7/raw")) == known[0]
        derived = TargetMatcher(SOURCE_DEFAULTS["vast"], [], derive_names=True)
        assert derived.match(self.series(cluster="v", path="/a/b")) == TargetId("v", "a-b", "/a/b")


    def test_one_cluster_among_several_names(self) -> None:
        """A Prometheus that scrapes more clusters: with ours among the names only ours matches;
        with two names, neither ours, none is guessed to be ours."""
        known = [TargetId("mine", "raw-q", "/raw")]
        matcher = TargetMatcher(SOURCE_DEFAULTS["vast"], ["mine"], known)
        matcher.learn([self.series(cluster="mine", path="/raw"), self.series(cluster="other", path="/raw")])
        assert matcher.match(self.series(cluster="mine", path="/raw")) == known[0]
        assert matcher.match(self.series(cluster="other", path="/raw")) is None
        matcher.learn([self.series(cluster="a", path="/raw"), self.series(cluster="b", path="/raw")])
        assert matcher.match(self.series(cluster="a", path="/raw")) is None

    @pytest.mark.parametrize("bare_first", [True, False])
    def test_by_path_the_target_polled_last_wins(self, tmp_path: Path, bare_first: bool) -> None:
        """The raw tier keeps the bare `projects` (before 0198d09) beside the `acme:projects` the
        poll has written at the same path since: a series with no name goes to the newer, whatever
        order the store lists them in."""
        db = Database(tmp_path / "state.db")
        try:
            store = ObservationStore(db, raw_retention_seconds=3 * 86400, hourly_retention_seconds=70 * 86400)
            bare = TargetId("c", "projects", "/acme/projects")
            qualified = TargetId("c", "acme:projects", "/acme/projects")
            polls = [Observation(bare, 100.0, used_bytes=1, hard_limit_bytes=None),
                     Observation(qualified, 200.0, used_bytes=1, hard_limit_bytes=None)]
            for observation in polls if bare_first else polls[::-1]:
                store.write_poll([observation])
            matcher = TargetMatcher(SOURCE_DEFAULTS["vast"], ["c"], known_targets(store, ["c"]))
        finally:
            db.close()
        assert qualified == matcher.match(self.series(cluster="vast-prod", path="/acme/projects", tenant_name="acme"))

class TestTenantNames:
    """With a name label, a series is named as the poll names its quota (`QuotaNaming`): a quota of
    the home tenant (the cluster's configured `tenant`, else the default one) by its name, another
    tenant's `<tenant>:<name>`, the tenant read from the series' tenant label."""

    queries = dataclasses.replace(SOURCE_DEFAULTS["vast"], name_label="title")

    def series(self, **labels: str) -> RangeSeries:
        return RangeSeries(tuple(sorted({"cluster": "vast-prod", **labels}.items())))

    def test_a_single_tenants_series_keep_their_names(self) -> None:
        matcher = TargetMatcher(self.queries, ["c"])
        for tenant in ({}, {"tenant_name": "default"}):
            series = self.series(path="/scratch", title="scratch", **tenant)
            matcher.learn([series])
            assert TargetId("c", "scratch", "/scratch") == matcher.match(series), tenant

    def test_another_tenants_series_is_qualified(self) -> None:
        matcher = TargetMatcher(self.queries, ["c"])
        assert TargetId("c", "acme:scratch", "/acme/scratch") == matcher.match(
            self.series(path="/acme/scratch", title="scratch", tenant_name="acme"))

    def test_a_tenant_named_by_its_id_matches_nothing_unknown(self) -> None:
        """A tenant name holding ":" or "/" is no prefix: the poll names that tenant's quota
        `tenant<id>:<name>` (VMS lists the tenant id with every quota), and the series carries no
        id. Filed as `a_b:scratch` its history went to a target no poll ever reads."""
        matcher = TargetMatcher(self.queries, ["c"])
        for tenant in ("a:b", "a/b"):
            assert matcher.match(self.series(path="/ab/scratch", title="scratch", tenant_name=tenant)) is None

    def test_the_configured_tenant_is_home(self) -> None:
        matcher = TargetMatcher(self.queries, ["c"], tenants={"c": "acme"})
        assert TargetId("c", "scratch", "/acme/scratch") == matcher.match(
            self.series(path="/acme/scratch", title="scratch", tenant_name="acme"))
        assert TargetId("c", "default:scratch", "/default/scratch") == matcher.match(
            self.series(path="/default/scratch", title="scratch", tenant_name="default"))
        assert TargetId("c", "scratch", "/scratch") == matcher.match(self.series(path="/scratch", title="scratch"))

    def test_a_qualified_name_that_is_a_home_quotas_matches_nothing(self) -> None:
        """The poll refuses acme's `scratch` when a home quota is named `acme:scratch`: its
        history must not go into the home quota's."""
        home = self.series(path="/default/odd", title="acme:scratch", tenant_name="default")
        acme = self.series(path="/acme/scratch", title="scratch", tenant_name="acme")
        matcher = TargetMatcher(self.queries, ["c"])
        matcher.learn([home, acme])
        assert TargetId("c", "acme:scratch", "/default/odd") == matcher.match(home)
        assert matcher.match(acme) is None

    def test_the_name_a_poll_gave_by_tenant_id_wins(self) -> None:
        """The poll reads what the series cannot say (VMS's tenant id): a tenant whose name is no
        prefix is `tenant<id>:`. The store's `tenant<id>:<name>` target at the path is what the
        poll calls the quota, also beside a bare name left from before 0198d09."""
        known = [TargetId("c", "tenant7:scratch", "/ab/scratch"), TargetId("c", "scratch", "/ab/scratch")]
        for order in (known, known[::-1]):
            matcher = TargetMatcher(self.queries, ["c"], order)
            assert known[0] == matcher.match(self.series(path="/ab/scratch", title="scratch", tenant_name="a:b"))

    def test_a_bare_name_from_before_the_upgrade_is_not_the_polls(self) -> None:
        """A store upgraded from before 0198d09 (admin login, no tenant) still holds tenant acme's
        quota as the bare `projects` in its raw tier; the poll names it `acme:projects`, and looks
        for its history there. (The series cannot tell this from a default tenant renamed `acme`,
        home under any name for the poll, which reads the tenant id: that quota's history is
        imported as `acme:projects` too, as before its first poll.)"""
        matcher = TargetMatcher(self.queries, ["c"], [TargetId("c", "projects", "/acme/projects")])
        series = self.series(path="/acme/projects", title="projects", tenant_name="acme")
        matcher.learn([series])
        assert TargetId("c", "acme:projects", "/acme/projects") == matcher.match(series)

    def test_of_two_names_known_at_the_path_the_polls_wins(self) -> None:
        """The raw tier keeps the bare name beside the qualified one the poll has written since the
        upgrade: whichever the store lists last, the series goes to the poll's."""
        known = [TargetId("c", "acme:projects", "/acme/projects"), TargetId("c", "projects", "/acme/projects")]
        series = self.series(path="/acme/projects", title="projects", tenant_name="acme")
        for order in (known, known[::-1]):
            matcher = TargetMatcher(self.queries, ["c"], order)
            matcher.learn([series])
            assert known[0] == matcher.match(series), order

    def test_without_a_tenant_label_a_qualified_target_at_the_path_wins(self) -> None:
        """With no tenant label (`tenant_label = ""`) the series cannot say whose quota it is: the
        store's `<tenant>:<name>` at its path is the poll's name, a bare name there is not."""
        queries = dataclasses.replace(self.queries, tenant_label=None)
        known = [TargetId("c", "acme:scratch", "/acme/scratch"), TargetId("c", "scratch", "/acme/scratch")]
        for order in (known, known[::-1], known[:1]):
            matcher = TargetMatcher(queries, ["c"], order)
            assert known[0] == matcher.match(self.series(path="/acme/scratch", title="scratch")), order

    def test_quotapilots_own_target_label_is_the_name(self) -> None:
        matcher = TargetMatcher(SOURCE_DEFAULTS["quotapilot"], ["c"])
        assert TargetId("c", "acme:scratch", "/acme/scratch") == matcher.match(
            RangeSeries((("cluster", "c"), ("path", "/acme/scratch"), ("target", "acme:scratch"))))


class Receiver:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.answers: list[tuple[int, dict[str, Any] | str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        status, body, headers = self.answers.pop(0) if self.answers else (200, _matrix(), {})
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)


def _matrix() -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"cluster": "c", "target": "q", "path": "/q"}, "values": [[60, "5"], [120, "6"]]}]}}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_get("/api/v1/query_range", rec.handle)
    async with serve_app(app) as url:
        yield rec, url


class TestClient:
    async def test_bearer_token_from_file(self, receiver: tuple[Receiver, str], tmp_path: Path) -> None:
        rec, url = receiver
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        async with PrometheusClient(HistorySettings(prometheus_url=url, bearer_token_file=token)) as client:
            series = await client.query_range("quotapilot_target_used_bytes", 0, 120, 60)
        assert rec.requests[0].headers["Authorization"] == "Bearer s3cret"
        assert rec.requests[0].query["query"] == "quotapilot_target_used_bytes"
        assert [s.points for s in series] == [[(60.0, 5.0), (120.0, 6.0)]]

    async def test_basic_auth_from_file(self, receiver: tuple[Receiver, str], tmp_path: Path) -> None:
        rec, url = receiver
        password = tmp_path / "password"
        password.write_text("pw")
        settings = HistorySettings(prometheus_url=url, basic_auth_user="ops", basic_auth_password_file=password)
        async with PrometheusClient(settings) as client:
            await client.query_range("up", 0, 60, 60)
        assert rec.requests[0].headers["Authorization"] == "Basic b3BzOnB3"

    async def test_429_and_5xx_retried_with_backoff_honouring_retry_after(
            self, receiver: tuple[Receiver, str]) -> None:
        rec, url = receiver
        rec.answers = [(429, "slow down", {"Retry-After": "7"}), (503, "busy", {})]
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        settings = HistorySettings(prometheus_url=url, max_retries=3, backoff_base_seconds=2)
        async with PrometheusClient(settings, sleep=sleep) as client:
            series = await client.query_range("up", 0, 60, 60)
        assert len(rec.requests) == 3
        assert waits[0] == 7.0
        assert 1.0 <= waits[1] <= 4.0  # 2 s doubled once at most, jittered down to half
        assert series

    async def test_retries_exhausted_is_temporary(self, receiver: tuple[Receiver, str]) -> None:
        rec, url = receiver
        rec.answers = [(500, "no", {})] * 3

        async def sleep(seconds: float) -> None:
            return None

        async with PrometheusClient(HistorySettings(prometheus_url=url, max_retries=2), sleep=sleep) as client:
            with pytest.raises(TemporaryError, match="500"):
                await client.query_range("up", 0, 60, 60)
        assert len(rec.requests) == 3

    @pytest.mark.parametrize(("status", "body", "match"), [
        (401, {"status": "error"}, "credentials"),
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "parse error"),
    ])
    async def test_refusals_are_permanent_and_not_retried(self, receiver: tuple[Receiver, str], status: int,
                                                          body: dict[str, Any], match: str) -> None:
        rec, url = receiver
        rec.answers = [(status, body, {})]
        async with PrometheusClient(HistorySettings(prometheus_url=url, max_retries=5)) as client:
            with pytest.raises(PermanentError, match=match):
                await client.query_range("up{", 0, 60, 60)
        assert len(rec.requests) == 1

    async def test_a_password_in_the_url_is_never_logged(self) -> None:
        """Settings refuse userinfo in `prometheus_url`; a client given one anyway (the model
        bypassed) kept it out of `prometheus.retrying` and its errors: they said it every retry."""
        url = f"http://u:PROMSECRET@127.0.0.1:{free_port()}"
        settings = HistorySettings().model_copy(update={"prometheus_url": url, "max_retries": 2})

        async def sleep(seconds: float) -> None:
            return None

        with capture_logs() as logs:
            async with PrometheusClient(settings, sleep=sleep) as client:
                with pytest.raises(TemporaryError, match="cannot reach Prometheus") as raised:
                    await client.query_range("up", 0, 60, 60)
        retries = [e for e in logs if e["event"] == "prometheus.retrying"]
        assert len(retries) == 2
        assert "PROMSECRET" not in repr(logs) + str(raised.value)

    async def test_no_url(self) -> None:
        with pytest.raises(PermanentError, match="prometheus_url"):
            PrometheusClient(HistorySettings())


def _http(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n").encode() + body


MALFORMED_ANSWERS = {
    # the URL points at another service (a port mix-up), or a proxy that speaks something else
    "not_http": b"SSH-2.0-OpenSSH_9.6\r\n",
    # an auth proxy sending every request back to itself
    "redirect_loop": _http("302 Found", headers="Location: /api/v1/query_range\r\n"),
    "sample_not_a_number": _http("200 OK", json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"cluster": "c", "target": "q", "path": "/q"}, "values": [[60, "n/a"]]}]}}).encode()),
    "data_not_an_object": _http("200 OK", json.dumps({"status": "success", "data": ["matrix"]}).encode()),
}


@pytest.fixture(params=sorted(MALFORMED_ANSWERS))
def malformed(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server (in a thread, so the blocking CLI can use it too) that answers every request with
    one malformed reply: its base URL."""
    answer = MALFORMED_ANSWERS[request.param]

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            self.wfile.write(answer)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="malformed-prometheus")
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


class TestMalformedAnswers:
    """Whatever answers at `prometheus_url`, the daemon starts cold and `import-history` says what
    went wrong in one line (exit 1), not a traceback."""

    async def test_daemon_starts_cold(self, malformed: str, tmp_path: Path) -> None:
        from quotapilot.daemon.clock import VirtualClock
        from quotapilot.daemon.history.importer import warm_start_from_history

        settings = load_settings(None, clusters=[{"name": "c", "address": "vms.invalid", "token": "t"}],
                                 history={"prometheus_url": malformed, "max_retries": 0})
        db = Database(tmp_path / "state.db")
        tasks: dict[str, Any] = {}
        try:
            store = ObservationStore(db, raw_retention_seconds=86400, hourly_retention_seconds=86400)
            with capture_logs() as logs:
                assert await warm_start_from_history(settings, store, VirtualClock(), tasks.__setitem__) is None
        finally:
            db.close()
        assert "history.import_failed" in [e["event"] for e in logs]
        assert list(tasks) == ["history-import"]

    def test_import_history_exits_1_with_a_message(self, malformed: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        from quotapilot.daemon.cli import main

        config = tmp_path / "quotapilot.toml"
        config.write_text(f'[[clusters]]\nname = "c"\naddress = "vms.invalid"\ntoken = "t"\n'
                          f'[store]\npath = "{tmp_path / "state.db"}"\n'
                          f'[history]\nprometheus_url = "{malformed}"\nmax_retries = 0\n')
        assert main(["import-history", "--config", str(config), "--since", "1d"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("quotapilot import-history: ") and len(err.strip().splitlines()) == 1


class TestWarmStartLogsNoUrlSecret:
    """Guards `history.import_failed`: it logged `[history] prometheus_url` whole, and a URL's
    path or query can be a credential (a proxy key); the log shows `url_for_display` of it."""

    async def test_the_failure_log_shows_only_the_origin(self, tmp_path: Path) -> None:
        from quotapilot.daemon.clock import VirtualClock
        from quotapilot.daemon.history.importer import warm_start_from_history

        url = f"http://127.0.0.1:{free_port()}/proxy/PROMSECRET/?key=PROMSECRET"
        settings = load_settings(None, clusters=[{"name": "c", "address": "vms.invalid", "token": "t"}],
                                 history={"prometheus_url": url, "max_retries": 0})
        db = Database(tmp_path / "state.db")
        tasks: dict[str, Any] = {}
        try:
            store = ObservationStore(db, raw_retention_seconds=86400, hourly_retention_seconds=86400)
            with capture_logs() as logs:
                assert await warm_start_from_history(settings, store, VirtualClock(), tasks.__setitem__) is None
        finally:
            db.close()
        failed = [e for e in logs if e["event"] == "history.import_failed"]
        assert [url_for_display(url)] == [e["prometheus_url"] for e in failed]
        assert "PROMSECRET" not in repr(logs)


class TestProgressBar:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def test_draws_on_a_terminal_only(self) -> None:
        from quotapilot.daemon.commands.import_history import ProgressBar

        term = self.Terminal()
        bar = ProgressBar(term, width=4)
        bar.start(2)
        bar.tick()
        bar.tick()
        bar.finish()
        assert term.getvalue() == "\r[░░░░] 0/2 requests\r[██░░] 1/2 requests\r[████] 2/2 requests\n"
        pipe = io.StringIO()
        quiet = ProgressBar(pipe)
        quiet.start(3)
        quiet.tick()
        quiet.finish()
        assert pipe.getvalue() == ""
