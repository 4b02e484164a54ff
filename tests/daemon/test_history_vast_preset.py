"""The `vast` history preset against what the simulator's exporter serves.

The simulator serves `/api/prometheusmetrics/quotas` with the names and labels VAST's own Grafana
dashboards query; twelve hourly scrapes of it (over HTTPS, with the simulator's CA and token)
become an OpenMetrics file, served by the in-process `query_range` stand-in, and imported with
`[history] source = "vast"`: series are matched by path to the quotas the store already knows."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from core_helpers import TWO_TENANTS

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.history.importer import import_history
from quotapilot.daemon.history.local import OpenMetricsServer
from quotapilot.daemon.settings import load_settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.forecasting.types import Observation, TargetId

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


@pytest.mark.xfail(strict=True, reason="known: history imported by title before the first poll puts another "
                                       "tenant's quota under the default tenant's name, and the daemon never sees it")
class TestHistoryOfAnotherTenant:
    """With `name_label = "title"` a series is named by VMS's quota name; only when the store
    already knows a target at its path (`known.name.endswith(":" + title)`) does another tenant's
    quota get its qualified name. Imported before the daemon's first poll (the documented use:
    "an import before the first cycle is a day-one forecast"), tenant acme's `scratch` goes to a
    target named plain `scratch` — the default tenant's name — though the series carries
    `tenant_name="acme"`; the daemon then polls it as `acme:scratch`, and its history is not
    there."""

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
