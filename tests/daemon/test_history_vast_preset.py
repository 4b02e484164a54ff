"""The `vast` history preset against what the simulator's exporter serves.

The simulator serves `/api/prometheusmetrics/quotas` with the names and labels VAST's own Grafana
dashboards query; twelve hourly scrapes of it (over HTTPS, with the simulator's CA and token)
become an OpenMetrics file, served by the in-process `query_range` stand-in, and imported with
`[history] source = "vast"`: series are matched by path to the quotas the store already knows."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from core_helpers import TWO_TENANTS

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.history.importer import import_history
from quotapilot.daemon.history.local import OpenMetricsServer
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.simulator.scenario import Scenario
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.vms.collector import VmsPoller
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

HOUR = 3600.0
FAMILIES = ("vast_quota_used_capacity", "vast_quota_hard_limit", "vast_quota_used_inodes",
            "vast_quota_hard_limit_inodes")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObservationStore]:
    db = Database(tmp_path / "state.db")
    try:
        yield ObservationStore(db, raw_retention_seconds=3 * 86400.0, hourly_retention_seconds=70 * 86400.0)
    finally:
        db.close()


async def scrape_hourly(sim: SimulatorServer, clock: VirtualClock, hours: int) -> tuple[str, dict[str, list[int]]]:
    """`hours` scrapes an hour apart as one OpenMetrics text (each sample stamped with its scrape
    time), and what the simulator's engine said each quota used at each scrape."""
    samples: dict[str, list[str]] = {name: [] for name in FAMILIES}
    truth: dict[str, list[int]] = {}
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    async with aiohttp.ClientSession(headers={"Authorization": f"Api-Token {sim.token}"}) as session:
        for _ in range(hours):
            async with session.get(f"https://{sim.address}/api/prometheusmetrics/quotas", ssl=context) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await response.text()
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    samples[line.split("{", 1)[0]].append(f"{line} {clock.now():.3f}")
            for record in sim.engine.quotas.values():
                truth.setdefault(record.path, []).append(int(sim.engine.quota_usage(record)[0]))
            await clock.advance_and_settle(HOUR)
    # OpenMetrics wants each series' samples together: a stable sort by series keeps time order
    lines = [part for name in FAMILIES
             for part in (f"# TYPE {name} gauge", *sorted(samples[name], key=lambda line: line.split("} ")[0]))]
    return "\n".join([*lines, "# EOF"]) + "\n", truth


class TestVastPreset:
    async def test_imports_the_simulators_exporter_by_path(self, tmp_path: Path, store: ObservationStore) -> None:
        clock = VirtualClock()
        start = clock.now()
        async with SimulatorServer("cosmos7", clock=clock, seed=0, port=0, state_dir=tmp_path / "sim") as sim:
            text, truth = await scrape_hourly(sim, clock, hours=12)
            cluster = sim.scenario.cluster.name
            records = sorted(sim.engine.quotas.values(), key=lambda r: r.path)
        assert 'title="cosmos7-raw"' in text and 'path="/cosmos7/raw"' in text
        source = tmp_path / "vast.om"
        source.write_text(text)
        end = start + 11 * HOUR
        async with OpenMetricsServer(source) as server:
            settings = load_settings(None, clusters=[{"name": "our-name", "address": "vms.invalid", "token": "t"}],
                                     store={"path": str(tmp_path / "state.db")},
                                     history={"prometheus_url": server.url, "source": "vast", "max_retries": 0,
                                              "step_seconds": HOUR})
            cold = await import_history(settings, store, now=end, since_seconds=12 * HOUR, dry_run=True)
            # nothing known yet: the preset has no name label, so every series waits for a poll
            assert (cold.targets_matched, len(cold.unmatched_series)) == ([], 3)
            known = [TargetId("our-name", r.name, r.path) for r in records]
            store.write_poll([Observation(target=t, t=end + HOUR, used_bytes=1, hard_limit_bytes=None) for t in known])
            summary = await import_history(settings, store, now=end, since_seconds=12 * HOUR)
        assert sorted(summary.targets_matched) == sorted(t.key for t in known)
        assert summary.unmatched_series == []
        for target in known:
            imported = store.history(target, since=start)[:-1]  # the last one is the poll written above
            assert [(t, used) for t, used, _ in imported] == [
                (start + k * HOUR, used) for k, used in enumerate(truth[target.path])], target.key
            assert all(inodes is not None for _, _, inodes in imported)
        assert cluster != "our-name"  # one [[clusters]] entry: its series, whatever VAST calls itself

    async def test_titles_of_two_tenants_go_to_each_tenants_target(self, tmp_path: Path,
                                                                    store: ObservationStore) -> None:
        """With `name_label = "title"` (the VMS quota name), a series of another tenant's quota
        goes to the target the store knows at its path (`acme:scratch`), not to the default
        tenant's quota of the same name."""
        clock = VirtualClock()
        start = clock.now()
        async with SimulatorServer(TWO_TENANTS, clock=clock, seed=0, port=0, state_dir=tmp_path / "sim") as sim:
            text, truth = await scrape_hourly(sim, clock, hours=4)
        assert 'tenant_name="default",title="scratch"' in text and 'tenant_name="acme",title="scratch"' in text
        source = tmp_path / "vast.om"
        source.write_text(text)
        end = start + 3 * HOUR
        known = [TargetId("sim", "scratch", "/default/scratch"), TargetId("sim", "acme:scratch", "/acme/scratch")]
        store.write_poll([Observation(target=t, t=end + HOUR, used_bytes=1, hard_limit_bytes=None) for t in known])
        async with OpenMetricsServer(source) as server:
            settings = load_settings(None, clusters=[{"name": "sim", "address": "vms.invalid", "token": "t"}],
                                     store={"path": str(tmp_path / "state.db")},
                                     history={"prometheus_url": server.url, "source": "vast", "max_retries": 0,
                                              "step_seconds": HOUR, "name_label": "title"})
            summary = await import_history(settings, store, now=end, since_seconds=4 * HOUR)
        assert sorted(summary.targets_matched) == ["sim/acme:scratch", "sim/scratch"]
        for target in known:
            imported = store.history(target, since=start)[:-1]
            assert [used for _, used, _ in imported] == truth[target.path], target.key


class TestHistoryOfAnotherTenant:
    """With `name_label = "title"` a series is named by VMS's quota name, qualified by the series'
    tenant (`tenant_name`) as the daemon's poll qualifies it (`QuotaNaming`). Imported before the
    first poll (the documented use: "an import before the first cycle is a day-one forecast"),
    tenant acme's `scratch` goes to `acme:scratch`, where the poll then looks for it. It used to
    go to plain `scratch`, the default tenant's name: acme's usage filled the default tenant's
    quota's history, and acme's quota had none."""

    async def test_titles_imported_before_the_first_poll_keep_their_tenant(
            self, tmp_path: Path, store: ObservationStore) -> None:
        clock = VirtualClock()
        start = clock.now()
        async with SimulatorServer(TWO_TENANTS, clock=clock, seed=0, port=0, state_dir=tmp_path / "sim") as sim:
            text, _ = await scrape_hourly(sim, clock, hours=4)
        assert 'tenant_name="acme",title="scratch"' in text
        source = tmp_path / "vast.om"
        source.write_text(text)
        async with OpenMetricsServer(source) as server:
            settings = load_settings(None, clusters=[{"name": "sim", "address": "vms.invalid", "token": "t"}],
                                     store={"path": str(tmp_path / "state.db")},
                                     history={"prometheus_url": server.url, "source": "vast", "max_retries": 0,
                                              "step_seconds": HOUR, "name_label": "title"})
            summary = await import_history(settings, store, now=start + 3 * HOUR, since_seconds=4 * HOUR)
        assert sorted(summary.targets_matched) == ["sim/acme:scratch", "sim/scratch"]

    async def test_the_first_poll_finds_each_tenants_history_under_its_name(
            self, tmp_path: Path, store: ObservationStore) -> None:
        """End to end: import before the first poll, then poll the simulator as the daemon does;
        every quota the poll names finds its own history there (acme's under `acme:scratch`, the
        default tenant's `scratch` not mixed with acme's)."""
        polled, imported, truth = await import_then_poll(TWO_TENANTS, tmp_path, store)
        assert {t.name: t.path for t in polled} == {"scratch": "/default/scratch", "acme:scratch": "/acme/scratch"}
        assert sorted(t.key for t in polled) == imported
        for target in polled:
            assert truth[target.path] == [used for _, used, _ in store.history(target, since=0)[:-1]], target.key

    async def test_a_configured_tenant_is_home(self, tmp_path: Path, store: ObservationStore) -> None:
        """With `tenant = "acme"` the poll lists acme's quotas under their own names: acme's series
        is imported as plain `scratch`, the default tenant's (which this daemon never polls) as
        `default:scratch`, not into acme's."""
        polled, imported, truth = await import_then_poll(TWO_TENANTS, tmp_path, store, tenant="acme")
        assert [(t.name, t.path) for t in polled] == [("scratch", "/acme/scratch")]
        assert imported == ["sim/default:scratch", "sim/scratch"]
        (target,) = polled
        assert truth["/acme/scratch"] == [used for _, used, _ in store.history(target, since=0)[:-1]]


class TestHistoryOfOneTenant:
    """A single-tenant cluster (every series of the default tenant) is named as before the tenant
    label was read: by `title`, unqualified, as the poll names it."""

    async def test_titles_of_the_default_tenant_keep_their_names(self, tmp_path: Path,
                                                                  store: ObservationStore) -> None:
        polled, imported, truth = await import_then_poll("cosmos7", tmp_path, store)
        assert polled and all(":" not in t.name for t in polled)
        assert sorted(t.key for t in polled) == imported
        for target in polled:
            assert truth[target.path] == [used for _, used, _ in store.history(target, since=0)[:-1]], target.key


async def import_then_poll(scenario: Scenario | str, tmp_path: Path, store: ObservationStore, *,
                           tenant: str | None = None) -> tuple[list[TargetId], list[str], dict[str, list[int]]]:
    """Four hourly scrapes of the simulator's exporter imported with `name_label = "title"` before
    any poll, then one poll of the simulator as the daemon makes it: the quota targets the poll
    saw, the target keys the import matched (sorted), and each path's usage per scrape."""
    clock = VirtualClock()
    start = clock.now()
    async with SimulatorServer(scenario, clock=clock, seed=0, port=0, state_dir=tmp_path / "sim") as sim:
        text, truth = await scrape_hourly(sim, clock, hours=4)
        source = tmp_path / "vast.om"
        source.write_text(text)
        cluster: dict[str, Any] = {"name": "sim", "address": sim.address, "token": sim.token,
                                   "ca_file": str(sim.ca_file), "tenant": tenant}
        async with OpenMetricsServer(source) as server:
            settings: Settings = load_settings(
                None, clusters=[cluster], store={"path": str(tmp_path / "state.db")},
                history={"prometheus_url": server.url, "source": "vast", "max_retries": 0, "step_seconds": HOUR,
                         "name_label": "title"})
            summary = await import_history(settings, store, now=start + 3 * HOUR, since_seconds=4 * HOUR)
        with ThreadPoolExecutor(max_workers=1) as executor:
            result = await VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor).poll()
    assert result.ok, result.error
    store.write_poll(list(result.observations))
    polled = [o.target for o in result.observations if o.target.kind is TargetKind.QUOTA]
    return polled, sorted(summary.targets_matched), truth
