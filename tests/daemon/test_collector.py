"""The VMS poller (and its writer): real vastpy over HTTPS against the built-in simulator, faults included;
sample validation against hand-made VMS answers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import vastpy
from core_helpers import InstantClock, SettingsFactory
from structlog.testing import capture_logs

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator.server import SimulatorServer
from quotapilot.daemon.vms.collector import BANDWIDTH_PROPS, VmsPoller
from quotapilot.daemon.vms.errors import VmsRefused, VmsUnavailable
from quotapilot.forecasting.planner import TIB, net_of_overcommit
from quotapilot.forecasting.types import POOL_TARGET, TargetKind


def make_collector(settings: Settings, clock: InstantClock, executor: ThreadPoolExecutor,
                   **kwargs: Any) -> VmsPoller:
    return VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor, **kwargs)


class TestPollAgainstSimulator:
    """One poll reads the cluster, every quota (paged) and the write bandwidth, over verified TLS."""

    async def test_poll_reads_every_quota_and_the_pool(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        collector = make_collector(make_settings(), clock, executor)
        clock.advance(900)  # some write history for the bandwidth query
        result = await collector.poll()
        assert result.ok, result.error
        names = {o.target.name for o in result.observations}
        assert {"cosmos7-raw", "cosmos7-processed", "cosmos7-temp", POOL_TARGET} <= names
        raw = next(o for o in result.observations if o.target.name == "cosmos7-raw")
        assert raw.target.path == "/cosmos7/raw"
        assert raw.hard_limit_bytes and raw.used_bytes > 0 and raw.used_inodes is not None
        pool = next(o for o in result.observations if o.target.kind is TargetKind.POOL)
        assert result.capacity is not None
        assert pool.hard_limit_bytes == result.capacity.usable_bytes
        assert result.capacity.used_bytes + result.capacity.free_bytes == result.capacity.usable_bytes
        assert result.ingest_bytes_per_second is not None and result.ingest_bytes_per_second >= 0
        assert result.requests == 3  # clusters, one page of quotas, bandwidth

    async def test_paging_follows_next_one_request_per_page(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        collector = make_collector(make_settings(vast={"page_size": 1}), clock, executor)
        result = await collector.poll()
        quotas = [o for o in result.observations if o.target.kind is TargetKind.QUOTA]
        assert result.ok
        assert len(quotas) == 3
        assert sim.requests["GET quotas"] == 3  # one per page of 1, never one per quota id
        assert result.requests == 1 + 3 + 1

    async def test_rates_come_from_successive_samples(
            self, make_settings: SettingsFactory, clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        collector = make_collector(make_settings(), clock, executor)
        first = await collector.poll()
        clock.advance(600)
        second = await collector.poll()
        assert dict(first.ingest_rates) == {}
        before = {o.target.name: o.used_bytes for o in first.observations}
        for obs in second.observations:
            expected = (obs.used_bytes - before[obs.target.name]) / 600
            assert expected == pytest.approx(second.ingest_rates[obs.target.name])
        assert second.ingest_rates["cosmos7-raw"] > 0

    async def test_system_trust_store_refuses_the_private_ca(
            self, make_settings: SettingsFactory, clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        # no ca_file: verified against the system trust store, which does not know the simulator's CA
        collector = make_collector(make_settings(cluster={"ca_file": None}), clock, executor)
        result = await collector.poll()
        assert not result.ok
        assert result.error is not None and result.error.startswith("tls")
        assert clock.slept == []  # a certificate problem is not retried

    async def test_insecure_mode_is_explicit_and_warned(
            self, make_settings: SettingsFactory, clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        collector = make_collector(make_settings(cluster={"ca_file": None, "insecure_skip_tls_verify": True}),
                                   clock, executor)
        with capture_logs() as logs:
            collector.log_tls_mode()
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["tls.verification_disabled"]
        assert (await collector.poll()).ok


class TestFaults:
    """Retries with backoff honouring Retry-After; permanent errors are not retried."""

    async def test_429_retry_after_is_honoured(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        sim.faults.add("rate_limit", count=2, retry_after=7, path="/quotas/")
        collector = make_collector(make_settings(), clock, executor)
        result = await collector.poll()
        assert result.ok, result.error
        assert clock.slept == [7.0, 7.0]
        assert result.requests == 5

    async def test_5xx_backs_off_exponentially_with_jitter_then_fails(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        sim.faults.add("error", status=503, path="/clusters/")
        collector = make_collector(make_settings(vast={"max_retries": 3, "backoff_base_seconds": 2}),
                                   clock, executor)
        result = await collector.poll()
        assert not result.ok
        assert result.error is not None and result.error.startswith("server_error")
        assert len(clock.slept) == 3
        for attempt, delay in enumerate(clock.slept):
            assert 2 * 2**attempt * 0.5 <= delay <= 2 * 2**attempt
        assert dict(collector.poll_errors_total) == {"server_error": 1}

    async def test_a_hung_request_times_out_and_is_retried(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        sim.faults.add("timeout", count=1, seconds=2, path="/clusters/")
        collector = make_collector(make_settings(vast={"request_timeout_seconds": 0.2}), clock, executor)
        result = await collector.poll()  # the first request waits 0.2 s of real time for its timeout
        assert result.ok, result.error
        # retried (once; more if the retry's own TLS handshake takes over 0.2 s on a loaded machine,
        # as it did once in a full parallel run on 2026-12-05: the count is the machine's, not ours)
        assert 1 <= len(clock.slept) <= 3, clock.slept

    async def test_shutdown_cuts_retries_short(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        sim.faults.add("error", status=503, path="/clusters/")
        stopping = asyncio.Event()
        stopping.set()
        collector = make_collector(make_settings(vast={"max_retries": 5}), clock, executor, stopping=stopping)
        result = await collector.poll()
        assert result.error is not None and result.error.startswith("server_error")
        assert clock.slept == []
        assert result.requests == 1

    async def test_malformed_json_is_retried(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        sim.faults.add("malformed", count=1, path="/quotas/")
        collector = make_collector(make_settings(), clock, executor)
        result = await collector.poll()
        assert result.ok, result.error
        assert len(clock.slept) == 1

    async def test_truncated_page_is_noticed_and_refetched(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        sim.faults.add("truncated_page", count=1, path="/quotas/")
        collector = make_collector(make_settings(), clock, executor)
        result = await collector.poll()
        assert result.ok, result.error
        assert sum(1 for o in result.observations if o.target.kind is TargetKind.QUOTA) == 3
        assert sim.requests["GET quotas"] == 2

    async def test_expired_token_is_permanent(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        collector = make_collector(make_settings(), clock, executor)
        sim.expire_token()
        result = await collector.poll()
        assert result.error is not None and result.error.startswith("auth")
        assert clock.slept == []
        with pytest.raises(VmsRefused) as info:
            await collector.writer.get_quota(1)
        assert info.value.status == 401

    async def test_rotated_token_file_is_reloaded_after_a_401(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor, tmp_path: Path) -> None:
        token_file = tmp_path / "vms.token"
        token_file.write_text(sim.token + "\n")
        collector = make_collector(make_settings(cluster={"token": None, "token_file": str(token_file)}),
                                   clock, executor)
        assert (await collector.poll()).ok
        token_file.write_text(sim.expire_token() + "\n")  # VMS rotated it, and so did the file
        with capture_logs() as logs:
            result = await collector.poll()
        assert result.ok, result.error
        assert [e["event"] for e in logs] == ["credentials.reloaded"]
        sim.expire_token()  # this time nobody updates the file
        result = await collector.poll()
        assert result.error is not None and result.error.startswith("auth")

    async def test_unreachable_vms_is_temporary(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        collector = make_collector(make_settings(vast={"max_retries": 1}), clock, executor)
        await sim.stop()
        with pytest.raises(VmsUnavailable) as info:
            await collector.writer.list_quotas()
        assert info.value.reason == "connection"


class TestActuatorCalls:
    """The read/write calls the actuator and the API use, against the simulator."""

    async def test_get_patch_create_list(
            self, make_settings: SettingsFactory, clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        collector = make_collector(make_settings(), clock, executor)
        raw = (await collector.writer.list_quotas(path="/cosmos7/raw"))[0]
        patched = await collector.writer.patch_quota(raw["id"], hard_limit=raw["hard_limit"] + 2**40,
                                              soft_limit=raw["soft_limit"] + 2**40)
        assert raw["hard_limit"] + 2**40 == patched["hard_limit"]
        assert patched["hard_limit"] == (await collector.writer.get_quota(raw["id"]))["hard_limit"]
        policy = await collector.writer.find_view_policy("default")
        assert policy is not None
        assert await collector.writer.find_view_policy("no-such-policy") is None
        view = await collector.writer.create_view("/cosmos7/new", "cosmos7-new", policy["id"], ["NFS"])
        assert view["path"] == "/cosmos7/new"
        assert "/cosmos7/new" in {v["path"] for v in await collector.writer.list_views()}
        requests = collector.requests_made
        found = await collector.writer.list_views(path="/cosmos7/new")
        assert [v["path"] for v in found] == ["/cosmos7/new"]
        assert collector.requests_made == requests + 1  # filtered by the VMS: one page
        quota = await collector.writer.create_quota("cosmos7-new", "/cosmos7/new", 10 * 2**40, 9 * 2**40)
        assert quota["hard_limit"] == 10 * 2**40
        with pytest.raises(VmsRefused):
            await collector.writer.get_quota(999_999)


# ------------------------------------------------------------------------------ validation
class FakeVms:
    """Answers like vastpy would, from canned records (for validation rules)."""

    def __init__(self) -> None:
        self.quotas: list[dict[str, Any]] = []
        self.cluster: dict[str, Any] = {"usable_capacity_bytes": 1000 * 2**40,
                                        "free_usable_capacity": 600 * 2**40, "state": "ONLINE"}
        self.bandwidth_status: int | None = None
        """When set, the bandwidth query fails with this HTTP status."""
        self.next_link_pages: int | None = None
        """When set, `next` is null from this page on, whatever `count` says (a VMS or a proxy
        that drops the link)."""
        self.created_per_page = 0
        """Quotas created (newest last) after every page of quotas served: a busy cluster."""
        self.created = 0

    def __getitem__(self, resource: str) -> FakeResource:
        return FakeResource(self, resource)


class FakeResource:
    def __init__(self, vms: FakeVms, resource: str) -> None:
        self.vms, self.resource = vms, resource

    def get(self, **params: Any) -> Any:
        if self.resource == "clusters":
            return [self.vms.cluster]
        if self.resource == "quotas":
            quotas, page, size = self.vms.quotas, params["page"], params["page_size"]
            more = page * size < len(quotas) and (self.vms.next_link_pages is None or page < self.vms.next_link_pages)
            body = {"count": len(quotas), "next": f"?page={page + 1}" if more else None, "previous": None,
                    "results": quotas[(page - 1) * size: page * size]}
            for _ in range(self.vms.created_per_page):
                self.vms.created += 1
                quotas.append(quota(f"job-{self.vms.created}"))
            return body
        if self.vms.bandwidth_status is not None:
            raise vastpy.RESTFailure("GET", self.resource, None, self.vms.bandwidth_status, b"no analytics")
        return {"prop_list": ["timestamp", "object_id", BANDWIDTH_PROPS[0]],
                "data": [["2026-01-01T00:00:00Z", 1, 5.0], ["2026-01-01T00:00:10Z", 1, 7.5]]}

    def patch(self, **changes: Any) -> Any:
        """`quotas/<id>` PATCHed (the writer's call): VMS applies it."""
        quota_id = int(self.resource.split("/")[1])
        record = next(q for q in self.vms.quotas if q["id"] == quota_id)
        record.update(changes)
        return dict(record)


_ids = itertools.count(1)
_id_of: dict[str, int] = {}
"""A quota keeps its VMS id from poll to poll (a new id under the same name is a new quota)."""


def quota(name: str, **fields: Any) -> dict[str, Any]:
    record = {"id": _id_of.setdefault(name, next(_ids)), "name": name, "path": f"/{name}", "used_capacity": 50 * 2**40,
              "hard_limit": 100 * 2**40, "soft_limit": 90 * 2**40, "used_inodes": 10, "hard_limit_inodes": 1000,
              "state": "OK"}
    record.update(fields)
    return record


@pytest.fixture
async def fake(make_settings: SettingsFactory, clock: InstantClock,
               executor: ThreadPoolExecutor) -> AsyncIterator[tuple[FakeVms, VmsPoller]]:
    vms = FakeVms()
    collector = make_collector(make_settings(), clock, executor, client_factory=lambda *_: vms)
    yield vms, collector


class TestValidation:
    """Malformed or implausible samples are dropped, counted and logged once per transition."""

    @pytest.mark.parametrize(("fields", "reason"), [
        ({"used_capacity": -1}, "negative"),
        ({"hard_limit": 10 * 2**40}, "implausible"),  # 50 TiB used: a wrong record, not an over-run
        ({"used_capacity": "12"}, "malformed"),
        ({"used_capacity": True}, "malformed"),
        ({"used_capacity": None}, "malformed"),
        ({"path": None}, "malformed"),
        ({"soft_limit": 200 * 2**40}, "implausible"),
        # beyond the schema's int64: the store stage failed on it (OverflowError) after validation
        ({"used_capacity": 10**19, "hard_limit": 2 * 10**19}, "malformed"),
        ({"used_capacity": 1e19, "hard_limit": 2e19}, "malformed"),
        ({"hard_limit_inodes": 2**63}, "malformed"),
    ])
    async def test_bad_sample_is_dropped(self, fake: tuple[FakeVms, VmsPoller], fields: dict[str, Any],
                                         reason: str) -> None:
        vms, collector = fake
        vms.quotas = [quota("good"), quota("bad", **fields)]
        result = await collector.poll()
        assert result.ok
        assert {"good", POOL_TARGET} == {o.target.name for o in result.observations}
        assert [("bad", reason)] == [(d.target, d.reason) for d in result.dropped]
        assert {reason: 1} == dict(collector.dropped_total)

    async def test_a_repeat_from_a_page_shift_is_not_a_bad_sample(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        vms, collector = fake
        vms.quotas = [quota("a", id=1), quota("b", id=2), quota("b", id=2)]
        result = await collector.poll()
        assert list(result.dropped) == []
        assert {"a", "b", POOL_TARGET} == {o.target.name for o in result.observations}
        vms.quotas = [quota("a", id=1), quota("a", id=3)]  # the same name twice: VMS is confused
        assert [(d.target, d.reason) for d in (await collector.poll()).dropped] == [("a", "malformed")]

    async def test_entries_that_are_no_record_are_counted(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """A listing with `null` or a string among its records: they vanished, uncounted and unlogged."""
        vms, collector = fake
        vms.quotas = [quota("a"), None, "junk"]  # type: ignore[list-item]  # what a confused VMS sends
        result = await collector.poll()
        assert {"a", POOL_TARGET} == {o.target.name for o in result.observations}
        assert [(d.target, d.reason) for d in result.dropped] == [("entry:2", "malformed"), ("entry:3", "malformed")]
        assert dict(collector.dropped_total) == {"malformed": 2}

    async def test_bandwidth_is_the_latest_sample(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        _, collector = fake
        assert (await collector.poll()).ingest_bytes_per_second == 7.5

    async def test_bandwidth_failure_logged_once_per_transition(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """A failing bandwidth query does not fail the poll; it logs once when it starts failing
        (again when it fails differently) and once when it recovers."""
        vms, collector = fake
        with capture_logs() as logs:
            vms.bandwidth_status = 503
            for _ in range(3):
                result = await collector.poll()
                assert result.ok and result.ingest_bytes_per_second is None
            vms.bandwidth_status = 403
            await collector.poll()
            vms.bandwidth_status = None
            assert (await collector.poll()).ingest_bytes_per_second == 7.5
            await collector.poll()
        events = [(e["event"], e.get("error"), e.get("failures"))
                  for e in logs if e["event"].startswith("bandwidth.")]
        assert events == [("bandwidth.failed", "server_error", None), ("bandwidth.failed", "auth", None),
                          ("bandwidth.recovered", None, 4)]

    async def test_drop_logged_once_per_transition(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        vms, collector = fake
        with capture_logs() as logs:
            vms.quotas = [quota("q", used_capacity=-1)]
            for _ in range(3):
                await collector.poll()
            vms.quotas = [quota("q")]
            await collector.poll()
            await collector.poll()
        events = [(e["event"], e.get("target")) for e in logs if e["event"].startswith("sample.")]
        assert events == [("sample.dropped", "q"), ("sample.accepted", "q")]
        assert dict(collector.dropped_total) == {"negative": 3}

    async def test_counter_going_backwards_is_dropped_until_confirmed(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        vms, collector = fake
        vms.quotas = [quota("q", used_capacity=100)]
        await collector.poll()
        vms.quotas = [quota("q", used_capacity=98)]  # within the 5 % tolerance
        assert next(o.used_bytes for o in (await collector.poll()).observations if o.target.name == "q") == 98
        vms.quotas = [quota("q", used_capacity=10)]  # a glitch, or a real delete?
        first = await collector.poll()
        assert [(d.target, d.reason) for d in first.dropped] == [("q", "went_backwards")]
        second = await collector.poll()  # the same level again: a real delete
        assert list(second.dropped) == []
        assert next(o.used_bytes for o in second.observations if o.target.name == "q") == 10

    async def test_a_decline_over_two_polls_loses_one_sample(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        vms, collector = fake
        accepted = []
        for used in (1000, 1000, 500, 200, 100):  # (two first: the first alone is not confirmed)
            vms.quotas = [quota("q", used_capacity=used)]
            result = await collector.poll()
            accepted += [o.used_bytes for o in result.observations if o.target.name == "q"]
        assert accepted == [1000, 1000, 200, 100]

    async def test_vanished_quota_is_forgotten(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        vms, collector = fake
        vms.quotas = [quota("q", used_capacity=1000)]
        await collector.poll()
        vms.quotas = []
        await collector.poll()
        vms.quotas = [quota("q", used_capacity=10)]  # a new quota of the same name: no history
        result = await collector.poll()
        assert list(result.dropped) == []
        assert "q" not in result.ingest_rates

    async def test_glitch_back_to_normal_is_accepted(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        vms, collector = fake
        vms.quotas = [quota("q", used_capacity=1000)]
        await collector.poll()
        await collector.poll()
        vms.quotas = [quota("q", used_capacity=0)]
        assert len((await collector.poll()).dropped) == 1
        vms.quotas = [quota("q", used_capacity=1001)]
        result = await collector.poll()
        assert list(result.dropped) == []

    async def test_a_first_sample_is_kept_but_unconfirmed(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """Nothing to judge a target's first sample against: it is kept (stored, forecast) but
        unconfirmed — written on only once the next sample agrees. A next sample that disagrees
        replaces it, unconfirmed too (either may be the glitch); a third that agrees settles it."""
        vms, collector = fake
        unconfirmed = []
        for tib in (99.0, 70.0, 70.1, 70.2):  # of 100 TiB: a 99 % glitch first, then the truth
            used = int(tib * 2**40)
            vms.quotas = [quota("q", used_capacity=used)]
            result = await collector.poll()
            assert [o.used_bytes for o in result.observations if o.target.name == "q"] == [used]
            unconfirmed.append("q" in result.unconfirmed)
        assert unconfirmed == [True, True, False, False]

    async def test_pool_with_free_above_usable_is_dropped(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        vms, collector = fake
        vms.cluster["free_usable_capacity"] = vms.cluster["usable_capacity_bytes"] + 1
        result = await collector.poll()
        assert result.capacity is None
        assert [(d.target, d.reason) for d in result.dropped] == [(POOL_TARGET, "implausible")]


class TestQuotasWithoutAByteLimit:
    """VMS's hard limit of 0 (or null) is "no limit" (the simulator's and the history importer's
    reading too): a quota that limits only the file count, or one kept for accounting, is a quota
    to watch, not a bad sample. Dropped as `zero_limit` at every poll, it was never watched nor
    grown, and `quotapilot_samples_dropped_total{reason="zero_limit"}` read as VMS sending garbage."""

    async def test_an_inode_only_quota_is_watched(self, fake: tuple[FakeVms, VmsPoller],
                                                  clock: InstantClock) -> None:
        vms, collector = fake
        vms.quotas = [quota("files-only", hard_limit=0, soft_limit=0, used_inodes=900_000,
                            hard_limit_inodes=1_000_000)]
        kept = []
        for _ in range(3):
            clock.advance(600)
            result = await collector.poll()
            assert [(d.target, d.reason) for d in result.dropped] == []
            kept += [o for o in result.observations if o.target.name == "files-only"]
        limits = [(o.hard_limit_bytes, o.soft_limit_bytes, o.hard_limit_inodes, o.inode_utilization_ratio)
                  for o in kept]
        assert limits == [(None, None, 1_000_000, 0.9)] * 3
        assert "files-only" not in result.unconfirmed  # the second sample agreed with the first
        assert dict(collector.dropped_total) == {}

    async def test_a_quota_without_any_limit_is_watched(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        vms, collector = fake
        vms.quotas = [quota("accounting", hard_limit=None, soft_limit=None, hard_limit_inodes=0)]
        result = await collector.poll()
        (obs,) = [o for o in result.observations if o.target.name == "accounting"]
        assert (obs.used_bytes, obs.hard_limit_bytes, obs.hard_limit_inodes) == (50 * 2**40, None, None)
        assert dict(collector.dropped_total) == {}

    async def test_a_pool_of_no_capacity_is_still_dropped(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """The pool's usable capacity of 0 is no "no limit": that one is garbage."""
        vms, collector = fake
        vms.quotas = [quota("files-only", hard_limit=0)]
        vms.cluster = {"usable_capacity_bytes": 0, "free_usable_capacity": 0, "state": "ONLINE"}
        result = await collector.poll()
        assert [(d.target, d.reason) for d in result.dropped] == [(POOL_TARGET, "zero_limit")]
        assert [o.target.name for o in result.observations] == ["files-only"]
        assert dict(collector.dropped_total) == {"zero_limit": 1}


class TestContestedIds:
    """A VMS id is the actuator's handle on a quota (the re-read and the PATCH go to
    `quotas/<id>/`). When two different records claim one id, which quota it names cannot be told:
    every record of that id is dropped for that poll (`malformed`, each counted once, logged once
    per transition). Keeping the first one listed grew it by the other quota's numbers. An
    identical repeat (a page shift) is no second claimant."""

    async def test_every_record_of_a_contested_id_is_dropped(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """Both claimants of id 7 are dropped at every poll that lists them so (not only the
        second: the first was acted on), each counted, each logged once; the quota beside them
        is untouched, and both are accepted again once their ids differ."""
        vms, collector = fake
        with capture_logs() as logs:
            for _ in range(3):
                vms.quotas = [quota("a", id=7), quota("b", id=7, path="/elsewhere"), quota("c", id=9)]
                result = await collector.poll()
                assert result.ok
                assert {"c", POOL_TARGET} == {o.target.name for o in result.observations}
                assert [(d.target, d.reason) for d in result.dropped] == [("a", "malformed"), ("b", "malformed")]
            vms.quotas = [quota("a", id=7), quota("b", id=8, path="/elsewhere"), quota("c", id=9)]
            settled = await collector.poll()  # the contest is decided per poll
        assert {"a", "b", "c", POOL_TARGET} == {o.target.name for o in settled.observations}
        assert dict(collector.dropped_total) == {"malformed": 6}
        events = [(e["event"], e["target"]) for e in logs if e["event"].startswith("sample.")]
        assert events == [("sample.dropped", "a"), ("sample.dropped", "b"),
                          ("sample.accepted", "a"), ("sample.accepted", "b")]

    async def test_a_page_shift_repeat_is_no_claimant(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """The same record twice is one quota listed twice (de-duplicated, not dropped); beside a
        different record of its id, it is one claimant of two, dropped and counted once."""
        vms, collector = fake
        vms.quotas = [quota("a", id=7), quota("a", id=7), quota("c", id=9)]
        result = await collector.poll()
        assert list(result.dropped) == []
        assert {"a", "c", POOL_TARGET} == {o.target.name for o in result.observations}
        vms.quotas = [quota("a", id=7), quota("a", id=7), quota("b", id=7, path="/elsewhere"), quota("c", id=9)]
        result = await collector.poll()
        assert {"c", POOL_TARGET} == {o.target.name for o in result.observations}
        assert [(d.target, d.reason) for d in result.dropped] == [("a", "malformed"), ("b", "malformed")]
        assert dict(collector.dropped_total) == {"malformed": 2}

    async def test_a_claimant_that_is_bad_anyway_still_contests(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """The other record of the id is no sample (a negative usage): the good-looking one is
        still not known to own the id."""
        vms, collector = fake
        vms.quotas = [quota("a", id=7), quota("b", id=7, path="/elsewhere", used_capacity=-1)]
        result = await collector.poll()
        assert {POOL_TARGET} == {o.target.name for o in result.observations}
        assert [(d.target, d.reason) for d in result.dropped] == [("a", "malformed"), ("b", "negative")]


class TestIncompleteListing:
    """A listing whose pages end (no `next`) before its `count` is reached is no listing: it is
    refetched like a truncated page, and once the retries are spent the poll fails (`truncated`).
    As a good poll, the quotas it lacked vanished uncounted, and after the presence grace their
    alerts were resolved as "target removed"."""

    async def test_a_next_link_that_stops_early_fails_the_poll(
            self, make_settings: SettingsFactory, clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        """`count` says 5 and page 1 (2 quotas) comes without `next`: the poll fails `truncated`
        after the retries (no observation, no drop), and the quotas' history outlives it."""
        vms = FakeVms()
        collector = make_collector(make_settings(vast={"page_size": 2}), clock, executor,
                                   client_factory=lambda *_: vms)
        vms.quotas = [quota(f"q{i}") for i in range(5)]
        assert (await collector.poll()).ok
        vms.next_link_pages = 1  # count says 5; page 1 (2 quotas) says it is the last
        result = await collector.poll()
        assert not result.ok
        assert result.error is not None and result.error.startswith("truncated: ")
        assert (result.observations, result.dropped) == ((), ())
        assert dict(collector.poll_errors_total) == {"truncated": 1}
        assert len(clock.slept) == 3  # refetched under the retry policy (max_retries = 3)
        vms.next_link_pages = None
        clock.advance(600)
        recovered = await collector.poll()  # nothing was concluded from the short listing
        assert {f"q{i}" for i in range(5)} == {o.target.name for o in recovered.observations} - {POOL_TARGET}
        assert {f"q{i}" for i in range(5)} <= set(recovered.ingest_rates)  # their history was kept


class TestBusyCluster:
    """Review r5 defect 1: on a cluster where quotas are created faster than a listing takes,
    no listing's `count` holds still. Restarting until one did failed every poll as `truncated`
    (no data, no growth, /healthz 503); after two restarts the last listing is taken, counted."""

    async def test_a_listing_that_never_holds_still_is_a_good_poll(
            self, make_settings: SettingsFactory, clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        vms = FakeVms()
        collector = make_collector(make_settings(vast={"page_size": 2}), clock, executor,
                                   client_factory=lambda *_: vms)
        vms.quotas = [quota(f"q{i}") for i in range(5)]
        vms.created_per_page = 1
        result = await collector.poll()
        assert result.ok, result.error
        names = {o.target.name for o in result.observations} - {POOL_TARGET}
        assert {f"q{i}" for i in range(5)} <= names
        assert (dict(collector.poll_errors_total), collector.listings_unsettled, clock.slept) == ({}, 1, [])


class TestJumps:
    """A rise beyond what the target's own rates make plausible is held back (`unconfirmed_jump`)
    until the next sample agrees: one bad reading never becomes truth, nor a rate."""

    TIB = 2**40

    async def poll_q(self, vms: FakeVms, collector: VmsPoller, clock: InstantClock,
                     used: int) -> tuple[int | None, str | None, float | None]:
        """One poll 10 minutes after the last: (the accepted `used` of q or None, the drop reason
        or None, q's ingest rate or None)."""
        clock.advance(600)
        vms.quotas = [quota("q", used_capacity=used)]
        result = await collector.poll()
        accepted = next((o.used_bytes for o in result.observations if o.target.name == "q"), None)
        reason = next((d.reason for d in result.dropped if d.target == "q"), None)
        return accepted, reason, result.ingest_rates.get("q")

    async def steady(self, vms: FakeVms, collector: VmsPoller, clock: InstantClock, polls: int = 6) -> int:
        """q grows 10 GiB a poll from 70 TiB (hard limit 100 TiB); returns the last `used`."""
        used = 70 * self.TIB
        for _ in range(polls):
            used += 10 * 2**30
            assert (used, None) == (await self.poll_q(vms, collector, clock, used))[:2]
        return used

    async def test_a_glitch_before_confirmation_is_no_rate(self, fake: tuple[FakeVms, VmsPoller],
                                                          clock: InstantClock) -> None:
        """A first sample that was a glitch (1 TiB, really 70): the rise to the true sample is no
        ingest rate — as a rate it made every later rise plausible, a 99 % glitch included."""
        vms, collector = fake
        assert (await self.poll_q(vms, collector, clock, 1 * self.TIB))[2] is None
        assert (await self.poll_q(vms, collector, clock, 70 * self.TIB))[2] is None  # unconfirmed: no rate
        used = 70 * self.TIB
        for _ in range(3):
            used += 10 * 2**30
            assert (await self.poll_q(vms, collector, clock, used))[:2] == (used, None)
        assert (await self.poll_q(vms, collector, clock, 99 * self.TIB))[:2] == (None, "unconfirmed_jump")

    async def test_one_glitch_up_is_dropped_and_the_true_sample_after_it_accepted(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        vms, collector = fake
        used = await self.steady(vms, collector, clock)
        with capture_logs() as logs:
            glitch = await self.poll_q(vms, collector, clock, 99 * self.TIB)  # 99 %, really 70 %
            true = await self.poll_q(vms, collector, clock, used + 20 * 2**30)
        assert glitch == (None, "unconfirmed_jump", None)
        accepted, reason, rate = true
        assert (used + 20 * 2**30, None) == (accepted, reason)  # not dropped as went_backwards
        assert rate == pytest.approx(20 * 2**30 / 1200)  # the rate never saw the glitch
        assert dict(collector.dropped_total) == {"unconfirmed_jump": 1}
        dropped = [e for e in logs if e["event"] == "sample.dropped"]
        assert [(e["target"], e["reason"]) for e in dropped] == [("q", "unconfirmed_jump")]

    async def test_a_jump_the_next_sample_confirms_is_accepted(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        """A real bulk copy: held back one poll, then believed."""
        vms, collector = fake
        await self.steady(vms, collector, clock)
        assert (await self.poll_q(vms, collector, clock, 90 * self.TIB))[:2] == (None, "unconfirmed_jump")
        accepted, reason, rate = await self.poll_q(vms, collector, clock, 90 * self.TIB + 2**30)
        assert (accepted, reason) == (90 * self.TIB + 2**30, None)
        assert rate is not None and rate > 0
        assert dict(collector.dropped_total) == {"unconfirmed_jump": 1}

    async def test_a_quiet_quota_that_starts_ingesting_waits_one_poll_at_most(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        vms, collector = fake
        used = 10 * self.TIB
        for _ in range(4):  # quiet: no rate at all
            assert (used, None) == (await self.poll_q(vms, collector, clock, used))[:2]
        outcomes = []
        for _ in range(4):  # then 5 TiB a poll, 5 % of the limit each time
            used += 5 * self.TIB
            outcomes.append((await self.poll_q(vms, collector, clock, used))[:2])
        assert [(None, "unconfirmed_jump")] + [(10 * self.TIB + k * 5 * self.TIB, None) for k in (2, 3, 4)] \
            == outcomes

    async def test_a_glitch_then_another_value_needs_its_own_confirmation(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        vms, collector = fake
        await self.steady(vms, collector, clock)
        assert (await self.poll_q(vms, collector, clock, 99 * self.TIB))[1] == "unconfirmed_jump"
        assert (await self.poll_q(vms, collector, clock, 85 * self.TIB))[1] == "unconfirmed_jump"
        assert (await self.poll_q(vms, collector, clock, 85 * self.TIB + 2**30))[:2] == (85 * self.TIB + 2**30, None)


class TestLimitChanges:
    """A hard limit (bytes or inodes) that moved without a write of ours is VMS's word alone: the
    sample is kept but held for one poll — a one-poll glitch (1 GiB for a 100 TiB quota, then
    100 TiB again) paged on-call on its single sample. Never two polls in a row: the sample after
    a held one is believed, whatever its limit (the return from a glitch, the repeat of a lasting
    change, the next step of a limit that moves at every poll). A limit we wrote ourselves
    settles at once (after a growth, its alerts resolve on the first read)."""

    TIB = 2**40

    def limit(self, tib: int) -> dict[str, Any]:
        """A hard limit of `tib` TiB (its soft limit at 90 %)."""
        return {"hard_limit": tib * self.TIB, "soft_limit": tib * self.TIB * 9 // 10}

    async def unconfirmed(self, vms: FakeVms, collector: VmsPoller, clock: InstantClock,
                          samples: list[dict[str, Any]]) -> list[bool]:
        """Poll q once per entry of `samples` (its fields), 10 minutes apart: whether q was
        accepted unconfirmed at each poll (every sample is accepted)."""
        flags = []
        for fields in samples:
            clock.advance(600)
            vms.quotas = [quota("q", **fields)]
            result = await collector.poll()
            assert [o.target.name for o in result.observations if o.target.name == "q"] == ["q"]
            flags.append("q" in result.unconfirmed)
        return flags

    async def test_a_one_poll_limit_glitch_is_held_and_the_return_believed(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        """The glitch waits; the limit before it, read again, is believed at once."""
        vms, collector = fake
        limits = [100, 100, 100, 60, 100, 100]  # TiB; 50 TiB used
        flags = await self.unconfirmed(vms, collector, clock, [self.limit(n) for n in limits])
        assert flags == [True, False, False, True, False, False]

    async def test_a_changed_limit_the_next_sample_repeats_is_confirmed(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        vms, collector = fake
        limits = [100, 100, 60, 60, 60]
        flags = await self.unconfirmed(vms, collector, clock, [self.limit(n) for n in limits])
        assert flags == [True, False, True, False, False]

    async def test_a_byte_limit_set_or_removed_is_a_limit_change(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        """0 is "no limit": an operator setting one on a quota without, or removing it, moves it."""
        vms, collector = fake
        limits = [0, 0, 100, 100, 0, 0]
        flags = await self.unconfirmed(vms, collector, clock, [self.limit(n) for n in limits])
        assert flags == [True, False, True, False, True, False]

    async def test_an_inode_limit_glitch_too(self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        vms, collector = fake
        limits = [1000, 1000, 20, 1000, 1000]
        flags = await self.unconfirmed(vms, collector, clock, [{"hard_limit_inodes": n} for n in limits])
        assert flags == [True, False, True, False, False]

    async def test_a_limit_that_moves_every_poll_is_believed_every_other_poll(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        """An operator's script stepping the limit at every poll: held for good, it never paged
        nor was audited. Every other sample is believed (each such move an external change)."""
        vms, collector = fake
        limits = [100, 100, 101, 102, 103, 104, 104]
        flags = await self.unconfirmed(vms, collector, clock, [self.limit(n) for n in limits])
        assert flags == [True, False, True, False, True, False, False]

    async def test_a_first_sample_then_a_moving_limit_is_believed_within_two_polls(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        """The first-sample rule judges usage only: a limit moving from the first sample on is
        held once, as at any other time."""
        vms, collector = fake
        flags = await self.unconfirmed(vms, collector, clock, [self.limit(n) for n in (100, 101, 102, 103)])
        assert flags == [True, True, False, True]

    async def test_a_limit_we_wrote_settles_at_once(self, fake: tuple[FakeVms, VmsPoller],
                                                    clock: InstantClock) -> None:
        """Our growth, read back: confirmed at once. Someone else's change right after: not."""
        vms, collector = fake
        assert await self.unconfirmed(vms, collector, clock, [{}, {}]) == [True, False]
        quota_id = vms.quotas[0]["id"]
        await collector.writer.patch_quota(quota_id, hard_limit=150 * self.TIB, soft_limit=135 * self.TIB,
                                           hard_limit_inodes=2000)
        ours = {"hard_limit": 150 * self.TIB, "soft_limit": 135 * self.TIB, "hard_limit_inodes": 2000}
        assert vms.quotas[0]["hard_limit"] == 150 * self.TIB  # VMS applied it
        operator = {**ours, "hard_limit": 160 * self.TIB}
        flags = await self.unconfirmed(vms, collector, clock, [ours, ours, operator, operator])
        assert flags == [False, False, True, False]

    async def test_a_limit_vms_said_once_is_logged_once(self, fake: tuple[FakeVms, VmsPoller],
                                                         clock: InstantClock) -> None:
        """A one-poll glitch leaves no audit row and pages nobody: one `sample.unconfirmed` line
        (not one per unconfirmed poll) says VMS answered a strange limit. A limit we wrote logs
        nothing."""
        vms, collector = fake
        with capture_logs() as logs:
            await self.unconfirmed(vms, collector, clock, [self.limit(n) for n in (100, 100, 60, 100, 100)])
            await collector.writer.patch_quota(vms.quotas[0]["id"], hard_limit=150 * self.TIB)
            await self.unconfirmed(vms, collector, clock, [{"hard_limit": 150 * self.TIB}])
            await self.unconfirmed(vms, collector, clock, [{"hard_limit": 150 * self.TIB, "hard_limit_inodes": 20}])
        events = [(e["log_level"], e["target"], e["reason"], e["old_hard"], e["new_hard"], e["old_hard_inodes"],
                   e["new_hard_inodes"]) for e in logs if e["event"] == "sample.unconfirmed"]
        assert events == [("warning", "q", "limit_changed", 100 * self.TIB, 60 * self.TIB, 1000, 1000),
                          ("warning", "q", "limit_changed", 150 * self.TIB, 150 * self.TIB, 1000, 20)]

    async def test_the_pools_usable_capacity_too(self, fake: tuple[FakeVms, VmsPoller],
                                                 clock: InstantClock) -> None:
        """The pool's limit is its usable capacity: one answer of 400 TiB for 1000 waits too."""
        vms, collector = fake
        vms.quotas = [quota("q")]
        flags = []
        for usable in (1000, 1000, 400, 1000, 1000):
            clock.advance(600)
            vms.cluster.update(usable_capacity_bytes=usable * self.TIB,
                               free_usable_capacity=(usable - 400) * self.TIB)
            result = await collector.poll()
            assert result.capacity is not None
            flags.append(POOL_TARGET in result.unconfirmed)
        assert flags == [True, False, True, False, False]


class TestUsageAfterALimitChange:
    """A limit-only change leaves usage judging as it was: the sample after an operator's change
    is judged by the rules with history (`went_backwards`, `jumped` with the target's recent
    rates), not by the first-sample rule's floors. Sent down the no-history path, a 99 % usage
    glitch in the poll after an operator raised a limit was kept (stored, forecast, exported as
    `quotapilot_target_used_bytes`, seen by the pre-flight API) instead of being dropped as
    `unconfirmed_jump`, as it is at any other time."""

    TIB = 2**40

    async def poll_q(self, vms: FakeVms, collector: VmsPoller, clock: InstantClock, used: int,
                     hard: int) -> tuple[int | None, str | None]:
        """One poll 10 minutes after the last: (q's accepted `used` or None, its drop reason or None)."""
        clock.advance(600)
        vms.quotas = [quota("q", used_capacity=used, hard_limit=hard, soft_limit=hard * 9 // 10)]
        result = await collector.poll()
        accepted = next((o.used_bytes for o in result.observations if o.target.name == "q"), None)
        reason = next((d.reason for d in result.dropped if d.target == "q"), None)
        return accepted, reason

    async def test_a_usage_glitch_right_after_an_operators_limit_change_is_dropped(
            self, fake: tuple[FakeVms, VmsPoller], clock: InstantClock) -> None:
        vms, collector = fake
        used = 70 * self.TIB
        for _ in range(6):  # 10 GiB a poll, 100 TiB hard limit
            used += 10 * 2**30
            assert (await self.poll_q(vms, collector, clock, used, 100 * self.TIB)) == (used, None)
        used += 10 * 2**30
        assert (await self.poll_q(vms, collector, clock, used, 120 * self.TIB)) == (used, None)  # an operator's raise
        # the same glitch a poll earlier is dropped (TestJumps); so it is here
        assert (await self.poll_q(vms, collector, clock, 99 * self.TIB, 120 * self.TIB)) == (None, "unconfirmed_jump")


class TestNoCluster:
    """An empty `GET /clusters/` is a failed poll (`no_cluster`), not a good poll without a pool:
    every growth needs the cluster's capacity, so /healthz must not stay green while none can act."""

    @staticmethod
    def answer_no_cluster(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """The simulator's `GET /clusters/` answers an empty list (its `empty` fault, every time)."""
        sim.faults.add("empty", path="clusters")

    async def test_the_poll_fails_with_no_cluster(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
        collector = make_collector(make_settings(), clock, executor)
        self.answer_no_cluster(sim, monkeypatch)
        result = await collector.poll()
        assert not result.ok
        assert result.error is not None and result.error.startswith("no_cluster: ")
        assert (result.observations, result.dropped) == ((), ())
        assert dict(collector.poll_errors_total) == {"no_cluster": 1}

    async def test_healthz_turns_red_when_the_cluster_stays_missing(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            monkeypatch: pytest.MonkeyPatch) -> None:
        settings = make_settings()
        async with Daemon(settings, clock) as daemon:
            await daemon.poll_once("sim")
            assert daemon.health()[0]
            self.answer_no_cluster(sim, monkeypatch)
            for _ in range(int(settings.poll.stale_after_intervals) + 1):
                clock.advance(settings.poll.interval_seconds)
                await daemon.poll_once("sim")
            healthy, report = daemon.health()
        assert not healthy
        assert report["clusters"]["sim"]["last_error"].startswith("no_cluster: ")


class TestInodeJumps:
    """Inode limits are grown too: a jump in `used_inodes` needs the same confirmation."""

    async def poll_q(self, vms: FakeVms, collector: VmsPoller, clock: InstantClock,
                     inodes: int) -> tuple[int | None, str | None]:
        clock.advance(600)
        vms.quotas = [quota("q", used_inodes=inodes, hard_limit_inodes=1_000_000)]
        result = await collector.poll()
        accepted = next((o.used_inodes for o in result.observations if o.target.name == "q"), None)
        return accepted, next((d.reason for d in result.dropped if d.target == "q"), None)

    async def test_one_inode_glitch_is_held_back(self, fake: tuple[FakeVms, VmsPoller],
                                                 clock: InstantClock) -> None:
        vms, collector = fake
        outcomes = [await self.poll_q(vms, collector, clock, inodes)
                    for inodes in (500_000, 501_000, 502_000, 990_000, 503_000)]
        assert outcomes == [(500_000, None), (501_000, None), (502_000, None), (None, "unconfirmed_jump"),
                (503_000, None)]

    async def test_a_confirmed_inode_jump_is_accepted(self, fake: tuple[FakeVms, VmsPoller],
                                                      clock: InstantClock) -> None:
        vms, collector = fake
        outcomes = [await self.poll_q(vms, collector, clock, inodes)
                    for inodes in (500_000, 501_000, 900_000, 900_500)]
        assert outcomes == [(500_000, None), (501_000, None), (None, "unconfirmed_jump"), (900_500, None)]


class TestUnusedPromises:
    async def test_each_listed_quota_counts_its_own_unused_limit(self, fake: tuple[FakeVms, VmsPoller]) -> None:
        """a 80 of 100 TiB, b 110 of 100 (a little over its limit), c 0 of 400: 420 TiB promised and
        unused. VMS's totals say 600 − 190 = 410 (b's 10 over netted against c's unused 400), and
        the reserve guard saw room the quotas had promised (review r15)."""
        vms, collector = fake
        vms.quotas = [quota("a", used_capacity=80 * TIB, hard_limit=100 * TIB),
                      quota("b", used_capacity=110 * TIB, hard_limit=100 * TIB),
                      quota("c", used_capacity=0, hard_limit=400 * TIB, soft_limit=360 * TIB)]
        vms.cluster.update({"usable_capacity_bytes": 1000 * TIB, "free_usable_capacity": 600 * TIB,
                            "quotas_allocated_capacity": 600 * TIB, "quotas_used_capacity": 190 * TIB})
        result = await collector.poll()
        assert result.capacity is not None and result.capacity.listed_unused_bytes == 420 * TIB
        seen = net_of_overcommit(result.capacity)
        assert seen is not None and seen.free_bytes == 180 * TIB
