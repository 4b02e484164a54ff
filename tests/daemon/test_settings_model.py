"""The settings model: sources, validation messages that name the field, secrets, overrides."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.settings import globs_may_meet, load_settings

CLUSTER = {"name": "cosmos", "address": "vms.example.org", "token": "t0ken"}


class TestSources:
    """TOML file, then environment on top."""

    def test_toml_file_is_read(self, tmp_path: Path) -> None:
        cfg = tmp_path / "q.toml"
        cfg.write_text(
            '[[clusters]]\nname = "cosmos"\naddress = "vms:443"\ntoken = "x"\n'
            '[poll]\ninterval_seconds = 30\n[http]\nlisten = "127.0.0.1:9999"\n'
            f'[store]\npath = "{tmp_path}/s.db"\n'
        )
        settings = load_settings(cfg)
        assert settings.poll.interval_seconds == 30.0
        assert settings.http.port == 9999
        assert settings.clusters[0].address == "vms:443"
        assert settings.store.path == tmp_path / "s.db"

    def test_environment_overrides_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        cfg = tmp_path / "q.toml"
        cfg.write_text("[poll]\ninterval_seconds = 30\n")
        monkeypatch.setenv("QUOTAPILOT_POLL__INTERVAL_SECONDS", "15")
        assert load_settings(cfg).poll.interval_seconds == 15.0

    def test_missing_file_names_the_flag(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as err:
            load_settings(tmp_path / "nope.toml")
        assert err.value.field == "--config"

    def test_bad_toml_is_a_config_error(self, tmp_path: Path) -> None:
        cfg = tmp_path / "q.toml"
        cfg.write_text("[poll\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_settings(cfg)


class TestValidation:
    """Invalid values raise ConfigError whose field is the dotted config path."""

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"poll": {"interval_seconds": -5}}, "poll.interval_seconds"),
            ({"policy": {"grow_at": 0.95}}, "policy.grow_at"),
            ({"policy": {"target_utilization": 0.8}}, "policy.target_utilization"),
            ({"policy": {"step_bytes": "lots"}}, "policy.step_bytes"),
            ({"policy": {"lead_time_seconds": "soon"}}, "policy.lead_time_seconds"),
            ({"poll": {"interval": 5}}, "poll.interval"),
            ({"clusters": [{"name": "a", "address": "h"}]}, "clusters.0.token"),
            ({"clusters": [CLUSTER, CLUSTER]}, "clusters.1.name"),
            ({"policy": {"overrides": [{"match": "/x*", "grow_at": 0.99}]}}, "policy.overrides.0.grow_at"),
            ({"policy": {"overrides": [{"match": "/x*", "growat": 0.5}]}}, "policy.overrides.0.growat"),
        ],
    )
    def test_field_is_named(self, overrides: dict[str, object], field: str) -> None:
        with pytest.raises(ConfigError) as err:
            load_settings(**overrides)
        assert err.value.field == field

    def test_cross_field_message_names_both_fields(self) -> None:
        with pytest.raises(ConfigError) as err:
            load_settings(policy={"grow_at": 0.95})
        assert str(err.value) == "policy.grow_at: must be < policy.critical_at"

    def test_every_problem_is_reported(self, tmp_path: Path) -> None:
        """A user fixes them all in one go: check-config prints each of `.problems`."""
        with pytest.raises(ConfigError) as err:
            load_settings(clusters=[{"name": "a", "address": "h", "token_file": str(tmp_path / "no")}],
                          poll={"interval_seconds": -5})
        assert [p.field for p in err.value.problems] == ["clusters.0.token_file", "poll.interval_seconds"]

    def test_missing_secret_file_is_reported(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as err:
            load_settings(clusters=[{"name": "a", "address": "h", "token_file": str(tmp_path / "no")}])
        assert err.value.field == "clusters.0.token_file"


class TestSecretsAndUnits:
    def test_token_file_is_read_and_never_printed(self, tmp_path: Path) -> None:
        (tmp_path / "tok").write_text("s3cret\n")
        settings = load_settings(clusters=[{"name": "a", "address": "h", "token_file": str(tmp_path / "tok")}])
        assert settings.clusters[0].resolved_token() == "s3cret"
        assert "s3cret" not in repr(settings)

    def test_credentials_directory_is_expanded(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "vms.token").write_text("from-systemd")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        settings = load_settings(
            clusters=[{"name": "a", "address": "h", "token_file": "${CREDENTIALS_DIRECTORY}/vms.token"}])
        assert settings.clusters[0].resolved_token() == "from-systemd"

    def test_inline_secret_is_masked(self) -> None:
        settings = load_settings(clusters=[CLUSTER])
        assert "t0ken" not in repr(settings.clusters[0])
        assert settings.clusters[0].resolved_token() == "t0ken"

    def test_human_units(self) -> None:
        settings = load_settings(policy={"step_bytes": "2TiB", "horizon_seconds": "14d"})
        assert settings.policy.step_bytes == 2 * 2**40
        assert settings.policy.horizon_seconds == 14 * 86400.0


class TestPolicyOverrides:
    """Per-target policy by path (or name) glob; later overrides win."""

    def test_override_applies_to_matching_path_only(self) -> None:
        settings = load_settings(policy={"overrides": [
            {"match": "/cosmos7/temp*", "grow_at": 0.8, "mode": "enforce"},
        ]})
        temp = settings.policy.rules_for("cosmos7-temp", "/cosmos7/temp")
        raw = settings.policy.rules_for("cosmos7-raw", "/cosmos7/raw")
        assert (temp.grow_at, temp.mode) == (0.8, "enforce")
        assert (raw.grow_at, raw.mode) == (0.75, "observe")

    def test_later_override_wins_and_matches_names(self) -> None:
        settings = load_settings(policy={"overrides": [
            {"match": "/cosmos7/*", "cooldown_seconds": "1h"},
            {"match": "cosmos7-raw", "cooldown_seconds": "2h"},
        ]})
        assert settings.policy.rules_for("cosmos7-raw", "/cosmos7/raw").cooldown_seconds == 7200.0
        assert settings.policy.rules_for("cosmos7-temp", "/cosmos7/temp").cooldown_seconds == 3600.0


class TestTomlSourceMerging:
    """The `--config` file is read by pydantic-settings' TOML source: environment over keyword
    overrides over the file, merged group by group."""

    def test_overrides_merge_into_the_files_groups(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        cfg = tmp_path / "q.toml"
        cfg.write_text("[poll]\ninterval_seconds = 30\njitter_ratio = 0.2\n[vast]\npage_size = 10\n")
        monkeypatch.setenv("QUOTAPILOT_VAST__PAGE_SIZE", "20")
        settings = load_settings(cfg, poll={"interval_seconds": 45})
        assert (settings.poll.interval_seconds, settings.poll.jitter_ratio,
                                   settings.vast.page_size) == (45.0, 0.2, 20)

    def test_a_config_path_that_is_a_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not a regular file") as err:
            load_settings(tmp_path)
        assert err.value.field == "--config"


class TestGlobsMayMeet:
    """Sound: whenever one string matches both globs, they are said to meet (a refusal may be
    conservative, a clash never missed)."""

    @settings(max_examples=400, deadline=None)
    @given(st.text("/ab*?", max_size=6), st.text("/ab*?", max_size=6), st.text("/ab", max_size=8))
    def test_a_string_matching_both_means_they_meet(self, a: str, b: str, s: str) -> None:
        if a and b and fnmatch.fnmatchcase(s, a) and fnmatch.fnmatchcase(s, b):
            assert globs_may_meet(a, b)

    def test_separate_trees_do_not_meet(self) -> None:
        assert not globs_may_meet("/raw/*", "/processed/*")
        assert not globs_may_meet("*.tmp", "*.log")
        assert globs_may_meet("/cosmos7/*", "/cosmos7/raw*")
        assert globs_may_meet("/a/[bc]*", "/a/b")
