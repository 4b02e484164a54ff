"""Scenario events in TOML: quota churn, operator changes, clock steps and fault rules on the
simulated timeline, as a vastpy client sees them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_helpers import call, client_for, write_scenario

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import ScenarioError, SimulatorServer, load_scenario

TB = 10**12
DAY = 86400.0

SCENARIO = """
[scenario]
step_seconds = 300
[[views]]
path = "/e/a"
quota_name = "e-a"
quota = { hard_limit = "10TB", soft_limit = "9TB" }
initial = { used = "5TB" }
[views.ingest]
bytes_per_day = "0.1TB"
[[views]]
path = "/e/b"
initial = { used = "2TB" }
[views.ingest]
bytes_per_day = "0.1TB"
[[views]]
path = "/e/c"
quota_name = "e-c"
quota = { hard_limit = "10TB" }
[[events]]
at = "1d"
action = "operator_patch"
path = "/e/a"
factor = 1.5
[[events]]
at = "2d"
action = "rename_quota"
path = "/e/c"
new_name = "e-c2"
[[events]]
at = "3d"
action = "recreate_quota"
path = "/e/a"
new_path = "/e/b"
[[events]]
at = "4d"
action = "create_quota"
path = "/e/a"
name = "e-a-new"
hard_limit = "20TB"
[[events]]
at = "5d"
action = "delete_quota"
path = "/e/c"
[[events]]
at = "6d"
action = "clock_step"
seconds = -3600
[[events]]
at = "7d"
action = "delete_quota"
path = "/nowhere"
[[faults]]
kind = "error"
status = 502
start = "8d"
end = "9d"
"""


async def test_events_happen_at_their_time(tmp_path: Path) -> None:
    clock = VirtualClock()
    steps: list[float] = []
    async with SimulatorServer(write_scenario(tmp_path, SCENARIO), clock=clock,
                               state_dir=tmp_path / "sim") as sim:
        sim.on_clock_step.append(steps.append)
        client = client_for(sim)

        async def quotas() -> dict[str, tuple[str, int]]:
            return {q["name"]: (q["path"], q["hard_limit"]) for q in await call(client.quotas.get)}

        assert await quotas() == {"e-a": ("/e/a", 10 * TB), "e-c": ("/e/c", 10 * TB)}
        clock.advance(1 * DAY)
        assert (await quotas())["e-a"] == ("/e/a", 15 * TB)
        clock.advance(1 * DAY)
        assert set(await quotas()) == {"e-a", "e-c2"}
        clock.advance(1 * DAY)
        assert (await quotas())["e-a"] == ("/e/b", 15 * TB)  # same name, other path, other id
        clock.advance(1 * DAY)
        assert (await quotas())["e-a-new"] == ("/e/a", 20 * TB)
        clock.advance(1 * DAY)
        assert "e-c2" not in await quotas()
        clock.advance(1 * DAY)
        await call(client.clusters.get)
        assert (steps, sim.wall_offset_seconds) == ([-3600.0], -3600.0)
        clock.advance(1 * DAY)
        await call(client.clusters.get)
        assert [what for _, what, _ in sim.events.skipped] == ["delete_quota /nowhere"]
        clock.advance(1 * DAY)
        with pytest.raises(Exception, match="502"):
            await call(client.clusters.get)
        sources = [(w.source, w.kind) for w in sim.engine.writes.records]
        assert sources == [("operator", "patch"), ("scenario", "patch"), ("scenario", "delete"),
                           ("scenario", "create"), ("scenario", "create"), ("scenario", "delete")]
        assert [name for _, name, _ in sim.events.removed_names] == ["e-c", "e-a", "e-c2"]


TENANT_EVENTS = """
[[views]]
path = "/t/a"
quota_name = "a"
tenant = "acme"
quota = { hard_limit = "10TB" }
[[events]]
at = "1d"
action = "create_quota"
path = "/t/b"
name = "a"
tenant = "beta"
[[events]]
at = "2d"
action = "recreate_quota"
path = "/t/a"
new_path = "/t/c"
"""


async def test_quota_events_keep_to_their_tenant(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with SimulatorServer(write_scenario(tmp_path, TENANT_EVENTS), clock=clock,
                               state_dir=tmp_path / "sim") as sim:
        client = client_for(sim)

        async def quotas() -> dict[tuple[str, str], str]:
            return {(q["tenant_name"], q["name"]): q["path"] for q in await call(client.quotas.get)}

        seen = [await quotas()]
        for _ in range(2):
            clock.advance(1 * DAY)
            seen.append(await quotas())
    assert seen == [{("acme", "a"): "/t/a"},
                    {("acme", "a"): "/t/a", ("beta", "a"): "/t/b"},  # another tenant's name is free
                    {("acme", "a"): "/t/c", ("beta", "a"): "/t/b"}]  # re-created in its own tenant


@pytest.mark.parametrize(("text", "field"), [
    ('[[events]]\naction = "delete_quota"\npath = "/a/b"', "events[0].at"),
    ('[[events]]\nat = "1d"\naction = "explode"', "events[0].action"),
    ('[[events]]\nat = "1d"\naction = "operator_patch"\npath = "/a/b"', "events[0].factor"),
    ('[[events]]\nat = "1d"\naction = "clock_step"', "events[0].seconds"),
    ('[[events]]\nat = "-1d"\naction = "clock_step"\nseconds = 5', "events[0].at"),
    ('[[events]]\nat = "1d"\naction = "rename_quota"\npath = "/a/b"\nnew_name = "x/y"', "events[0].new_name"),
    ('[[faults]]\nkind = "meteor"', "faults[0].kind"),
    ('[[faults]]\nkind = "rewrite"', "faults[0].values"),
    ('[[faults]]\nkind = "error"\nrate = 2', "faults[0].rate"),
    ('[[faults]]\nkind = "error"\nstatus = 404', "faults[0].status"),
    ('[[faults]]\nkind = "error"\ncolour = "red"', "faults[0].colour"),
])
def test_bad_events_and_faults_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    base = '[[views]]\npath = "/a/b"\nquota = { hard_limit = "10TB" }\n'
    with pytest.raises(ScenarioError) as err:
        load_scenario(write_scenario(tmp_path, base + text))
    assert err.value.field == field


def test_the_churn_scenario_has_every_kind_of_event() -> None:
    scenario = load_scenario("churn")
    assert {e.action for e in scenario.events} == {"create_quota", "delete_quota", "rename_quota",
                                                   "recreate_quota", "operator_patch", "clock_step"}
    assert {"applied_answer_lost", "delayed_apply"} <= {f.kind for f in scenario.faults}
