"""Real processes for the fleet fault tests (test_fleet_processes.py): `quotapilot simulator` and
`quotapilot run` as subprocesses, the simulator's admin endpoints over verified HTTPS, the
daemons' /healthz and JSON logs, the shared PostgreSQL read directly, and a restart of the
throwaway PostgreSQL server that keeps its data.

Nothing here sleeps for a fixed time: `wait_until` polls a condition until a deadline. Every
process started is recorded in a `Processes`, which kills what is left at teardown (even when the
test failed), so no daemon outlives its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from pytest_postgresql.executors import PostgreSQLExecutor

T = TypeVar("T")


async def wait_until(condition: Callable[[], T], what: str, timeout: float = 20.0,  # noqa: ASYNC109 (test helper)
                     every: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class Processes:
    """Every subprocess a test started; `kill_all` at teardown leaves none running."""

    started: list[subprocess.Popen[Any]] = field(default_factory=list)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kwargs)
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process dies of SIGKILL once resumed
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


class Simulator:
    """`quotapilot simulator --json` in a subprocess, with its admin endpoints (`/_sim/...`)."""

    def __init__(self, processes: Processes, state_dir: Path, *args: str) -> None:
        self.proc = processes.popen(
            [sys.executable, "-m", "quotapilot.daemon", "simulator", "--port", "0", "--json",
             "--state-dir", str(state_dir), *args],
            stdout=subprocess.PIPE, stderr=open(state_dir / "simulator.log", "w"), text=True)  # noqa: SIM115
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("{"):
            raise AssertionError(f"simulator did not start: {(state_dir / 'simulator.log').read_text()[-600:]}")
        self.info: dict[str, Any] = json.loads(line)
        self._tls = ssl.create_default_context(cafile=self.info["ca_file"])

    def admin(self, method: str, path: str, body: object = None) -> Any:
        request = urllib.request.Request(
            f"https://{self.info['address']}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Api-Token {self.info['token']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10, context=self._tls) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def add_fault(self, **rule: object) -> int:
        return int(self.admin("POST", "/_sim/faults", rule)["id"])

    def fired(self, rule_id: int) -> int:
        return next(int(r["fired"]) for r in self.admin("GET", "/_sim/faults") if r["id"] == rule_id)

    def quotas(self) -> dict[str, dict[str, Any]]:
        """Path → the quota's ground truth."""
        quotas: dict[str, dict[str, Any]] = self.admin("GET", "/_sim/summary")["quotas"]
        return quotas

    def quota_id(self, path: str) -> int:
        return next(int(q["id"]) for q in self.admin("GET", "/api/quotas/") if q["path"] == path)

    def limit_changes(self) -> list[dict[str, Any]]:
        """Every applied write that moved a hard limit (the ground truth of growths)."""
        return [w for w in self.admin("GET", "/_sim/writes")
                if w["applied"] and w["kind"] == "patch" and "hard_limit" in w["changes"]]


def instance_config(sim: Simulator, directory: Path, name: str, url: str, *, port: int,
                    clusters: tuple[str, ...] = ("sim",), poll_seconds: float, lease_seconds: float,
                    renew_seconds: float, mode: str = "enforce", store: str = "", policy: str = "",
                    tables: str = "") -> Path:
    """One instance's TOML: the simulator as each of `clusters`, the shared store, fast timings;
    `store`/`policy`: more lines of those tables; `tables`: more tables at the end."""
    cluster_tables = "".join(
        f'[[clusters]]\nname = "{cluster}"\naddress = "{sim.info["address"]}"\ntoken = "{sim.info["token"]}"\n'
        f'ca_file = "{sim.info["ca_file"]}"\n\n' for cluster in clusters)
    path = directory / f"{name}.toml"
    path.write_text(f"""{cluster_tables}
[vast]
request_timeout_seconds = 3
max_retries = 0

[poll]
interval_seconds = {poll_seconds}
jitter_ratio = 0

[policy]
mode = "{mode}"
grow_at = 0.45
target_utilization = 0.4
{policy}

[forecast]
workers = 0

[http]
listen = "127.0.0.1:{port}"

[log]
format = "json"

[store]
url = "{url}"
instance_name = "{name}"
path = "{directory / name}.db"
lease_seconds = {lease_seconds}
lease_renew_seconds = {renew_seconds}
{store}

{tables}""")
    return path


class Instance:
    """`quotapilot run` in a subprocess: its /healthz, its JSON log, and signals."""

    def __init__(self, processes: Processes, config: Path, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = config.with_suffix(".log")
        self.proc = processes.popen([sys.executable, "-m", "quotapilot.daemon", "run", "--config", str(config)],
                                    stdout=subprocess.DEVNULL, stderr=open(self.log_path, "a"))  # noqa: SIM115

    def get(self, path: str) -> tuple[int, str] | None:
        """(status, body) of GET `path`, None while the instance does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return None

    def health(self) -> dict[str, Any] | None:
        answer = self.get("/healthz")
        return None if answer is None else dict(json.loads(answer[1]))

    def roles(self) -> dict[str, str]:
        """Cluster → `leader`/`standby` as this instance's /healthz reports it ({} while down)."""
        report = self.health()
        return {} if report is None else {r["cluster"]: r["role"] for r in report.get("leadership", [])}

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """This instance's JSON log lines (all of them, or the events called `name`)."""
        found: list[dict[str, Any]] = []
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9, and reap it."""
        self.proc.kill()
        self.proc.wait(10)


# ------------------------------------------------------------------------------- the database
def rows(url: str, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
    """A query on the shared store with a connection of its own (the daemons' pools untouched)."""
    with psycopg.connect(url, connect_timeout=5, row_factory=dict_row) as conn:
        return list(conn.execute(sql, params).fetchall())


def leases(url: str) -> dict[str, tuple[str, int]]:
    """Cluster → (instance name, epoch) of every lease row, live or not."""
    try:
        found = rows(url, "SELECT cluster, holder, epoch FROM leases")
    except psycopg.errors.UndefinedTable:  # not migrated yet
        return {}
    return {r["cluster"]: (r["holder"].split("/")[0], int(r["epoch"])) for r in found}


def actions(url: str) -> list[dict[str, Any]]:
    try:
        return rows(url, "SELECT * FROM actions ORDER BY id")
    except psycopg.errors.UndefinedTable:
        return []


@dataclass
class RestartableServer:
    """Stop and start the session's throwaway PostgreSQL with its data kept (pytest-postgresql's
    own `stop` removes the data directory when run as root, see pg_ctl_as_postgres.sh)."""

    executor: PostgreSQLExecutor

    def _pg_ctl(self, *args: str) -> None:
        env = {**os.environ, **self.executor.envvars, "QP_PG_KEEP_DATA": "1"}
        subprocess.run([self.executor.executable, *args], check=True, env=env, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self._pg_ctl("stop", "-D", self.executor.datadir, "-m", "fast")

    def start(self) -> None:
        # the executor's own start command (same port, socket directory and log), waiting for it
        argv = shlex.split(self.executor.command)
        if "-w" not in argv:
            argv.append("-w")
        self._pg_ctl(*argv[1:])

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Down inside the block, up again after it (even when the block fails)."""
        self.stop()
        try:
            yield
        finally:
            self.start()
