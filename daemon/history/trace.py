"""Usage traces from the simulator's ground truth, for replay, backfilled Prometheus and tests.

`scenario_trace` runs a built-in scenario's engine (no HTTP, no daemon) with every quota's limits
lifted, so the trace is the scenario's *demand*: what its pipelines write, sampled every
`interval_seconds`. The scenario's initial hard and soft limits ride along (the limits a replay
starts from). `openmetrics_text` renders traces as quotapilot's own metrics in the OpenMetrics
format that `promtool tsdb create-blocks-from openmetrics` backfills.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QuotaTrace:
    """One quota's demand over time."""

    cluster: str
    name: str
    path: str
    times: tuple[float, ...]
    used_bytes: tuple[int, ...]
    initial_hard_limit_bytes: int
    initial_soft_limit_bytes: int | None


def scenario_trace(scenario: str, *, start: float, days: float, interval_seconds: float = 900.0,
                   seed: int = 0) -> list[QuotaTrace]:
    """Every scenario quota's usage at `start + k * interval_seconds`, limits lifted."""
    from quotapilot.daemon.simulator.engine import Engine
    from quotapilot.daemon.simulator.scenario import load_scenario

    engine = Engine(load_scenario(scenario), seed=seed, start=start)
    quotas = [q for q in engine.quotas.values() if q.stream is not None]
    initial = {q.id: (q.hard_limit, q.soft_limit or None) for q in quotas}
    for quota in quotas:
        engine.patch_quota(quota.id, {"hard_limit": 0, "soft_limit": 0})
    samples: dict[int, list[int]] = {q.id: [] for q in quotas}
    times: list[float] = []
    steps = math.floor(days * 86400 / interval_seconds)
    for k in range(steps + 1):
        t = engine.origin + k * interval_seconds
        engine.advance_to(t)
        times.append(engine.now)
        for quota in quotas:
            samples[quota.id].append(int(engine.quota_usage(quota)[0]))
    cluster = engine.scenario.cluster.name
    return [QuotaTrace(cluster, q.name, q.path, tuple(times), tuple(samples[q.id]), initial[q.id][0],
                       initial[q.id][1]) for q in quotas]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics_text(traces: Sequence[QuotaTrace], *, with_limits: bool = True) -> str:
    """`quotapilot_target_used_bytes` (and `_hard_limit_bytes`, constant at the initial limit) per
    trace, one family after the other, timestamps in seconds, ending in `# EOF`."""
    lines = ["# HELP quotapilot_target_used_bytes Bytes used in the quota (VMS used_capacity).",
             "# TYPE quotapilot_target_used_bytes gauge"]
    for trace in traces:
        labels = f'cluster="{_label(trace.cluster)}",path="{_label(trace.path)}",target="{_label(trace.name)}"'
        lines.extend(f"quotapilot_target_used_bytes{{{labels}}} {used} {t:.3f}"
                     for t, used in zip(trace.times, trace.used_bytes, strict=True))
    if with_limits:
        lines += ["# HELP quotapilot_target_hard_limit_bytes Hard limit of the quota in bytes.",
                  "# TYPE quotapilot_target_hard_limit_bytes gauge"]
        for trace in traces:
            labels = f'cluster="{_label(trace.cluster)}",path="{_label(trace.path)}",target="{_label(trace.name)}"'
            lines.extend(f"quotapilot_target_hard_limit_bytes{{{labels}}} {trace.initial_hard_limit_bytes} {t:.3f}"
                         for t in trace.times)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
