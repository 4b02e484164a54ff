"""JSON rendering for `/api/v1`: the records the handlers read (a snapshot's targets, the
overrides in force) and the answer shapes `openapi.json` documents, plus `ApiError`, the one
error shape `{"error": {"code", "message", "field"?}}`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from quotapilot.daemon.runtime.snapshot import Snapshot
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.store.overrides import Override
from quotapilot.daemon.store.reservations import Reservation, ReservedCapacity
from quotapilot.forecasting import preflight as pf
from quotapilot.forecasting.types import (
    ActionOutcome,
    ClusterCapacity,
    Decision,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
)


class ApiError(Exception):
    """An answer other than success, with a JSON body `{"error": {"code", "message", "field"?}}`."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return json_response({"error": error}, status=self.status, headers=self.headers)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body, allow_nan=False), status=status, content_type="application/json",
                        headers=headers)


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One quota as the latest snapshot knows it."""

    observation: Observation
    capacity: ClusterCapacity | None = None
    forecasts: Mapping[Dimension, SeriesForecast] = field(default_factory=dict)
    decisions: Mapping[Dimension, Decision] = field(default_factory=dict)
    last_action: ActionOutcome | None = None
    ingest_bytes_per_second: float | None = None
    dropped: bool = False

    @property
    def target(self) -> TargetId:
        return self.observation.target


def snapshot_records(snapshot: Snapshot | None) -> list[TargetRecord]:
    """The quotas of a snapshot that have an accepted observation (none before the first poll)."""
    if snapshot is None:
        return []
    records: list[TargetRecord] = []
    for cluster in snapshot.clusters.values():
        for state in cluster.targets.values():
            if state.observation is None:
                continue
            records.append(TargetRecord(
                observation=state.observation, capacity=cluster.capacity, forecasts=state.forecasts,
                decisions=state.decisions, last_action=state.last_action,
                ingest_bytes_per_second=state.ingest_rate_bytes_per_second, dropped=state.dropped is not None))
    return records


# --------------------------------------------------------------------------- the overrides in force
@dataclass(frozen=True, slots=True)
class Pause:
    until: float | None
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class OverrideView:
    """The overrides in force at one time: pauses by (cluster, target name), and the kill switch."""

    overrides: tuple[Override, ...] = ()
    kill_switch: Pause | None = None

    def pause_of(self, target: TargetId) -> Pause | None:
        for override in self.overrides:
            if not override.is_kill_switch and override.applies_to(target):
                return Pause(override.paused_until, override.reason, override.created_at)
        return None


# ------------------------------------------------------------------------------- JSON shapes
def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def seconds_until(t: float | None, now: float) -> float | None:
    return None if t is None or not math.isfinite(t) else max(0.0, t - now)


def target_ref(target: TargetId) -> dict[str, str]:
    return {"cluster": target.cluster, "name": target.name, "path": target.path}


def killswitch_json(settings: Settings, overrides: OverrideView) -> dict[str, Any]:
    switch = overrides.kill_switch
    return {"enabled": settings.policy.kill_switch or switch is not None,
            "from_config": settings.policy.kill_switch,
            "reason": switch.reason if switch else None, "since": switch.since if switch else None}


def reservation_json(r: Reservation, now: float) -> dict[str, Any]:
    return {"id": r.id, "idempotency_key": r.idempotency_key, "cluster": r.cluster, "target": r.target,
            "bytes": r.bytes, "inodes": r.inodes, "status": r.effective_status(now), "created_at": r.created_at,
            "expires_at": r.expires_at, "released_at": r.released_at}


def assessment_json(record: TargetRecord, a: pf.Assessment, now: float) -> dict[str, Any]:
    inodes = next((d for d in a.dimensions if d.dimension is Dimension.INODES), None)
    earliest = now if a.fits else a.plan.earliest_at
    return {
        "target": target_ref(record.target), "fits": a.fits, "fits_now": a.fits_now,
        "needed_for_seconds": a.window_seconds, "forecast_quantile": pf.FORECAST_QUANTILE,
        "bytes": a.bytes.as_json(), "inodes": inodes.as_json() if inodes else None,
        "action": a.plan.as_json(), "earliest_fit_at": earliest,
        "data_age_seconds": max(0.0, now - record.observation.t), "evaluated_at": now,
    }


def target_json(record: TargetRecord, reserved: ReservedCapacity, overrides: OverrideView, now: float, *,
                mode: str) -> dict[str, Any]:
    """One target as `GET /api/v1/targets/{ref}` answers it; `mode` is the policy mode that applies to it."""
    obs = record.observation
    target = obs.target
    pause = overrides.pause_of(target)
    bytes_forecast = record.forecasts.get(Dimension.BYTES)
    full = bytes_forecast.runway(1.0) if bytes_forecast is not None else None
    decision = record.decisions.get(Dimension.BYTES)
    action = record.last_action
    return {
        "cluster": target.cluster, "name": target.name, "path": target.path,
        "used_bytes": obs.used_bytes, "hard_limit_bytes": obs.hard_limit_bytes,
        "soft_limit_bytes": obs.soft_limit_bytes, "utilization_ratio": finite(obs.utilization_ratio),
        "used_inodes": obs.used_inodes, "hard_limit_inodes": obs.hard_limit_inodes,
        "inode_utilization_ratio": finite(obs.inode_utilization_ratio),
        "ingest_rate_bytes_per_second": finite(record.ingest_bytes_per_second),
        "state": obs.state, "observed_at": obs.t, "data_age_seconds": max(0.0, now - obs.t),
        "runway_seconds": {q: seconds_until(getattr(full, q), now) if full else None for q in ("p10", "p50", "p90")},
        "runways": [
            {"threshold_ratio": r.threshold_ratio,
             **{f"{q}_seconds": seconds_until(getattr(r, q), now) for q in ("p10", "p50", "p90")}}
            for r in (bytes_forecast.runways if bytes_forecast is not None else ())],
        "forecast_model": (bytes_forecast.forecast.model if bytes_forecast is not None
                           and bytes_forecast.forecast is not None else None),
        "mode": mode,
        "paused": pause is not None, "paused_until": pause.until if pause else None,
        "pause_reason": pause.reason if pause else None,
        "reserved_bytes": reserved.bytes, "reserved_inodes": reserved.inodes, "reservations": reserved.count,
        "decision": None if decision is None else {
            "kind": decision.kind.value, "reason": decision.reason, "guard": decision.guard,
            "new_hard_limit_bytes": decision.new_hard, "urgency_seconds": finite(decision.urgency_seconds)},
        "last_action": None if action is None else {
            "status": action.status.value, "at": action.t, "reason": action.reason,
            "dimension": action.dimension.value, "old_hard": action.old_hard, "new_hard": action.new_hard},
    }
