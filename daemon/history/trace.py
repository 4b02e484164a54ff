"""Usage traces from the simulator's ground truth, for replay, backfilled Prometheus and tests.

`scenario_trace` runs a built-in scenario's engine (no HTTP, no daemon) with every quota's limits
lifted, so the trace is the scenario's *demand*: what its pipelines write, sampled every
`interval_seconds`. The scenario's initial hard and soft limits ride along (the limits a replay
starts from). `scenario_prehistory` is the other direction: the weeks *before* a scenario starts
(the demo's `--warm-start`). `openmetrics_text` renders traces as quotapilot's own metrics in the
OpenMetrics format that `promtool tsdb create-blocks-from openmetrics` backfills.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


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
    used_inodes: tuple[int, ...] | None = None


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


def scenario_prehistory(scenario: str, *, start: float, days: float = 28.0, interval_seconds: float = 300.0,
                        seed: int = 0) -> list[QuotaTrace]:
    """Every scenario quota's usage (bytes and files) over the `days` before `start`, sampled at
    `start - days + k * interval_seconds` up to (not including) `start`: what a Prometheus would
    hold if the scenario's pipelines had been running before the demo began.

    The same engine's ingest model with the same seed and origin, at negative step indices: the
    day-0 rate with its daily and weekly profile, noise and random bursts (the scenario's
    scheduled bursts and steps lie after the start), and its sweeps. Usage is reconstructed
    *backwards* from the scenario's initial usage, so the history ends exactly where the
    simulator's first poll begins. Where the day-0 rate run backwards would empty a quota, the
    history is zero before that (the data was not written yet). A stream swept to nothing
    (`keep_fraction = 0`) is integrated forwards from empty before its last sweep."""
    import numpy as np

    from quotapilot.daemon.simulator.engine import _FILE_QUANTUM, Engine
    from quotapilot.daemon.simulator.scenario import load_scenario

    if days <= 0 or interval_seconds <= 0:
        raise ValueError("days and interval_seconds must be > 0")
    engine = Engine(load_scenario(scenario), seed=seed, start=start)
    dt = engine.step_seconds
    steps = math.ceil(days * 86400 / dt)
    offered_b, offered_f, keep = engine.ingest.offered(np.arange(-steps, 0, dtype=np.int64))
    offered_b = np.round(offered_b)
    offered_f = np.round(offered_f * _FILE_QUANTUM) / _FILE_QUANTUM
    samples = math.floor(days * 86400 / interval_seconds)
    times = [engine.origin - (samples - j) * interval_seconds for j in range(samples)]
    # the step that ends at (or last before) each sample time; step i ends at origin - (steps - 1 - i) * dt
    ends = [max(0, min(steps - 1, math.floor((t - engine.origin) / dt) + steps - 1)) for t in times]
    cluster = engine.scenario.cluster.name
    traces = []
    for quota in engine.quotas.values():
        s = quota.stream
        if s is None:
            continue
        used = _backwards(offered_b[:, s], keep[:, s], float(engine.used_bytes[s]))
        files = _backwards(offered_f[:, s], keep[:, s], float(engine.used_files[s]))
        traces.append(QuotaTrace(cluster, quota.name, quota.path, tuple(times),
                                 tuple(int(used[i]) for i in ends), quota.hard_limit, quota.soft_limit or None,
                                 tuple(int(files[i]) for i in ends)))
    return traces


def _backwards(offered: npt.NDArray[np.float64], keep: npt.NDArray[np.float64], final: float) -> list[float]:
    """Usage at the end of each step such that the last is `final`, given what each step wrote
    and the fraction a sweep at its start kept (`used[i] = used[i - 1] * keep[i] + offered[i]`)."""
    n = len(offered)
    used = [0.0] * n
    full_sweeps = [i for i in range(n) if keep[i] <= 0.0]
    last_full = full_sweeps[-1] if full_sweeps else -1
    value = final
    for i in range(n - 1, last_full, -1):
        used[i] = value
        value = max(0.0, (value - offered[i]) / keep[i])
    value = 0.0
    for i in range(last_full + 1):
        value = value * keep[i] + offered[i]
        used[i] = value
    return used


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics_text(traces: Sequence[QuotaTrace], *, with_limits: bool = True) -> str:
    """`quotapilot_target_used_bytes` (`_used_inodes` where a trace has them, and `_hard_limit_bytes`,
    constant at the initial limit) per trace, one family after the other, timestamps in seconds, ending in `# EOF`."""
    lines = ["# HELP quotapilot_target_used_bytes Bytes used in the quota (VMS used_capacity).",
             "# TYPE quotapilot_target_used_bytes gauge"]
    for trace in traces:
        labels = f'cluster="{_label(trace.cluster)}",path="{_label(trace.path)}",target="{_label(trace.name)}"'
        lines.extend(f"quotapilot_target_used_bytes{{{labels}}} {used} {t:.3f}"
                     for t, used in zip(trace.times, trace.used_bytes, strict=True))
    if any(trace.used_inodes is not None for trace in traces):
        lines += ["# HELP quotapilot_target_used_inodes Files and directories in the quota.",
                  "# TYPE quotapilot_target_used_inodes gauge"]
        for trace in traces:
            if trace.used_inodes is None:
                continue
            labels = f'cluster="{_label(trace.cluster)}",path="{_label(trace.path)}",target="{_label(trace.name)}"'
            lines.extend(f"quotapilot_target_used_inodes{{{labels}}} {files} {t:.3f}"
                         for t, files in zip(trace.times, trace.used_inodes, strict=True))
    if with_limits:
        lines += ["# HELP quotapilot_target_hard_limit_bytes Hard limit of the quota in bytes.",
                  "# TYPE quotapilot_target_hard_limit_bytes gauge"]
        for trace in traces:
            labels = f'cluster="{_label(trace.cluster)}",path="{_label(trace.path)}",target="{_label(trace.name)}"'
            lines.extend(f"quotapilot_target_hard_limit_bytes{{{labels}}} {trace.initial_hard_limit_bytes} {t:.3f}"
                         for t in trace.times)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
