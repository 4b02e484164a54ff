"""Scenario TOML: the built-ins load, and every parsing error names the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from quotapilot.daemon.simulator import BUILTIN_SCENARIOS, ScenarioError, load_scenario
from quotapilot.daemon.simulator.scenario import parse_scenario

MINIMAL = """
[[views]]
path = "/a/b"
quota = { hard_limit = "10TB" }
[views.ingest]
bytes_per_day = "1TB"
"""


class TestBuiltins:
    @pytest.mark.parametrize("name", BUILTIN_SCENARIOS)
    def test_loads(self, name: str) -> None:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert all("/" not in v.quota_name for v in scenario.views)

    def test_cosmos7_views(self) -> None:
        scenario = load_scenario("cosmos7")
        names = {v.path: v.quota_name for v in scenario.views}
        assert names == {"/cosmos7/raw": "cosmos7-raw", "/cosmos7/processed": "cosmos7-processed",
                         "/cosmos7/temp": "cosmos7-temp"}

    def test_file_and_defaults(self, tmp_path: Path) -> None:
        path = tmp_path / "mine.toml"
        path.write_text(MINIMAL)
        scenario = load_scenario(path)
        view = scenario.views[0]
        assert (scenario.name, view.quota_name, view.quota.soft_limit_bytes if view.quota else None) == (
            "mine", "a-b", 10**13)


class TestErrorsNameTheField:
    @pytest.mark.parametrize(("patch", "field"), [
        (("quota = { hard_limit = \"10TB\" }", "quota = { hard_limit = \"lots\" }"), "views[0].quota.hard_limit"),
        (("quota = { hard_limit = \"10TB\" }", "quota = { hard_limit = \"10TB\", soft_limit = \"20TB\" }"),
         "views[0].quota.soft_limit"),
        (("bytes_per_day = \"1TB\"", "bytes_per_day = \"1TB\"\nramp_days = -1"), "views[0].ingest.ramp_days"),
        (("bytes_per_day = \"1TB\"", "bytes_per_day = \"1TB\"\nnoise = \"loud\""), "views[0].ingest.noise"),
        (("bytes_per_day = \"1TB\"", "bytes_per_day = \"1TB\"\ndaily_profile = [1, 2]"),
         "views[0].ingest.daily_profile"),
        (("bytes_per_day = \"1TB\"", "bytes_per_day = \"1TB\"\nfollows = \"/nope\""), "views[0].ingest.follows"),
        (("bytes_per_day = \"1TB\"", "bytes_per_day = \"1TB\"\nsteps = [{ at_day = 1, factr = 2 }]"),
         "views[0].ingest.steps[0].factr"),
        (("bytes_per_day = \"1TB\"", "bytes_per_day = \"1TB\"\nbursts = [{ at_day = -2 }]"),
         "views[0].ingest.bursts[0].at_day"),
        (("path = \"/a/b\"", "path = \"a/b\""), "views[0].path"),
        (("path = \"/a/b\"", "path = \"/a/b\"\nquota_name = \"a/b\""), "views[0].quota_name"),
        (("path = \"/a/b\"", "path = \"/a/b\"\ncolour = \"blue\""), "views[0].colour"),
    ])
    def test_view_fields(self, patch: tuple[str, str], field: str) -> None:
        text = MINIMAL.replace(*patch)
        with pytest.raises(ScenarioError) as err:
            parse_scenario(tomllib.loads(text))
        assert err.value.field == field

    def test_deletes_and_cluster(self) -> None:
        for text, field in (
            (MINIMAL + "[[views.deletes]]\nevery = \"hourly\"\n", "views[0].deletes[0].every"),
            (MINIMAL + "[[views.deletes]]\nkeep_fraction = 2\n", "views[0].deletes[0].keep_fraction"),
            ("[cluster]\nusable_capacity = \"0\"\n" + MINIMAL, "cluster.usable_capacity"),
            ("[cluster]\ndrr = \"high\"\n" + MINIMAL, "cluster.drr"),
            ("[scenario]\nstep_seconds = 0.5\n" + MINIMAL, "scenario.step_seconds"),
            ("[scenario]\nname = \"x\"\n", "views"),
        ):
            with pytest.raises(ScenarioError) as err:
                parse_scenario(tomllib.loads(text))
            assert err.value.field == field

    def test_a_quota_name_is_unique_within_its_tenant(self) -> None:
        same_name = '[[views]]\npath = "/a/c"\nquota_name = "a-b"\nquota = { hard_limit = "10TB" }\n'
        two_tenants = parse_scenario(tomllib.loads(MINIMAL + same_name + 'tenant = "acme"\n'))
        assert [(v.tenant, v.quota_name) for v in two_tenants.views] == [("default", "a-b"), ("acme", "a-b")]
        with pytest.raises(ScenarioError) as err:
            parse_scenario(tomllib.loads(MINIMAL + same_name))
        assert (err.value.field, err.value.reason) == ("views", "quota names must be unique within a tenant")

    def test_unknown_scenario_and_bad_toml(self, tmp_path: Path) -> None:
        broken = tmp_path / "broken.toml"
        broken.write_text("[views\n")
        for source in ("cosmos8", broken):
            with pytest.raises(ScenarioError) as err:
                load_scenario(source)
            assert err.value.field == "scenario"
