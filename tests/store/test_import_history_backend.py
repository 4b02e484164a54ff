"""`quotapilot import-history` imports into the configured store: with `[store] url` that is the
fleet's PostgreSQL (what every instance reads through `store.open.open_backend`), never the
SQLite file at `[store] path`; a store it cannot open is exit 1, said in one line."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from quotapilot.daemon.cli import main
from quotapilot.daemon.history.local import free_port
from quotapilot.daemon.store.postgres import PostgresDatabase


@contextmanager
def fake_prometheus(cluster: str) -> Iterator[str]:
    """A Prometheus answering every query_range with one series of target `q` of `cluster`
    (an aiohttp server on its own loop in a thread, as the CLI runs its own `asyncio.run`)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runners: list[web.AppRunner] = []

    async def query_range(request: web.Request) -> web.Response:
        start, end = float(request.query["start"]), float(request.query["end"])
        step = float(request.query["step"])
        values = []
        t = start
        while t <= end:
            values.append([t, str(10**12)])
            t += step
        result = [{"metric": {"cluster": cluster, "target": "q", "path": "/q"}, "values": values}]
        return web.json_response({"status": "success", "data": {"resultType": "matrix", "result": result}})

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/query_range", query_range)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runners[0].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="fake-prometheus", daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{runners[0].addresses[0][1]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def fleet_config(tmp_path: Path, store_url: str, prometheus_url: str) -> Path:
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[[clusters]]\nname = "c"\naddress = "vms.invalid"\ntoken = "t"\n'
        f'[store]\nurl = "{store_url}"\npath = "{tmp_path / "state.db"}"\nconnect_timeout_seconds = 1\n'
        f'[history]\nprometheus_url = "{prometheus_url}"\nmax_retries = 0\n')
    return config


class TestImportHistoryUsesTheConfiguredStore:
    """Guards that import-history opens the store the way the daemon does: it used to open
    `Database([store] path)` always, reporting success for rows no fleet instance reads."""

    def test_it_imports_into_postgres_not_a_sqlite_file(self, tmp_path: Path, pg_url: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
        with fake_prometheus("c") as prometheus_url:
            rc = main(["import-history", "--config", str(fleet_config(tmp_path, pg_url, prometheus_url)),
                       "--since", "1d", "--json"])
        summary = json.loads(capsys.readouterr().out)
        assert rc == 0
        assert not (tmp_path / "state.db").exists()
        db = PostgresDatabase(pg_url)
        try:
            rows = db.query("SELECT COUNT(*) AS n FROM observations_hourly WHERE cluster = 'c'")
        finally:
            db.close()
        assert summary["samples_imported"] == rows[0]["n"] > 0

    def test_an_unreachable_postgres_is_exit_1_in_one_line(self, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
        store_url = f"postgresql://quotapilot@127.0.0.1:{free_port()}/quotapilot"
        with fake_prometheus("c") as prometheus_url:
            rc = main(["import-history", "--config", str(fleet_config(tmp_path, store_url, prometheus_url)),
                       "--since", "1d", "--json"])
        captured = capsys.readouterr()
        assert (rc, captured.out) == (1, "")
        assert not (tmp_path / "state.db").exists()
        message = captured.err.strip()
        assert message.startswith("quotapilot import-history: ") and "\n" not in message
        assert "PostgreSQL" in message
