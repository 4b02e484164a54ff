"""`quotapilot forecast`: runway from a CSV of `timestamp,used_bytes`.

The CSV has a header line and two columns; timestamps are ISO 8601 (naive means UTC) or epoch
seconds, steps may be irregular. The model, bands and runways are exactly the daemon's
(`quotapilot.forecasting.series`); "now" is the last sample's time. numpy, statsmodels and
matplotlib are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import datetime as dt
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quotapilot.daemon.commands.output_paths import plot_problem
from quotapilot.daemon.settings import MAX_BYTES, MAX_FORECAST_HORIZON_SECONDS
from quotapilot.daemon.units import format_bytes, format_duration, parse_bytes, parse_duration

if TYPE_CHECKING:
    from quotapilot.forecasting.series import SeriesOutlook

_TABLE_HORIZONS: tuple[tuple[str, float], ...] = (("1h", 3600.0), ("24h", 86400.0), ("7d", 7 * 86400.0))


class CsvError(ValueError):
    """A CSV problem, with the 1-based line it is on."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


EARLIEST = 0.0
LATEST = dt.datetime(3000, 1, 1, tzinfo=dt.UTC).timestamp()
"""Sample times are in [1970, 3000): anything else is a mistake (epoch milliseconds), and a time
past year 9999 cannot even be printed (`datetime` stops there)."""


MAX_USED_BYTES = float(MAX_BYTES)
"""The largest `used_bytes` read (2**62, 4 EiB, the daemon's own ceiling for byte counts: SQLite
integers are 64-bit). No VAST quota comes within orders of magnitude of it, so a larger value is
a unit or export mistake; and the model squares rates, which overflow to NaN long before 1e308
(1e155 bytes did)."""


def parse_timestamp(text: str) -> float:
    """ISO 8601 (naive: UTC; a trailing Z is fine) or epoch seconds → epoch seconds. Eight digits
    are ISO 8601's basic date (`20260105`), not epoch seconds in 1970–1973."""
    text = text.strip()
    basic_date = len(text) == 8 and text.isdigit()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None and not basic_date:
        if not math.isfinite(value):
            raise ValueError(f"not a finite time: {text!r}")
        if not EARLIEST <= value < LATEST:
            raise ValueError(f"epoch seconds out of range (years 1970 to 2999): {text!r}"
                             + (" (epoch milliseconds?)" if EARLIEST <= value / 1000 < LATEST else ""))
        return value
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 time or epoch seconds: {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if not EARLIEST <= when.timestamp() < LATEST:
        raise ValueError(f"time out of range (years 1970 to 2999): {text!r}")
    return when.timestamp()


def read_csv_text(path: Path) -> str:
    """The whole file as UTF-8, a leading byte-order mark dropped (Excel's "CSV UTF-8" writes one);
    raises `CsvError` naming the line of the first byte that is not UTF-8 (decoding while the csv
    module reads would know neither), OSError if unreadable."""
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise CsvError(line, f"not UTF-8 text (byte {raw[exc.start]:#04x}); save the file as UTF-8") from None


def read_samples(path: Path) -> list[tuple[float, float]]:
    """Samples from the CSV; raises `CsvError` naming the first bad line, OSError if unreadable."""
    samples: list[tuple[float, float]] = []
    with io.StringIO(read_csv_text(path), newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None:
            raise CsvError(1, "empty file (want a header: timestamp,used_bytes)")
        names = [name.strip().lower() for name in header]
        if names[:2] != ["timestamp", "used_bytes"]:
            raise CsvError(1, f"header is {','.join(header)!r}, want 'timestamp,used_bytes'")
        for row in rows:
            line = rows.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2:
                raise CsvError(line, f"want 2 columns, got {len(row)}")
            try:
                t = parse_timestamp(row[0])
            except ValueError as exc:
                raise CsvError(line, str(exc)) from None
            try:
                used = float(row[1])
            except ValueError:
                raise CsvError(line, f"used_bytes is not a number: {row[1].strip()!r}") from None
            if not math.isfinite(used) or used < 0:
                raise CsvError(line, f"used_bytes must be a finite number >= 0, got {row[1].strip()!r}")
            if used > MAX_USED_BYTES:
                raise CsvError(line, f"used_bytes above 2**62 (4 EiB), no quota is that large: {row[1].strip()!r}")
            samples.append((t, used))
    if len(samples) < 2:
        raise CsvError(max(2, len(samples) + 1), "need at least 2 samples")
    return samples


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def _parse_args(args: argparse.Namespace) -> tuple[float | None, list[float], float]:
    limit = None if args.limit is None else float(parse_bytes(args.limit))
    if limit is not None and limit <= 0:
        raise ValueError("--limit must be > 0")
    try:
        thresholds = [float(part) for part in str(args.thresholds).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--thresholds: not a list of ratios: {args.thresholds!r}") from None
    if not thresholds or any(not (0 < ratio <= 10) for ratio in thresholds):
        raise ValueError(f"--thresholds: want ratios like 0.75,0.9,1.0, got {args.thresholds!r}")
    horizon = parse_duration(args.horizon)
    if not 0 < horizon <= MAX_FORECAST_HORIZON_SECONDS:
        raise ValueError(f"--horizon must be > 0 and at most {MAX_FORECAST_HORIZON_SECONDS / 86400:.0f} days, "
                         f"got {args.horizon!r}")
    return limit, sorted(set(thresholds)), horizon


def cmd_forecast(args: argparse.Namespace) -> int:
    """Exit 0 with the report; 2 bad usage (flags, the CSV, a `--plot` path no file can be
    written at, no matplotlib); 1 the plot could not be written after all (a full disk). The plot
    is written before the report is printed, so a failure never follows a printed `--json` object."""
    try:
        limit, thresholds, horizon = _parse_args(args)
        problem = None if args.plot is None else plot_problem(args.plot)
        if problem is not None:
            print(f"quotapilot forecast: --plot {args.plot}: {problem}", file=sys.stderr)
            return 2
        samples = read_samples(args.csv)
    except CsvError as exc:
        print(f"quotapilot forecast: {args.csv}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"quotapilot forecast: {exc}", file=sys.stderr)
        return 2

    from quotapilot.forecasting.series import ModelConfig, forecast_samples

    config = ModelConfig(horizon_seconds=horizon)
    _, outlook = forecast_samples(samples, limit=limit, thresholds=thresholds, config=config)
    report = build_report(outlook, limit=limit, thresholds=thresholds, step_seconds=config.step_seconds)
    if args.plot is not None:
        try:
            write_plot(args.plot, samples, outlook, limit=limit, thresholds=thresholds)
        except ImportError:
            print("quotapilot forecast: --plot needs matplotlib (pip install 'quotapilot[plot]')",
                  file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"quotapilot forecast: cannot write --plot {args.plot}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(render_table(report, outlook, limit=limit))
    return 0


def build_report(outlook: SeriesOutlook, *, limit: float | None, thresholds: list[float],
                 step_seconds: float) -> dict[str, Any]:
    forecast = outlook.forecast
    by_ratio = {round(runway.threshold_ratio, 9): runway for runway in outlook.runways}
    runway_json: dict[str, dict[str, str | None]] = {}
    for ratio in thresholds:
        found = by_ratio.get(round(ratio, 9))
        runway_json[str(float(ratio))] = {
            q: iso(getattr(found, q)) if found is not None else None for q in ("p10", "p50", "p90")}
    points = []
    if forecast is not None:
        for t, p10, p50, p90 in zip(forecast.times, forecast.p10, forecast.p50, forecast.p90, strict=True):
            points.append({"t": iso(t), "p10": round(p10), "p50": round(p50), "p90": round(p90)})
    return {
        "model": forecast.model if forecast is not None else None,
        "step_seconds": forecast.step_seconds if forecast is not None else step_seconds,
        "fallback": forecast.fallback if forecast is not None else outlook.reason,
        "t0": iso(forecast.t0) if forecast is not None else None,
        "used_bytes": outlook.current_used,
        "limit_bytes": limit,
        "rate_bytes_per_second": outlook.rate_per_second,
        "runway": runway_json,
        "forecast": points,
    }


def render_table(report: dict[str, Any], outlook: SeriesOutlook, *, limit: float | None) -> str:
    forecast = outlook.forecast
    lines = [f"model     {report['model'] or '-'}" + (f"  (fallback: {report['fallback']})"
                                                       if report["fallback"] else "")]
    if forecast is None or outlook.current_used is None:
        lines.append(f"no forecast: {outlook.reason}")
        return "\n".join(lines)
    rate = outlook.rate_per_second or 0.0
    lines.append(f"as of     {iso(forecast.t0)}   used {format_bytes(outlook.current_used)}"
                 + (f" of {format_bytes(limit)}" if limit else "")
                 + f"   rate {format_bytes(rate * 86400)}/day")
    lines.append("")
    lines.append(f"{'horizon':<9}{'p10':>14}{'p50':>14}{'p90':>14}")
    for label, seconds in (*_TABLE_HORIZONS, ("end", forecast.times[-1] - forecast.t0)):
        t = forecast.t0 + seconds
        if t > forecast.times[-1] + 1e-6:
            continue
        values = [forecast.at(t, q) for q in ("p10", "p50", "p90")]
        lines.append(f"{label:<9}" + "".join(f"{format_bytes(v or 0.0):>14}" for v in values))
    if limit:
        lines.append("")
        lines.append(f"{'runway':<9}{'p90 (soon)':>22}{'p50':>22}{'p10 (late)':>22}")
        for runway in outlook.runways:
            cells = []
            for q in ("p90", "p50", "p10"):
                t = getattr(runway, q)
                cells.append("never" if t is None else f"{format_duration(t - forecast.t0)}")
            lines.append(f"{runway.threshold_ratio:<9.0%}" + "".join(f"{c:>22}" for c in cells))
        lines.append(f"(within {format_duration(forecast.times[-1] - forecast.t0)}; never = not within it)")
    return "\n".join(lines)


def write_plot(path: Path, samples: list[tuple[float, float]], outlook: SeriesOutlook, *,
               limit: float | None, thresholds: list[float]) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def as_dates(times: Sequence[float]) -> Any:
        return (np.asarray(times, dtype=np.float64) * 1000).astype("int64").astype("datetime64[ms]")

    fig, ax = plt.subplots(figsize=(10, 5))
    history_t = as_dates([t for t, _ in samples])
    ax.plot(history_t, [u for _, u in samples], color="black", lw=1, label="used")
    forecast = outlook.forecast
    if forecast is not None:
        ft = as_dates(forecast.times)
        ax.plot(ft, forecast.p50, color="tab:blue", lw=1.5, label=f"p50 ({forecast.model})")
        ax.fill_between(ft, forecast.p10, forecast.p90, color="tab:blue", alpha=0.25, label="p10–p90")
    if limit:
        for ratio in thresholds:
            ax.axhline(ratio * limit, color="tab:red", lw=0.8, ls="--" if ratio < 1 else "-")
            ax.annotate(f"{ratio:.0%}", (history_t[0], ratio * limit), color="tab:red", fontsize=8,
                        va="bottom")
    ax.set_ylabel("bytes")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
