"""Quotas of several tenants on one VAST cluster, end to end: real vastpy over verified HTTPS
against the simulator, whose two tenants each have a quota named "scratch" (`TWO_TENANTS`).

The default tenant's quota keeps its plain name (what a single-tenant deployment always saw); the
other tenant's is `acme:scratch`, whatever other tenants create or delete; the daemon grows,
pauses, audits and exports each under its own name, and writes to VMS by the quota's id."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from core_helpers import TWO_TENANTS, InstantClock, SettingsFactory
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator.engine import QuotaRecord
from quotapilot.daemon.simulator.scenario import parse_scenario
from quotapilot.daemon.simulator.server import SimulatorServer
from quotapilot.daemon.store.actions import query_actions
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.daemon.vms.collector import VmsPoller
from quotapilot.forecasting.types import ActionStatus, TargetKind

TB = 10**12
TOKEN = "pipeline-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def sim(clock: InstantClock) -> AsyncIterator[SimulatorServer]:
    """The two-tenant cluster (in place of conftest's cosmos7: `make_settings` points at it)."""
    async with SimulatorServer(TWO_TENANTS, clock=clock, seed=0) as server:
        yield server


def scratch(sim: SimulatorServer, tenant: str) -> QuotaRecord:
    """The simulator's record of `tenant`'s quota named "scratch"."""
    return next(q for q in sim.engine.quotas.values()
                if q.name == "scratch" and sim.engine.tenants[q.tenant_id] == tenant)


def quotas(result: PollResult) -> dict[str, tuple[str, int | None]]:
    """target name -> (path, VMS id) of the quotas a poll observed."""
    return {o.target.name: (o.target.path, o.quota_id) for o in result.observations
            if o.target.kind is TargetKind.QUOTA}


class TestPoll:
    """Every tenant's quotas are observed, each under a name of its own that does not move."""

    async def test_a_name_in_two_tenants_is_two_targets(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        settings = make_settings()
        poller = VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor)
        result = await poller.poll()
        assert result.ok, result.error
        assert [(d.target, d.reason, d.detail) for d in result.dropped] == []
        assert {"scratch": ("/default/scratch", scratch(sim, "default").id),
                "acme:scratch": ("/acme/scratch", scratch(sim, "acme").id)} == quotas(result)

    async def test_names_hold_while_another_tenant_takes_and_frees_the_name(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        settings = make_settings()
        poller = VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor)
        polls = [await poller.poll()]
        beta = sim.engine.create_quota(name="scratch", path="/beta/scratch", hard_limit=10 * TB,
                                       tenant_id=sim.engine.tenant("beta"))
        clock.advance(600)
        polls.append(await poller.poll())
        sim.engine.delete_quota(beta.id)
        clock.advance(600)
        polls.append(await poller.poll())
        assert [sorted(quotas(p)) for p in polls] == [["acme:scratch", "scratch"],
                                                      ["acme:scratch", "beta:scratch", "scratch"],
                                                      ["acme:scratch", "scratch"]]
        # the same targets poll after poll: each has a rate from its previous sample
        assert {"acme:scratch", "scratch"} <= set(polls[1].ingest_rates) & set(polls[2].ingest_rates)
        assert polls[2].ingest_rates["acme:scratch"] > polls[2].ingest_rates["scratch"] > 0

    async def test_a_configured_tenant_sees_its_quotas_by_their_names(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        settings = make_settings(cluster={"tenant": "acme"})  # X-Tenant-Name: VMS lists acme's only
        poller = VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor)
        result = await poller.poll()
        assert {"scratch": ("/acme/scratch", scratch(sim, "acme").id)} == quotas(result)

    async def test_a_poll_says_which_targets_each_bare_name_may_mean(
            self, make_settings: SettingsFactory, clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        # what a name meant before other tenants' quotas were qualified (TestAnUpgradeFromBareNames)
        settings = make_settings()
        admin = VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor)
        settings = make_settings(cluster={"tenant": "acme"})
        tenant = VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor)
        expected = ({"scratch": ("scratch", "acme:scratch")}, {})
        assert expected == ((await admin.poll()).bare_names, (await tenant.poll()).bare_names)


def settings_with(make_settings: SettingsFactory, **policy: Any) -> Settings:
    return make_settings(http={"write_token": TOKEN},
                         policy={"mode": "observe", "grow_at": 0.45, "target_utilization": 0.4, **policy})


class TestDaemon:
    """Per-target policy, growth, audit, metrics and the API under the qualified name."""

    async def test_growth_writes_the_other_tenants_quota_by_its_id(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock) -> None:
        # both quotas need room; only acme's is in enforce mode, by a per-target override
        settings = settings_with(make_settings, overrides=[{"match": "acme:scratch", "mode": "enforce"}])
        async with Daemon(settings, clock) as daemon:
            await daemon.poll_once("sim")  # first samples: growth waits for the next to confirm them
            clock.advance(60)
            ctx = await daemon.poll_once("sim")
            audit = {(r["target"], r["path"], r["quota_id"]): r["status"] for r in query_actions(daemon.db)}
        grown = {a.target.name: a for a in ctx.actions}
        acme, default = scratch(sim, "acme"), scratch(sim, "default")
        assert grown["acme:scratch"].status is ActionStatus.VERIFIED
        assert grown["acme:scratch"].new_hard == acme.hard_limit > 20 * TB
        assert default.hard_limit == 20 * TB
        assert audit == {("acme:scratch", "/acme/scratch", acme.id): "verified",
                         ("scratch", "/default/scratch", default.id): "would_grow"}
        patched = [(w.quota_id, w.path) for w in sim.engine.writes.records if w.kind == "patch"]
        assert patched == [(acme.id, "/acme/scratch")]

    async def test_metrics_and_the_api_name_each_tenants_quota(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock) -> None:
        async with Daemon(settings_with(make_settings), clock) as daemon, \
                TestClient(TestServer(daemon.http.build_app())) as client:
            await daemon.poll_once("sim")
            text = await (await client.get("/metrics")).text()
            one = await (await client.get("/api/v1/targets/acme:scratch")).json()
            plain = await (await client.get("/api/v1/targets/scratch")).json()
            encoded = await (await client.get("/api/v1/targets/acme%3Ascratch")).json()  # as pipeline_client sends it
            paused = await client.post("/api/v1/targets/acme:scratch/pause", headers=AUTH,
                                       json={"reason": "tenant migration"})
            assert paused.status == 200, await paused.text()
            clock.advance(60)
            ctx = await daemon.poll_once("sim")
            resumed = await client.post("/api/v1/targets/acme:scratch/resume", headers=AUTH)
            assert (resumed.status, (await resumed.json())["target"]["name"]) == (200, "acme:scratch")
        used = {s.labels["target"]: (s.labels["path"], s.value) for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "quotapilot_target_used_bytes"}
        assert (used["acme:scratch"][0], used["scratch"][0]) == ("/acme/scratch", "/default/scratch")
        assert (one["name"], one["path"], plain["name"], plain["path"]) == (
            "acme:scratch", "/acme/scratch", "scratch", "/default/scratch")
        assert encoded == one
        assert {a.target.name: a.status for a in ctx.actions} == {"acme:scratch": ActionStatus.PAUSED,
                                                                  "scratch": ActionStatus.WOULD_GROW}


class TestAHomeQuotaNamedLikeAnotherTenantsTarget:
    """The default tenant's quota is renamed `acme:scratch`: the target name tenant acme's quota
    `scratch` would have. `QuotaNaming` refuses acme's record so the home quota keeps its name;
    the refused record was dropped under that very name (`quota_label` qualified it), and
    everything that reads `PollResult.dropped` by target name took the *home* quota for dropped:
    the planner blocked its growth every poll (guard `dropped`), the pre-flight API called its
    fresh data `stale_data`, and the collector logged `sample.dropped` / `sample.accepted` at
    every poll. The refused record is dropped under its VMS id (`id:<n>`), which no quota's
    target name is."""

    @pytest.fixture(autouse=True)
    def home_named_like_acmes_target(self, sim: SimulatorServer) -> None:
        sim.engine.patch_quota(scratch(sim, "default").id, {"name": "acme:scratch"})

    async def test_the_home_quota_still_grows(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                              clock: InstantClock) -> None:
        # 14 TB of 20 (70 %): above grow_at, so observe mode would grow it
        settings = make_settings(policy={"mode": "observe", "grow_at": 0.45, "target_utilization": 0.4})
        async with Daemon(settings, clock) as daemon, TestClient(TestServer(daemon.http.build_app())) as client:
            await daemon.poll_once("sim")
            clock.advance(60)
            ctx = await daemon.poll_once("sim")
            answer = await client.post("/api/v1/preflight", json={"target": "acme:scratch", "bytes": 10 * 10**12})
            preflight = await answer.json()
        home = [(a.status, a.reason) for a in ctx.actions if a.target.name == "acme:scratch"]
        expected = ([ActionStatus.WOULD_GROW], "/default/scratch")
        assert expected == ([status for status, _ in home], preflight["target"]["path"]), home
        # the data is fresh (0 s old): the pre-flight must not call it stale
        assert preflight["action"]["guard"] != "stale_data", preflight["action"]

    async def test_the_refused_quota_is_logged_once(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                                    clock: InstantClock, executor: ThreadPoolExecutor) -> None:
        settings = make_settings()
        poller = VmsPoller(settings.clusters[0], settings.vast, settings.poll, clock, executor)
        refused = f"id:{scratch(sim, 'acme').id}"
        with capture_logs() as logs:
            for _ in range(4):
                result = await poller.poll()
                assert [(d.target, d.reason) for d in result.dropped] == [(refused, "malformed")]
                assert "acme:scratch" in quotas(result)  # the home quota, accepted
                clock.advance(60)
        events = [(e["event"], e["target"]) for e in logs if e["event"] in ("sample.dropped", "sample.accepted")]
        assert events == [("sample.dropped", refused)]


ACME_PROJECTS = parse_scenario(tomllib.loads("""
[cluster]
name = "shared-vast"

[[views]]
path = "/default/raw"
quota_name = "raw"
quota = { hard_limit = "20TB" }
initial = { used = "4TB" }

[[views]]
path = "/acme/projects"
quota_name = "projects"
tenant = "acme"
quota = { hard_limit = "20TB" }
initial = { used = "14TB" }
[views.ingest]
bytes_per_day = "5TB"
"""), "acme-projects")
"""Tenant acme's quota has a name no other tenant uses: before 0198d09 it was the target `projects`."""


class TestAnUpgradeFromBareNames:
    """Before 0198d09 an admin login (no `tenant` configured) already listed every tenant's quotas,
    and a quota of another tenant whose name was unique was the target of its bare name
    (`projects`): the operator paused it by that name (`POST /api/v1/targets/projects/pause`, a
    row in `overrides` that "survives restarts"). After the upgrade it is `acme:projects`; the
    pause, keyed by name, no longer applied, nothing said so, and the first confirmed poll grew
    the quota the operator had paused; nor could the pause be lifted through the API (`projects`
    is no target: 404). The pause is moved to the qualified name at the first poll that lists the
    quota (`override.migrated`, once), unless the bare name may mean several quotas (a home
    quota's, several tenants'): then it keeps its home meaning and `override.not_migrated` names
    the candidates. A `[[policy.overrides]] match = "projects"` that matches no target is named in
    `policy.override_unmatched` with the qualified name to match."""

    async def test_a_pause_made_before_the_upgrade_still_holds_the_quota(
            self, make_settings: SettingsFactory, clock: InstantClock) -> None:
        async with SimulatorServer(ACME_PROJECTS, clock=clock, seed=0) as sim:
            settings = make_settings(cluster={"address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)},
                                     policy={"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4})
            db = Database(settings.store.path)  # the store as the daemon before the upgrade left it
            try:
                OverrideStore(db).pause("projects", now=clock.now(), cluster="sim", reason="tenant migration")
            finally:
                db.close()
            projects = next(q for q in sim.engine.quotas.values() if q.name == "projects")
            before = projects.hard_limit
            async with Daemon(settings, clock) as daemon:
                await daemon.poll_once("sim")
                clock.advance(60)
                ctx = await daemon.poll_once("sim")
        statuses = {a.target.name: a.status for a in ctx.actions}
        assert (projects.hard_limit, statuses.get("acme:projects")) == (before, ActionStatus.PAUSED)

    async def test_the_moved_pause_is_lifted_by_the_qualified_name(
            self, make_settings: SettingsFactory, clock: InstantClock) -> None:
        async with SimulatorServer(ACME_PROJECTS, clock=clock, seed=0) as sim:
            settings = upgraded_settings(make_settings, sim)
            paused_before_the_upgrade(settings, clock)
            with capture_logs() as logs:
                async with Daemon(settings, clock) as daemon, \
                        TestClient(TestServer(daemon.http.build_app())) as client:
                    held = await two_polls(daemon, clock)
                    shown = await (await client.get("/api/v1/targets/acme:projects")).json()
                    moved = pauses(settings, clock.now())
                    resumed = await client.post("/api/v1/targets/acme:projects/resume", headers=AUTH)
                    assert resumed.status == 200, await resumed.text()
                    lifted = pauses(settings, clock.now())
                    clock.advance(60)
                    grown = await daemon.poll_once("sim")
        assert statuses(held)["acme:projects"] is ActionStatus.PAUSED
        assert (shown["paused"], shown["pause_reason"]) == (True, "tenant migration")
        assert (moved, lifted) == ([("sim", "acme:projects", "tenant migration")], [])
        assert statuses(grown)["acme:projects"] is ActionStatus.VERIFIED
        assert migrations(logs) == [("sim", "projects", "acme:projects")]

    async def test_the_pause_is_moved_once_across_two_restarts(
            self, make_settings: SettingsFactory, clock: InstantClock) -> None:
        async with SimulatorServer(ACME_PROJECTS, clock=clock, seed=0) as sim:
            settings = upgraded_settings(make_settings, sim)
            paused_before_the_upgrade(settings, clock)
            projects = next(q for q in sim.engine.quotas.values() if q.name == "projects")
            before = projects.hard_limit
            runs: list[tuple[ActionStatus | None, list[tuple[str, str, str]]]] = []
            with capture_logs() as logs:
                for _ in range(3):  # the upgrade's start, then two restarts
                    async with Daemon(settings, clock) as daemon:
                        ctx = await two_polls(daemon, clock)
                    runs.append((statuses(ctx).get("acme:projects"), pauses(settings, clock.now())))
                    clock.advance(600)
        assert runs == [(ActionStatus.PAUSED, [("sim", "acme:projects", "tenant migration")])] * 3
        assert projects.hard_limit == before
        assert migrations(logs) == [("sim", "projects", "acme:projects")]
        assert [e for e in logs if e["event"] == "override.not_migrated"] == []

    async def test_a_name_a_home_quota_has_keeps_its_home_meaning(
            self, make_settings: SettingsFactory, clock: InstantClock) -> None:
        async with SimulatorServer(ACME_PROJECTS, clock=clock, seed=0) as sim:
            raw = next(q for q in sim.engine.quotas.values() if q.name == "raw")
            sim.engine.patch_quota(raw.id, {"name": "projects"})  # the default tenant's quota now has the name
            settings = upgraded_settings(make_settings, sim)
            paused_before_the_upgrade(settings, clock)
            with capture_logs() as logs:
                async with Daemon(settings, clock) as daemon, \
                        TestClient(TestServer(daemon.http.build_app())) as client:
                    await two_polls(daemon, clock)
                    clock.advance(60)
                    await daemon.poll_once("sim")
                    home = await (await client.get("/api/v1/targets/projects")).json()
                    acme = await (await client.get("/api/v1/targets/acme:projects")).json()
        assert (home["path"], home["paused"], acme["paused"]) == ("/default/raw", True, False)
        assert pauses(settings, clock.now()) == [("sim", "projects", "tenant migration")]
        assert migrations(logs) == []
        assert not_migrated(logs) == [("projects", ["projects", "acme:projects"], "projects")]

    async def test_a_name_two_other_tenants_have_is_left_as_it_is(
            self, make_settings: SettingsFactory, clock: InstantClock) -> None:
        async with SimulatorServer(ACME_PROJECTS, clock=clock, seed=0) as sim:
            sim.engine.create_quota(name="projects", path="/beta/projects", hard_limit=20 * TB,
                                    tenant_id=sim.engine.tenant("beta"))
            settings = upgraded_settings(make_settings, sim)
            paused_before_the_upgrade(settings, clock)
            with capture_logs() as logs:
                async with Daemon(settings, clock) as daemon:
                    await two_polls(daemon, clock)
                    clock.advance(60)
                    await daemon.poll_once("sim")
        assert pauses(settings, clock.now()) == [("sim", "projects", "tenant migration")]
        assert migrations(logs) == []
        assert not_migrated(logs) == [("projects", ["acme:projects", "beta:projects"], None)]

    async def test_a_policy_override_by_the_bare_name_is_named_once(
            self, make_settings: SettingsFactory, clock: InstantClock) -> None:
        async with SimulatorServer(ACME_PROJECTS, clock=clock, seed=0) as sim:
            overrides = [{"match": "projects", "mode": "observe"}, {"match": "raw", "mode": "observe"},
                         {"match": "acme:*", "max_hard_limit_bytes": 10**15}]
            settings = upgraded_settings(make_settings, sim, overrides=overrides)
            with capture_logs() as logs:
                async with Daemon(settings, clock) as daemon:
                    await two_polls(daemon, clock)
                    clock.advance(60)
                    await daemon.poll_once("sim")
        unmatched = [(e["cluster"], e["match"], e["candidates"]) for e in logs
                     if e["event"] == "policy.override_unmatched"]
        assert unmatched == [("sim", "projects", ["acme:projects"])]


def upgraded_settings(make_settings: SettingsFactory, sim: SimulatorServer, **policy: Any) -> Settings:
    """Settings for the `ACME_PROJECTS` simulator `sim`, in enforce mode: a quota at 70 % is grown."""
    return make_settings(cluster={"address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)},
                         http={"write_token": TOKEN},
                         policy={"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4, **policy})


def paused_before_the_upgrade(settings: Settings, clock: InstantClock) -> None:
    """The store as the daemon before the upgrade left it: acme's quota paused by its bare name."""
    db = Database(settings.store.path)
    try:
        OverrideStore(db).pause("projects", now=clock.now(), cluster="sim", reason="tenant migration")
    finally:
        db.close()


def pauses(settings: Settings, now: float) -> list[tuple[str, str, str]]:
    """(cluster, target, reason) of every pause in force in the store."""
    db = Database(settings.store.path)
    try:
        return [(o.cluster, o.target, o.reason) for o in OverrideStore(db).active(now)]
    finally:
        db.close()


async def two_polls(daemon: Daemon, clock: InstantClock) -> CycleContext:
    """A start's first poll (its samples unconfirmed) and the next, which may grow."""
    await daemon.poll_once("sim")
    clock.advance(60)
    return await daemon.poll_once("sim")


def statuses(ctx: CycleContext) -> dict[str, ActionStatus]:
    return {a.target.name: a.status for a in ctx.actions}


def migrations(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["paused_on"], e["old_target"], e["target"]) for e in logs if e["event"] == "override.migrated"]


def not_migrated(logs: list[dict[str, Any]]) -> list[tuple[str, list[str], str | None]]:
    return [(e["target"], e["candidates"], e["applies_to"]) for e in logs if e["event"] == "override.not_migrated"]
