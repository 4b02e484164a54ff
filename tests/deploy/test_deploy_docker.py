"""The Dockerfile. There is no Docker engine here, so: hadolint judges it, and what it runs is
run here — the HEALTHCHECK command against a real /healthz-like server, and the entry point
through the real CLI parser."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from deploy_helpers import ROOT

from quotapilot.daemon.cli import build_parser

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def last(keyword: str) -> str:
    return [rest for kw, rest in instructions() if kw == keyword][-1]


@contextmanager
def healthz_server(status: int) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"{}" if self.path == "/healthz" else b"no"
            self.send_response(status if self.path == "/healthz" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class TestLint:
    def test_hadolint_is_clean(self, hadolint: str) -> None:
        result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout.strip()) == (0, "")


class TestImage:
    def test_multi_stage_on_slim_python_311(self) -> None:
        stages = [rest for kw, rest in instructions() if kw == "FROM"]
        assert len(stages) >= 2
        assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()

    def test_runs_as_a_numeric_non_root_user(self) -> None:
        user = last("USER").split(":")
        assert all(part.isdigit() and int(part) > 0 for part in user)

    def test_state_directory_is_a_volume(self) -> None:
        assert json.loads(last("VOLUME")) == ["/var/lib/quotapilot"]

    def test_entry_point_is_quotapilot_run(self) -> None:
        argv = json.loads(last("ENTRYPOINT")) + json.loads(last("CMD"))
        assert argv[0] == "quotapilot"
        args = build_parser().parse_args(argv[1:])
        assert (args.command, str(args.config)) == ("run", "/etc/quotapilot/quotapilot.toml")

    def test_copies_every_package_folder_and_ignores_nothing_it_needs(self) -> None:
        setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
        package_dirs = set(setuptools["package-dir"].values())
        copied = {rest.split()[0] for kw, rest in instructions() if kw == "COPY" and not rest.startswith("--from")}
        assert package_dirs <= copied
        allowed = {line[1:].strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                   if line.startswith("!")}
        assert package_dirs | {"pyproject.toml", "README.md"} <= allowed


class TestConfigurationByEnvironment:
    """The image's ENV plus QUOTAPILOT_* variables alone make a valid configuration (no file)."""

    def image_env(self) -> dict[str, str]:
        env = {}
        for key_value in shlex.split(last("ENV")):
            key, _, value = key_value.partition("=")
            env[key] = value
        return env

    def test_check_config_with_env_only(self, tmp_path: Path) -> None:
        env = {k: v for k, v in self.image_env().items() if k != "PATH"}
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "vms.token").write_text("not-a-real-token\n")
        env |= {"CREDENTIALS_DIRECTORY": str(secrets), "QUOTAPILOT_HTTP__LISTEN": "0.0.0.0:9187",
                "QUOTAPILOT_STORE__PATH": str(tmp_path / "state.db"),
                "QUOTAPILOT_CLUSTERS": json.dumps([{"name": "cosmos", "address": "vms.example.org",
                                                    "token_file": "${CREDENTIALS_DIRECTORY}/vms.token"}])}
        result = subprocess.run([sys.executable, "-m", "quotapilot.daemon", "check-config", "--json"],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["valid"] is True


class TestHealthcheck:
    """The HEALTHCHECK command, run by this Python: exit 0 on 200, non-zero on 503 or no server."""

    def command(self, port: int) -> list[str]:
        argv = json.loads(last("HEALTHCHECK").split(" CMD ", 1)[1])
        assert argv[0] == "python"
        return [sys.executable, *(a.replace("127.0.0.1:9187", f"127.0.0.1:{port}") for a in argv[1:])]

    @pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
    def test_healthz_status(self, status: int, healthy: bool) -> None:
        with healthz_server(status) as port:
            result = subprocess.run(self.command(port), capture_output=True, timeout=30)
        assert healthy == (result.returncode == 0), shlex.join(self.command(port))

    def test_nothing_listening_is_unhealthy(self) -> None:
        with healthz_server(200) as port:
            pass
        assert subprocess.run(self.command(port), capture_output=True, timeout=30).returncode != 0
