"""`quotapilot replay`: what quotapilot would have done over recorded history (what-if).

`quotapilot replay --config FILE (--prometheus | --csv DIR) [--since 30d] [--policy-file FILE]
[--initial-limit BYTES] [--json] [--plot DIR]`

The history comes from CSV files (`DIR/NAME.csv`: `timestamp,used_bytes[,hard_limit_bytes
[,soft_limit_bytes]]`, one target a file; an empty limit cell is the limit of the row before) or
from the Prometheus of `[history]`. The replay itself
is `quotapilot.forecasting.replay` (pure): the daemon's series model and planner, per target, on
the trace's own timestamps. The policy is the config's `[policy]` (per-target overrides applied by
name and path), with `--policy-file`'s `[policy]` table layered over it — so a team can tune the
policy on its own past before switching to `enforce`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quotapilot.daemon.commands.output_paths import directory_problem
from quotapilot.daemon.errors import ConfigError, QuotapilotError
from quotapilot.daemon.units import format_bytes, parse_bytes, parse_duration

if TYPE_CHECKING:
    from quotapilot.daemon.settings import Settings
    from quotapilot.forecasting.replay import TargetReplay, TargetTrace


class ReplayInputError(ValueError):
    """Bad input to replay (a CSV line, a flag): exit 2 with this message."""


# ---------------------------------------------------------------------------------- inputs
def read_trace_csv(path: Path, *, initial_limit: int | None = None) -> TargetTrace:
    """One `NAME.csv` → a trace named NAME. Raises `ReplayInputError` naming the file and line."""
    from quotapilot.daemon.commands.forecast import CsvError, parse_timestamp, read_csv_text
    from quotapilot.forecasting.replay import TargetTrace

    name = path.stem
    times: list[float] = []
    used: list[int] = []
    hards: list[int | None] = []
    softs: list[int | None] = []
    try:
        with io.StringIO(read_csv_text(path), newline="") as handle:
            rows = csv.reader(handle)
            header = [cell.strip().lower() for cell in next(rows, [])]
            allowed = ["timestamp", "used_bytes", "hard_limit_bytes", "soft_limit_bytes"]
            if header[:2] != allowed[:2] or header != allowed[:len(header)]:
                raise ReplayInputError(f"{path}: line 1: header is {','.join(header)!r}, want "
                                       "'timestamp,used_bytes[,hard_limit_bytes[,soft_limit_bytes]]'")
            for row in rows:
                if not row or all(not cell.strip() for cell in row):
                    continue
                where = f"{path}: line {rows.line_num}"
                if len(row) != len(header):
                    raise ReplayInputError(f"{where}: want {len(header)} columns, got {len(row)}")
                try:
                    t = parse_timestamp(row[0])
                except ValueError as exc:
                    raise ReplayInputError(f"{where}: {exc}") from None
                values = [_number(where, header[i], row[i]) for i in range(1, len(row))]
                if times and t < times[-1]:
                    raise ReplayInputError(f"{where}: timestamps must increase")
                if values[0] is None:
                    raise ReplayInputError(f"{where}: used_bytes is empty")
                # an empty limit cell (None) is the row before's limit: TargetTrace.from_samples
                hard, soft = [*values[1:], None, None][:2]
                if times and t == times[-1]:
                    # a moment read twice (local time repeats at a daylight-saving change): the
                    # later row is the reading, as `forecast --csv` takes it (its empty limit
                    # cells: the earlier row's)
                    hard = hards[-1] if hard is None else hard
                    soft = softs[-1] if soft is None else soft
                    del times[-1], used[-1], hards[-1], softs[-1]
                times.append(t)
                used.append(values[0])
                hards.append(hard)
                softs.append(soft)
    except CsvError as exc:
        raise ReplayInputError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ReplayInputError(f"{path}: {exc.strerror or exc}") from None
    if len(times) < 2:
        raise ReplayInputError(f"{path}: need at least 2 samples")
    return TargetTrace.from_samples(name, times, used, hards, initial_limit=initial_limit,
                                    initial_soft_limit_bytes=softs[0])


def _number(where: str, column: str, text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReplayInputError(f"{where}: {column} is not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ReplayInputError(f"{where}: {column} must be a finite number >= 0, got {text!r}")
    return int(value)


def read_trace_dir(directory: Path, *, initial_limit: int | None = None) -> list[TargetTrace]:
    if not directory.is_dir():
        raise ReplayInputError(f"--csv: not a directory: {directory}")
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise ReplayInputError(f"--csv: no *.csv files in {directory}")
    return [read_trace_csv(path, initial_limit=initial_limit) for path in files]


def clip_since(traces: Sequence[TargetTrace], since_seconds: float | None) -> list[TargetTrace]:
    """Keep the samples of the last `since_seconds` before the newest sample of any trace."""
    from dataclasses import replace

    if since_seconds is None:
        return list(traces)
    end = max(trace.times[-1] for trace in traces)
    out = []
    for trace in traces:
        first = next((i for i, t in enumerate(trace.times) if t >= end - since_seconds), len(trace.times))
        if first == 0:
            out.append(trace)
            continue
        hard = list(trace.hard_limits[first:]) if trace.hard_limits is not None else None
        out.append(replace(trace, times=list(trace.times[first:]), used_bytes=list(trace.used_bytes[first:]),
                           hard_limits=hard))
    return [trace for trace in out if len(trace.times) >= 2]


def replay_settings_for(settings: Settings, trace: TargetTrace) -> Any:
    """The `ReplaySettings` of one target: its policy (overrides applied) and the forecast model."""
    from quotapilot.forecasting.planner import GrowthPolicy
    from quotapilot.forecasting.replay import ReplaySettings
    from quotapilot.forecasting.series import ModelConfig

    rules = settings.policy.rules_for(trace.name, trace.path or f"/{trace.name}")
    forecast = settings.forecast
    model = ModelConfig(step_seconds=forecast.step_seconds, horizon_seconds=forecast.horizon_seconds,
                        refit_interval_seconds=forecast.refit_interval_seconds)
    return ReplaySettings(policy=GrowthPolicy.from_fields(rules), model=model)


def load_replay_settings(config: Path, policy_file: Path | None) -> Settings:
    """The config, with `policy_file`'s `[policy]` table (or its top level) layered over `[policy]`."""
    from quotapilot.daemon.settings import load_settings, read_config_file

    data = read_config_file(config)
    if policy_file is not None:
        try:
            extra = read_config_file(policy_file)
        except ConfigError as exc:
            raise ConfigError("--policy-file", exc.reason) from None
        policy_table = extra.get("policy", extra)
        if not isinstance(policy_table, dict):
            raise ConfigError("--policy-file", "want a [policy] table")
        data["policy"] = {**data.get("policy", {}), **policy_table}
    return load_settings(None, **data)


def run_replays(traces: Sequence[TargetTrace], settings: Settings) -> list[TargetReplay]:
    from quotapilot.forecasting.replay import replay_target

    return [replay_target(trace, replay_settings_for(settings, trace)) for trace in traces]


# --------------------------------------------------------------------------------- outputs
def format_text(report: dict[str, Any]) -> str:
    lines = ["quotapilot replay: what quotapilot would have done, and the reactive baseline "
             "(+1 TiB at 90 %, soft limit moved with the hard one)", ""]
    header = f"{'target':<24}{'policy':<12}{'failures':>9}{'growths':>9}{'added':>12}{'mean util':>11}{'peak':>8}"
    lines.append(header)
    rows = [(name, entry) for name, entry in sorted(report["targets"].items())]
    rows.append(("(all)", {k: report[k] for k in ("quotapilot", "reactive", "recorded") if k in report}))
    for name, entry in rows:
        for policy in ("quotapilot", "reactive", "recorded"):
            figures = entry.get(policy)
            if figures is None:
                continue
            lines.append(f"{name:<24}{policy:<12}{figures['write_failures']:>9}{figures['growth_actions']:>9}"
                         f"{format_bytes(figures['bytes_added']):>12}{figures['mean_utilization']:>11.1%}"
                         f"{figures['peak_utilization']:>8.1%}")
    return "\n".join(lines)


def write_plots(replays: Sequence[TargetReplay], directory: Path) -> list[Path]:
    """One PNG per target: usage, the limits as they were, the limits quotapilot would have set
    (and the reactive baseline's), and the p10–p90 band at each decision (at t + lead time)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for rep in replays:
        run = rep.quotapilot
        when = _datetimes(run.times)
        fig, ax = plt.subplots(figsize=(11, 5))
        try:
            if rep.bands:
                at = _datetimes([b.at for b in rep.bands])
                ax.fill_between(at, np.array([b.p10 for b in rep.bands]) / 2**40,
                                np.array([b.p90 for b in rep.bands]) / 2**40,
                                color="tab:blue", alpha=0.15, label="forecast p10–p90 (at t + lead time)")
            ax.plot(when, [u / 2**40 for u in run.used_bytes], color="black", lw=1.2, label="used")
            if rep.recorded is not None:
                ax.step(when, [h / 2**40 for h in rep.recorded.hard_limits], where="post", color="tab:gray",
                        ls="--", label="hard limit as it was")
            ax.step(when, [h / 2**40 for h in run.hard_limits], where="post", color="tab:blue",
                    label=f"quotapilot ({run.growth_actions} growths)")
            ax.step(when, [h / 2**40 for h in rep.reactive.hard_limits], where="post", color="tab:orange",
                    alpha=0.7, label=f"reactive baseline ({rep.reactive.growth_actions} growths)")
            ax.set_title(f"{rep.name}: replay")
            ax.set_ylabel("TiB")
            ax.legend(loc="upper left", fontsize="small")
            fig.autofmt_xdate()
            path = directory / f"{rep.name}.png"
            fig.savefig(path, dpi=100)
            written.append(path)
        finally:
            plt.close(fig)
    return written


def _datetimes(times: Sequence[float]) -> Any:
    import numpy as np

    return (np.asarray(times, dtype=np.float64) * 1000).astype("int64").astype("datetime64[ms]")


# ---------------------------------------------------------------------------------- command
def cmd_replay(args: argparse.Namespace) -> int:
    """Exit 0 with the report; 2 bad usage or config (flags, the traces, a `--plot` directory
    that cannot be made, no matplotlib); 1 Prometheus or a file failing (a plot that could not be
    written after all). Plots are written before the report is printed."""
    from quotapilot.forecasting.replay import ReplayError, replay_report

    try:
        problem = None if args.plot is None else directory_problem(args.plot)
        if problem is not None:
            raise ReplayInputError(f"--plot {args.plot}: {problem}")
        since = parse_duration(args.since) if args.since is not None else None
        if since is not None and since <= 0:
            raise ReplayInputError("--since must be > 0")
        initial = parse_bytes(args.initial_limit) if args.initial_limit is not None else None
        if initial is not None and initial <= 0:
            raise ReplayInputError("--initial-limit must be > 0")
        settings = load_replay_settings(args.config, args.policy_file)
        if args.csv is not None:
            traces = read_trace_dir(args.csv, initial_limit=initial)
        else:
            from quotapilot.daemon.history.importer import fetch_traces

            if settings.history.prometheus_url is None:
                raise ConfigError("history.prometheus_url", "required with --prometheus")
            traces = fetch_traces(settings, since_seconds=since or 30 * 86400.0, initial_limit=initial)
        traces = clip_since(traces, since)
        if not traces:
            raise ReplayInputError("no target has 2 samples or more in the window")
        replays = run_replays(traces, settings)
    except ConfigError as exc:
        print(f"quotapilot replay: {exc.field}: {exc.reason}", file=sys.stderr)
        return 2
    except (ReplayInputError, ReplayError, ValueError) as exc:
        print(f"quotapilot replay: {exc}", file=sys.stderr)
        return 2
    except (OSError, QuotapilotError) as exc:
        print(f"quotapilot replay: {exc}", file=sys.stderr)
        return 1
    report = replay_report(replays)
    if args.plot is not None:
        try:
            written = write_plots(replays, args.plot)
        except ImportError:
            print("quotapilot replay: --plot needs matplotlib (pip install 'quotapilot[plot]')", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"quotapilot replay: cannot write --plot {args.plot}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        for path in written:
            print(f"quotapilot replay: wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(format_text(report))
    return 0
