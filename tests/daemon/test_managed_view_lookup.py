"""`ensure_view` looks the managed view's quota up by path, and takes
any quota in the answer as that quota. `VmsWriter.list_views(path=)` keeps only the views on the
path ("a VMS that ignores the filter answers every view"); `list_quotas(path=)` does not — and the
VMS schema (`../shared/vast-api/vms-openapi.json`, GET /quotas/) lists no `path` query parameter:
a VMS that ignores it answers every quota, and a managed view whose quota is missing is reported
`exists` on any cluster with a quota, its quota never created."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from core_helpers import InstantClock

from quotapilot.daemon.runtime.leadership import SoleLeadership
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.stages.actuator import Actuator
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.vms.transport import VmsTransport
from quotapilot.daemon.vms.writer import VmsWriter

MANAGED = "/jobs/managed"


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


class QuotaPathIgnored:
    """A VMS client: views filtered by `path`; quotas answer every quota whatever `path` says.
    The managed view exists; its quota does not (another quota, on /jobs/other, does)."""

    def __init__(self) -> None:
        self.views = [{"id": 1, "name": "jobs-managed", "path": MANAGED}]
        self.quotas = [{"id": 7, "name": "jobs-other", "path": "/jobs/other"}]
        self.posted: list[dict[str, Any]] = []
        self._resource = ""

    def __getitem__(self, resource: str) -> QuotaPathIgnored:
        self._resource = resource
        return self

    def get(self, **params: Any) -> Any:
        if self._resource == "views":
            views = [v for v in self.views if params.get("path") in (None, v["path"])]
            return {"count": len(views), "next": None, "results": views}
        if self._resource == "quotas":  # `path` ignored
            return {"count": len(self.quotas), "next": None, "results": list(self.quotas)}
        raise AssertionError(self._resource)

    def post(self, **fields: Any) -> Any:
        self.posted.append({"resource": self._resource, **fields})
        return {"id": 100, **fields}


async def test_a_managed_views_missing_quota_is_created_though_the_vms_ignores_the_path_filter(
        tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    client = QuotaPathIgnored()
    clock = InstantClock()
    base = load_settings(None, clusters=[{"name": "c1", "address": "vms.invalid", "token": "t"}],
                         vast={"backoff_base_seconds": 1, "max_retries": 0})
    transport = VmsTransport(base.clusters[0], base.vast, clock, executor, client_factory=lambda *_: client)
    settings = Settings(clusters=({"name": "c1", "address": "vms.invalid", "token": "t"},),  # type: ignore[arg-type]
                        policy={"mode": "enforce"},  # type: ignore[arg-type]
                        views=({"path": MANAGED},))  # type: ignore[arg-type]
    db = Database(tmp_path / "state.db")
    try:
        actuator = Actuator(settings, ActionStore(db), clock, SoleLeadership(["c1"]))
        done = await actuator.ensure_view("c1", settings.views[0], VmsWriter(transport))
    finally:
        db.close()
    assert [p["path"] for p in client.posted if p["resource"] == "quotas"] == [MANAGED]
    assert done == "created"
