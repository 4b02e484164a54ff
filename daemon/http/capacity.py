"""`GET /api/v1/capacity`: the capacity plan of every pool (VMS cluster pools, filesystems).

One JSON object `{"t": …, "pools": [pool, …]}`, each pool
`{"name", "kind", "usable_bytes", "used_bytes", "thresholds": {"0.8": {"p10", "p50", "p90"}, …},
"order_by", "order_bytes", "order_logical_bytes", "drr", "headroom_bytes", "cost", "band", …}`
(`band`: the forecast's used bytes per quantile once a day to the plan horizon).
Timestamps are ISO 8601 (UTC), null beyond the plan horizon. As everywhere in the API, p10 / p50
/ p90 name the usage path: the p90 path crosses first, so its date is the pessimistic one. The
handler reads the capacity stage's latest immutable view through `provider` (None: no capacity
stage, 404); `quotapilot capacity` prints this document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from quotapilot.alerts.words import iso8601
from quotapilot.daemon.stages.capacity import CapacityView
from quotapilot.forecasting.capacity import PoolPlan

CapacityProvider = Callable[[], CapacityView | None]
CAPACITY_PATH = "/api/v1/capacity"


def iso_or_none(t: float | None) -> str | None:
    return None if t is None else iso8601(t)


def plan_json(plan: PoolPlan) -> dict[str, Any]:
    """One pool of the capacity document."""
    cost = None
    if plan.cost is not None:
        cost = {"expansion": plan.cost.expansion, "expansion_per_month": plan.cost.expansion_per_month,
                "headroom": plan.cost.headroom, "headroom_per_month": plan.cost.headroom_per_month}
    return {
        "name": plan.name, "kind": plan.kind,
        "usable_bytes": plan.usable_bytes, "used_bytes": plan.used_bytes,
        "utilization_ratio": plan.used_bytes / plan.usable_bytes if plan.usable_bytes else None,
        "thresholds": {str(float(w.threshold_ratio)): {q: iso_or_none(getattr(w, q)) for q in ("p10", "p50", "p90")}
                       for w in plan.thresholds},
        "order_threshold": plan.order_ratio,
        "order_by": iso_or_none(plan.order_by),
        "order_bytes": plan.order_bytes,
        "order_logical_bytes": plan.order_logical_bytes,
        "drr": plan.drr,
        "headroom_bytes": plan.headroom_bytes,
        "cost": cost,
        "plan_horizon_end": iso8601(plan.horizon_end),
        "forecast_model": plan.forecast_model,
        "provisional": plan.provisional,
        "t": iso8601(plan.t),
        "band": [{"t": iso8601(t), "p10": round(lo), "p50": round(mid), "p90": round(hi)}
                 for t, lo, mid, hi in plan.band],
    }


def capacity_document(view: CapacityView) -> dict[str, Any]:
    return {"t": iso8601(view.t), "pools": [plan_json(plan) for plan in view.ordered()]}


def add_capacity_routes(app: web.Application, provider: CapacityProvider) -> None:
    """Register `GET /api/v1/capacity` on `app`, reading `provider()` at each request."""

    async def get_capacity(request: web.Request) -> web.Response:
        view = provider()
        if view is None:
            return web.json_response({"error": {"code": "capacity_not_running",
                                                "message": "capacity planning is not running in this daemon"}},
                                     status=404)
        return web.json_response(capacity_document(view))

    app.router.add_get(CAPACITY_PATH, get_capacity)
