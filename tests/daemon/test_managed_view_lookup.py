"""`ensure_view` looks the managed view's quota up by path, and takes
any quota in the answer as that quota. `VmsWriter.list_views(path=)` keeps only the views on the
path ("a VMS that ignores the filter answers every view"); `list_quotas(path=)` does not — and the
VMS schema (`../shared/vast-api/vms-openapi.json`, GET /quotas/) lists no `path` query parameter:
a VMS that ignores it answers every quota, and a managed view whose quota is missing is reported
`exists` on any cluster with a quota, its quota never created."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from test_actuator import MANAGED, ResourceClient, ensure_managed_view


class QuotaPathIgnored(ResourceClient):
    """A VMS client: views filtered by `path`; quotas answer every quota whatever `path` says.
    The managed view exists; its quota does not (another quota, on /jobs/other, does)."""

    def __init__(self) -> None:
        super().__init__()
        self.views = [{"id": 1, "name": "jobs-managed", "path": MANAGED}]
        self.quotas = [{"id": 7, "name": "jobs-other", "path": "/jobs/other"}]

    def get(self, **params: Any) -> Any:
        if self._resource == "views":
            views = [v for v in self.views if params.get("path") in (None, v["path"])]
            return {"count": len(views), "next": None, "results": views}
        if self._resource == "quotas":  # `path` ignored
            return {"count": len(self.quotas), "next": None, "results": list(self.quotas)}
        raise AssertionError(self._resource)


async def test_a_managed_views_missing_quota_is_created_though_the_vms_ignores_the_path_filter(
        tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    client = QuotaPathIgnored()
    done, _ = await ensure_managed_view(client, tmp_path, executor, vast={"backoff_base_seconds": 1, "max_retries": 0})
    assert [p["path"] for p in client.posted if p["resource"] == "quotas"] == [MANAGED]
    assert done == "created"
