"""What a scenario's write streams offer the cluster, step by step: the ingest model.

Per view path and simulated step: a base rate with a linear or exponential trend, a daily (UTC
hour) and weekly profile, steps, scheduled and random bursts, a rate that follows another path,
log-normal noise, and the keep factor of scheduled deletes (sweeps). What the cluster *accepts* of
it (quotas, the pool, grace) is the engine's integration.

Randomness is counter-based: a splitmix64 hash of (seed, stream, step index), so the same seed gives
the same numbers whatever the call order or batching.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from quotapilot.daemon.simulator.scenario import Scenario

FloatArray = npt.NDArray[np.float64]
_DAY = 86400.0


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=1024)
def _key(seed: int, stream: int, index: int) -> np.uint64:
    key = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return np.uint64(_mix(key ^ np.uint64(stream * 1_000_003 + index))[0])


def hash_uniform(seed: int, stream: int, index: int, counters: npt.ArrayLike) -> FloatArray:
    """Uniform [0, 1) numbers keyed by (seed, stream, index, counter)."""
    c = np.asarray(counters, dtype=np.int64).astype(np.uint64)
    bits = _mix(c ^ _key(seed, stream, index))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def hash_normal(seed: int, stream: int, index: int, counters: npt.ArrayLike) -> FloatArray:
    """Standard normal numbers keyed like `hash_uniform` (Box-Muller)."""
    u1 = hash_uniform(seed, stream, 2 * index, counters)
    u2 = hash_uniform(seed, stream, 2 * index + 1, counters)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * math.pi * u2)


_RNG_BURST, _RNG_NOISE = 1, 2


class IngestModel:
    """The offered writes of a scenario's streams (one per view, in the scenario's order)."""

    def __init__(self, scenario: Scenario, *, seed: int, origin: float) -> None:
        self.scenario = scenario
        self.seed = seed
        self.origin = origin
        self.step_seconds = float(scenario.step_seconds)
        paths = [v.path for v in scenario.views]
        self._parents = [paths.index(v.ingest.follows) if v.ingest.follows else -1 for v in scenario.views]
        self._order = sorted(range(len(paths)), key=lambda i: self._parents[i] >= 0)  # leaders first

    def offered(self, ks: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Bytes and files each stream offers in steps `ks`, and the keep factor of scheduled deletes."""
        dt = self.step_seconds
        t = self.origin + ks.astype(np.float64) * dt
        day = (t - self.origin) / _DAY
        n, s_count = len(ks), len(self.scenario.views)
        rate = np.zeros((n, s_count))
        bytes_ = np.zeros((n, s_count))
        files = np.zeros((n, s_count))
        keep = np.ones((n, s_count))
        hour = (t % _DAY) / 3600.0
        h0 = np.floor(hour).astype(np.int64) % 24
        frac = hour - np.floor(hour)
        dow = (np.floor(t / _DAY).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        for s in self._order:
            spec = self.scenario.views[s].ingest
            mult = np.ones(n)
            extra = np.zeros(n)
            for step in spec.steps:
                mult *= np.where(day >= step.at_day, step.factor, 1.0)
            for burst in spec.bursts:
                inside = (day >= burst.at_day) & (day < burst.at_day + burst.duration_hours / 24.0)
                mult *= np.where(inside, burst.multiplier, 1.0)
                extra += np.where(inside, burst.extra_bytes / (burst.duration_hours * 3600.0), 0.0)
            rb = spec.random_bursts
            if rb.per_day > 0:
                slot_len = rb.duration_hours * 3600.0
                slot = np.floor((t - self.origin) / slot_len).astype(np.int64)
                hit = hash_uniform(self.seed, _RNG_BURST, s, slot) < rb.per_day * rb.duration_hours / 24.0
                mult *= np.where(hit, rb.multiplier, 1.0)
            parent = self._parents[s]
            if parent >= 0:
                det = spec.fraction * rate[:, parent] * mult + extra
            else:
                if spec.end_bytes_per_day is None or spec.ramp_days <= 0:
                    base = np.full(n, spec.bytes_per_day)
                else:
                    progress = np.clip(day / spec.ramp_days, 0.0, 1.0)
                    if spec.trend == "exponential":
                        base = spec.bytes_per_day * (spec.end_bytes_per_day / spec.bytes_per_day) ** progress
                    else:
                        base = spec.bytes_per_day + (spec.end_bytes_per_day - spec.bytes_per_day) * progress
                prof = np.asarray(spec.daily_profile)
                daily = prof[h0] * (1.0 - frac) + prof[(h0 + 1) % 24] * frac
                weekly = np.asarray(spec.weekly_profile)[dow]
                det = base / _DAY * daily * weekly * mult + extra
            rate[:, s] = det
            if spec.noise > 0:
                z = hash_normal(self.seed, _RNG_NOISE, s, ks)
                noisy = det * np.exp(spec.noise * z - spec.noise**2 / 2.0)
            else:
                noisy = det
            bytes_[:, s] = noisy * dt
            size = spec.mean_file_size_bytes
            if spec.files_per_day is not None and spec.bytes_per_day > 0:
                size = spec.bytes_per_day / max(spec.files_per_day, 1e-9)
            files[:, s] = bytes_[:, s] / size
            for sweep in self.scenario.views[s].deletes:
                at = sweep.at_hour * 3600.0
                hit_d = ((t - at) % _DAY) < dt
                if sweep.every == "weekly":
                    event_dow = (np.floor((t + dt - at) / _DAY).astype(np.int64) + 3) % 7
                    hit_d &= event_dow == sweep.weekday
                keep[:, s] *= np.where(hit_d, sweep.keep_fraction, 1.0)
        return bytes_, files, keep
