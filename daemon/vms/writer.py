"""The VMS calls the actuator and the API make: `VmsWriter`, the stages' `QuotaWriter`.

Re-read, patch and create quotas; list and create views; find a view policy. Each call goes
through the cluster's `VmsTransport` (the same client, pool and retry policy as the poll) and
raises `VmsUnavailable` / `VmsRefused` once the retry policy gives up. Its listings decide writes
(a view or quota missing from one is created), so it takes none that moved while it was paged
(`list_all(settled_only=True)`, `truncated` otherwise), unlike the poll, whose presence grace
covers a quota a page shift hid.
"""

from __future__ import annotations

from typing import Any

from quotapilot.daemon.vms.errors import VmsUnavailable
from quotapilot.daemon.vms.transport import VmsTransport, as_object
from quotapilot.daemon.vms.validation import HardLimits


class VmsWriter:
    """Quota, view and policy calls on one cluster's VMS."""

    def __init__(self, transport: VmsTransport) -> None:
        self.transport = transport
        self.name = transport.name
        self._sent_hard_limits: dict[int, HardLimits] = {}

    def sent_hard_limits(self, quota_id: int | None) -> HardLimits:
        """(bytes, inodes): the hard limits the PATCHes of ours last sent to `quota_id` — applied,
        refused or unknown —, None where none was sent. A read showing one is our write landing
        (the poller believes it at once: `validation.limit_changed`)."""
        return self._sent_hard_limits.get(quota_id, (None, None)) if quota_id is not None else (None, None)

    async def get_quota(self, quota_id: int) -> dict[str, Any]:
        """`GET /quotas/{id}/` (re-read before acting)."""
        return as_object(await self.transport.get(f"quotas/{quota_id}"), "quota")

    async def list_quotas(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every quota (paged, settled), or the ones on `path` — kept by their own path too: the VMS
        schema lists no `path` filter for quotas, and a VMS that ignores it answers every quota
        (any of which would pass for the managed view's)."""
        filters = {} if path is None else {"path": path}
        return [r for r in await self.transport.list_all("quotas", settled_only=True, **filters)
                if isinstance(r, dict) and (path is None or r.get("path") == path)]

    async def patch_quota(self, quota_id: int, *, hard_limit: int | None = None,
                          soft_limit: int | None = None, hard_limit_inodes: int | None = None,
                          soft_limit_inodes: int | None = None) -> dict[str, Any]:
        """`PATCH /quotas/{id}/` with only the given limits."""
        changes = {k: v for k, v in {"hard_limit": hard_limit, "soft_limit": soft_limit,
                                     "hard_limit_inodes": hard_limit_inodes,
                                     "soft_limit_inodes": soft_limit_inodes}.items() if v is not None}
        if not changes:
            raise ValueError("patch_quota needs at least one limit")
        sent_bytes, sent_inodes = self.sent_hard_limits(quota_id)
        self._sent_hard_limits[quota_id] = (sent_bytes if hard_limit is None else hard_limit,
                                            sent_inodes if hard_limit_inodes is None else hard_limit_inodes)
        body = await self.transport.call(f"PATCH quotas/{quota_id}",
                                         lambda client: client[f"quotas/{quota_id}"].patch(**changes))
        return body if isinstance(body, dict) else await self.get_quota(quota_id)

    async def create_quota(self, name: str, path: str, hard_limit: int, soft_limit: int,
                           hard_limit_inodes: int | None = None) -> dict[str, Any]:
        """`POST /quotas/`."""
        fields: dict[str, Any] = {"name": name, "path": path, "hard_limit": hard_limit,
                                  "soft_limit": soft_limit}
        if hard_limit_inodes is not None:
            fields["hard_limit_inodes"] = hard_limit_inodes
        body = await self.transport.call("POST quotas", lambda client: client["quotas"].post(**fields))
        return as_object(body, "quota")

    async def list_views(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every view (paged, settled), or the ones on `path`: the VMS filters by path (one page,
        where the whole listing of a busy cluster moves under every read); a VMS that ignores the
        filter answers every view, and only those on `path` are returned."""
        filters = {} if path is None else {"path": path}
        views = [r for r in await self.transport.list_all("views", settled_only=True, **filters)
                 if isinstance(r, dict)]
        return views if path is None else [v for v in views if v.get("path") == path]

    async def create_view(self, path: str, name: str, policy_id: int,
                          protocols: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """`POST /views/` (creating the directory)."""
        fields = {"path": path, "name": name, "policy_id": policy_id, "protocols": list(protocols),
                  "create_dir": True}
        body = await self.transport.call("POST views", lambda client: client["views"].post(**fields))
        return as_object(body, "view")

    async def find_view_policy(self, name: str) -> dict[str, Any] | None:
        """The view policy called `name`, or None."""
        body = await self.transport.get("viewpolicies", name=name)
        candidates = body.get("results", []) if isinstance(body, dict) else body
        if not isinstance(candidates, list):
            raise VmsUnavailable("GET viewpolicies: not a list", reason="malformed")
        for policy in candidates:
            if isinstance(policy, dict) and policy.get("name") == name:
                return policy
        return None
