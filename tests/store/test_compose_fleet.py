"""deploy/docker-compose.yml: PostgreSQL, the simulator and two quotapilot instances whose
configuration (environment only) is valid for `run` and selects the shared PostgreSQL store."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from quotapilot.daemon.commands.check_config import validate_for_run
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator.tls import make_certificates

COMPOSE = Path(__file__).parents[2] / "deploy" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


class TestFleetCompose:
    def test_services(self, compose: dict[str, Any]) -> None:
        assert set(compose["services"]) == {"postgres", "simulator", "quotapilot-a", "quotapilot-b"}

    @pytest.mark.parametrize(("service", "name"), [("quotapilot-a", "a"), ("quotapilot-b", "b")])
    def test_instance_environment_is_a_valid_fleet_configuration(
            self, compose: dict[str, Any], service: str, name: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        ca = make_certificates(tmp_path / "tls").ca_file
        (tmp_path / "token").write_text("t0ken")
        for key, value in compose["services"][service]["environment"].items():
            value = value.replace("/sim/token", str(tmp_path / "token")).replace("/sim/ca.pem", str(ca))
            monkeypatch.setenv(key, value)
        settings = Settings()
        validate_for_run(settings)
        assert settings.store.url is not None and settings.store.url.startswith("postgresql://quotapilot@postgres")
        assert settings.store.instance_name == name
        assert [c.address for c in settings.clusters] == ["simulator:8443"]

    def test_docker_compose_accepts_it(self) -> None:
        docker = shutil.which("docker")
        if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
            pytest.skip("docker compose is not installed")
        result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
