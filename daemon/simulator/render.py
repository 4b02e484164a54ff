"""VMS objects as JSON: clusters, quotas (cheaply, for 10,000-quota listings), views, view policies.

`Renderer` reads the `Engine`'s state and nothing else; the address it puts in `url` fields is
read at render time (the port is known only once the server listens).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from quotapilot.daemon.simulator.answers import dumps
from quotapilot.daemon.simulator.engine import TB, Engine, QuotaRecord, grace_text


class Renderer:
    """The JSON answers of one simulator (`address()` gives `host:port`)."""

    def __init__(self, engine: Engine, address: Callable[[], str], host: str) -> None:
        self.engine = engine
        self._address = address
        self.host = host
        self._prefix_cache: dict[int, tuple[tuple[str, str, str], str]] = {}

    @property
    def address(self) -> str:
        return self._address()

    def cluster_json(self) -> dict[str, Any]:
        e = self.engine
        usable = e.usable_capacity_bytes
        logical_used = int(e.logical_used_bytes())
        physical_used = int(e.physical_used_bytes())
        free = max(0, usable - physical_used)
        logical_total = usable * e.drr
        return {
            "id": e.cluster_id, "guid": e.cluster_guid, "name": e.scenario.cluster.name,
            "title": e.scenario.cluster.name, "state": "ONLINE", "sw_version": e.scenario.cluster.sw_version,
            "build": f"release-{e.scenario.cluster.sw_version}", "psnt": "SIM0000001",
            "mgmt_vip": self.host, "url": f"https://{self.address}/api/clusters/{e.cluster_id}",
            "usable_capacity_bytes": int(usable), "usable_capacity_tb": round(usable / TB, 3),
            "free_usable_capacity": int(free), "free_usable_capacity_tb": round(free / TB, 3),
            "physical_space": int(usable), "physical_space_tb": round(usable / TB, 3),
            "physical_space_in_use": int(physical_used), "physical_space_in_use_tb": round(physical_used / TB, 3),
            "physical_space_in_use_percent": round(100.0 * physical_used / usable, 2),
            "free_physical_space": float(int(free)),
            "logical_space": int(logical_total), "logical_space_tb": round(logical_total / TB, 3),
            "logical_space_in_use": int(logical_used), "logical_space_in_use_tb": round(logical_used / TB, 3),
            "logical_space_in_use_percent": round(100.0 * logical_used / logical_total, 2),
            "free_logical_space": float(int(max(0.0, logical_total - logical_used))),
            "drr": round(e.drr, 2), "drr_text": f"1:{e.drr:.1f}",
            "quotas_allocated_capacity": int(e.quotas_allocated()),
            "quotas_used_capacity": int(e.quotas_used()),
            "uptime": str(datetime.timedelta(seconds=int(e.now - e.origin))),
        }

    def _quota_prefix(self, ident: int, guid: str, name: str, path: str, tenant_id: int = 1) -> str:
        """The fields of a quota that rarely change, serialised once (listing 10,000 quotas must be
        cheap): the JSON object without its closing brace."""
        address = self.address
        cached = self._prefix_cache.get(ident)
        if cached is not None and cached[0] == (name, path, address):
            return cached[1]  # (a quota's tenant never changes)
        static = {
            "id": ident, "guid": guid, "name": name, "title": name, "path": path,
            "url": f"https://{address}/api/quotas/{ident}",
            "cluster": self.engine.scenario.cluster.name, "cluster_id": self.engine.cluster_id,
            "tenant_id": tenant_id, "tenant_name": self.engine.tenants[tenant_id], "system_id": ident,
            "enable_alarms": True, "is_user_quota": False, "internal": False,
            "num_exceeded_users": 0, "num_blocked_users": 0, "sync_state": "SYNCHRONIZED",
        }
        prefix = dumps(static)[:-1]
        self._prefix_cache[ident] = ((name, path, address), prefix)
        return prefix

    def _quota_fragment(self, prefix: str, *, hard: int, soft: int, hard_inodes: int, soft_inodes: int,
                        used_b: float, used_f: float, state: str, grace: float, time_to_block: str) -> str:
        """One quota as a JSON text: `prefix` plus the fields that move."""
        blocks = -(-int(used_b) // 32768) * 32768  # usage counted in 32 KiB blocks
        if hard and used_b <= hard:
            blocks = min(blocks, hard)  # a full quota reads exactly its limit
        effective = int(blocks / self.engine.drr)
        inodes = int(used_f)
        percent = 100 * blocks // hard if hard else 0
        percent_inodes = 100 * inodes // hard_inodes if hard_inodes else 0
        grace_str = grace_text(grace)
        pretty = state.replace("_", " ").title()
        return (f'{prefix},"hard_limit":{hard},"soft_limit":{soft},"hard_limit_inodes":{hard_inodes},'
                f'"soft_limit_inodes":{soft_inodes},"used_capacity":{blocks},'
                f'"used_capacity_tb":{round(blocks / TB, 6)!r},"used_effective_capacity":{effective},'
                f'"used_effective_capacity_tb":{round(effective / TB, 6)!r},"used_limited_capacity":{blocks},'
                f'"used_inodes":{inodes},"percent_capacity":{percent},"percent_inodes":{percent_inodes},'
                f'"state":"{state}","pretty_state":"{pretty}","grace_period":"{grace_str}",'
                f'"pretty_grace_period":"{grace_str}","time_to_block":"{time_to_block}"}}')

    def _record_fragment(self, record: QuotaRecord) -> str:
        used_b, used_f = self.engine.quota_usage(record)
        state = self.engine.quota_state(record)
        time_to_block = ""
        if record.grace_period_seconds > 0 and record.soft_since is not None and state.endswith("SOFT_EXCEEDED"):
            left = record.soft_since + record.grace_period_seconds - self.engine.now
            time_to_block = grace_text(max(60.0, left // 60 * 60))
        prefix = self._quota_prefix(record.id, record.guid, record.name, record.path, record.tenant_id)
        return self._quota_fragment(prefix, hard=record.hard_limit, soft=record.soft_limit,
                                    hard_inodes=record.hard_limit_inodes, soft_inodes=record.soft_limit_inodes,
                                    used_b=used_b, used_f=used_f, state=state, grace=record.grace_period_seconds,
                                    time_to_block=time_to_block)

    def prometheus_quotas(self) -> str:
        """The VMS exporter's `/api/prometheusmetrics/quotas`, for the scenario's quotas: the metric
        names and labels VAST's own Grafana dashboards query (`vast_quota_used_capacity`,
        `vast_quota_hard_limit`, `vast_quota_used_inodes`, `vast_quota_hard_limit_inodes`;
        `cluster`, `path`, `guid`, `tenant_name`, `title` = the quota name). A real exporter
        publishes more families; these are the ones quotapilot's `vast` history preset reads."""
        e = self.engine
        cluster = e.scenario.cluster.name
        families: dict[str, list[str]] = {"vast_quota_used_capacity": [], "vast_quota_hard_limit": [],
                                          "vast_quota_used_inodes": [], "vast_quota_hard_limit_inodes": []}
        for record in sorted(e.quotas.values(), key=lambda r: r.id):
            used_b, used_f = e.quota_usage(record)
            labels = ",".join(f'{key}="{_prom_label(value)}"' for key, value in (
                ("cluster", cluster), ("guid", record.guid), ("path", record.path),
                ("tenant_name", e.tenants[record.tenant_id]), ("title", record.name)))
            for name, value in (("vast_quota_used_capacity", int(used_b)), ("vast_quota_hard_limit", record.hard_limit),
                                ("vast_quota_used_inodes", int(used_f)),
                                ("vast_quota_hard_limit_inodes", record.hard_limit_inodes)):
                families[name].append(f"{name}{{{labels}}} {value}")
        lines = []
        for name, samples in families.items():
            lines += [f"# TYPE {name} gauge", *samples]
        return "\n".join(lines) + "\n"

    def quota_json(self, record: QuotaRecord) -> dict[str, Any]:
        """One quota as VMS shows it."""
        value: dict[str, Any] = json.loads(self._record_fragment(record))
        return value

    def quotas(self, ids: list[int]) -> list[str]:
        """Quotas `ids` as JSON texts (scenario quotas from their records, benchmark quotas from
        the engine's closed form, vectorised)."""
        e = self.engine
        extra_idx = np.array([i - e.extra_base_id for i in ids if i not in e.quotas], dtype=np.int64)
        extra_used = iter(e.extra_used(extra_idx).tolist() if len(extra_idx) else [])
        out = []
        for ident in ids:
            record = e.quotas.get(ident)
            if record is not None:
                out.append(self._record_fragment(record))
                continue
            idx = ident - e.extra_base_id
            used = next(extra_used)
            hard, soft = int(e.extra_hard[idx]), int(e.extra_soft[idx])
            state = "HARD_EXCEEDED" if used >= hard else "SOFT_EXCEEDED" if used > soft else "OK"
            text = self._quota_prefix(ident, e.extra_guid(idx), e.extra_name(idx), e.extra_path(idx))
            out.append(self._quota_fragment(text, hard=hard, soft=soft, hard_inodes=0, soft_inodes=0,
                                            used_b=used, used_f=used / 2**20, state=state, grace=0.0,
                                            time_to_block=""))
        return out

    def view_json(self, view_id: int) -> dict[str, Any]:
        e = self.engine
        v = e.views[view_id]
        used = float(e.used_bytes[e.stream_paths.index(v.path)]) if v.path in e.stream_paths else 0.0
        policy = e.policies[v.policy_id]
        return {
            "id": v.id, "guid": v.guid, "name": v.name, "title": v.name, "path": v.path, "alias": "",
            "url": f"https://{self.address}/api/views/{v.id}", "policy_id": v.policy_id, "policy": policy.name,
            "protocols": list(v.protocols), "bucket": v.bucket, "tenant_id": v.tenant_id,
            "tenant_name": e.tenants[v.tenant_id],
            "cluster": e.scenario.cluster.name, "cluster_id": e.cluster_id, "create_dir": v.create_dir,
            "logical_capacity": int(used), "physical_capacity": int(used / e.drr), "directory": True,
            "share": "", "sync": "SYNCHRONIZED",
        }

    def policy_json(self, policy_id: int) -> dict[str, Any]:
        p = self.engine.policies[policy_id]
        return {"id": p.id, "guid": p.guid, "name": p.name, "title": p.name,
                "url": f"https://{self.address}/api/viewpolicies/{p.id}", "tenant_id": 1,
                "tenant_name": "default", "cluster": self.engine.scenario.cluster.name,
                "cluster_id": self.engine.cluster_id, "flavor": "NFS"}


def quota_ids(engine: Engine, query: Any, tenant: str | None = None) -> list[int]:
    """The quota ids a `GET /quotas/` with these filters lists, in id order: with `tenant` (the
    request's X-Tenant-Name), that tenant's only (none for a tenant the cluster does not have)."""
    e = engine
    if tenant is not None:
        return [i for i in quota_ids(engine, query) if _tenant_of(e, i) == tenant]
    path, name = query.get("path"), query.get("name")
    if path is not None or name is not None:
        ids = [q.id for q in e.quotas.values()
               if (path is None or q.path == path) and (name is None or q.name == name)]
        idx = e.extra_index(path=path) if path is not None else e.extra_index(name=name)
        if idx is not None and (name is None or e.extra_name(idx) == name):  # extra_index checked path
            ids.append(e.extra_base_id + idx)
        return sorted(ids)
    ids = sorted(e.quotas)
    if e.extra_count:
        extra = (np.flatnonzero(e.extra_alive) + e.extra_base_id).tolist()
        ids = sorted(ids + extra) if ids and ids[-1] > e.extra_base_id else ids + extra
    for key, field in (("path__contains", "path"), ("name__contains", "name")):
        needle = query.get(key)
        if needle is not None:
            ids = [i for i in ids if needle in _quota_text_field(e, i, field)]
    return ids


def _tenant_of(e: Engine, ident: int) -> str:
    record = e.quotas.get(ident)
    return e.tenants[record.tenant_id if record is not None else 1]  # benchmark filler: the default tenant


def _quota_text_field(e: Engine, ident: int, field: str) -> str:
    record = e.quotas.get(ident)
    if record is not None:
        return record.path if field == "path" else record.name
    idx = ident - e.extra_base_id
    return e.extra_path(idx) if field == "path" else e.extra_name(idx)


def _prom_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
