"""`quotapilot capacity [--url URL] [--json] [--plot FILE]`: the pool capacity plan of a running
daemon (`GET /api/v1/capacity`).

A table by default; `--json` prints one object `{"pools": [{"name", "kind", "usable_bytes",
"used_bytes", "thresholds": {"0.8": {"p10", "p50", "p90"}, …}, "order_by", "order_bytes",
"cost", …}]}` (timestamps ISO 8601, null beyond the plan horizon; p90 names the pessimistic
path, whose date comes first); `--plot FILE` draws each pool's usage, forecast band, thresholds
and order-by date (matplotlib, the `plot` extra). Exit codes: 0 ok, 1 the daemon could not
answer (or the plot could not be written after all: a full disk), 2 bad usage (a `--plot` path no
file can be written at is found before the daemon is asked).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from quotapilot.daemon.commands.client import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    _client,
    _emit,
    _fail,
)
from quotapilot.daemon.commands.output_paths import plot_problem
from quotapilot.daemon.pipeline_client import ClientError
from quotapilot.daemon.units import format_bytes

CAPACITY_PATH = "/api/v1/capacity"
JSON_OMITS = ("band",)
"""Left out of `--json` (the daily forecast band, for `--plot`; the API has it)."""


def cmd_capacity(args: argparse.Namespace) -> int:
    problem = None if args.plot is None else plot_problem(args.plot)
    if problem is not None:
        print(f"quotapilot capacity: --plot {args.plot}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        answer = _client(args).request("GET", CAPACITY_PATH)
    except (ClientError, UsageError) as exc:
        return _fail(exc)
    pools = [dict(pool) for pool in answer.get("pools", [])]
    if args.plot is not None:
        try:
            plot_pools(pools, args.plot)
        except ImportError:
            print("quotapilot capacity: --plot needs matplotlib (pip install 'quotapilot[plot]')", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"quotapilot capacity: cannot write --plot {args.plot}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        _emit(json.dumps({"pools": [{k: v for k, v in pool.items() if k not in JSON_OMITS} for pool in pools]}))
    else:
        _emit(render_capacity(pools))
    return EXIT_OK


def _date(value: object) -> str:
    return str(value)[:10] if isinstance(value, str) else "beyond"


def render_capacity(pools: Sequence[Mapping[str, Any]]) -> str:
    """The table: one line per pool and threshold (dates p90 / p50 / p10: pessimistic first)."""
    if not pools:
        return "no pool planned yet (the daemon has not completed a poll)"
    header = ("POOL", "KIND", "USED", "USABLE", "THRESHOLD", "DATE p90", "p50", "p10", "ORDER BY", "ORDER", "COST")
    rows: list[tuple[str, ...]] = []
    for pool in pools:
        cost = pool.get("cost") or {}
        cost_text = "—"
        if cost.get("expansion") is not None:
            cost_text = f"{cost['expansion']:,.0f}"
        elif cost.get("expansion_per_month") is not None:
            cost_text = f"{cost['expansion_per_month']:,.0f}/month"
        order = pool.get("order_bytes")
        for i, (ratio, dates) in enumerate(sorted((pool.get("thresholds") or {}).items())):
            first = i == 0
            rows.append((
                str(pool["name"]) if first else "", str(pool.get("kind", "")) if first else "",
                format_bytes(pool["used_bytes"]) if first else "",
                format_bytes(pool["usable_bytes"]) if first else "",
                f"{float(ratio):.0%}", _date(dates.get("p90")), _date(dates.get("p50")), _date(dates.get("p10")),
                (_date(pool.get("order_by")) if pool.get("order_by") else "—") if first else "",
                (format_bytes(order) if isinstance(order, int) else "—") if first else "",
                cost_text if first else ""))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in (header, *rows))


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def plot_pools(pools: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One panel per pool: usage now, the forecast band (p10–p90) and median, each planning
    threshold as a horizontal line, the order-by date as a vertical one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = max(1, len(pools))
    fig, axes = plt.subplots(panels, 1, figsize=(10, 4 * panels), squeeze=False)
    for ax, pool in zip((row[0] for row in axes), pools or [{}], strict=False):
        if not pool:
            ax.set_title("no pool planned yet")
            continue
        scale = 1e12
        band = pool.get("band") or []
        if band:
            times = [_parse(point["t"]) for point in band]
            ax.fill_between(times, [p["p10"] / scale for p in band], [p["p90"] / scale for p in band],
                            alpha=0.25, label="forecast p10–p90")
            ax.plot(times, [p["p50"] / scale for p in band], label="forecast p50")
        now = _parse(pool["t"])
        ax.plot([now], [pool["used_bytes"] / scale], "o", label="used now")
        for ratio in sorted(pool.get("thresholds") or {}):
            ax.axhline(float(ratio) * pool["usable_bytes"] / scale, linestyle="--", linewidth=1,
                       label=f"{float(ratio):.0%} of usable")
        if pool.get("order_by"):
            ax.axvline(_parse(pool["order_by"]), color="red", linewidth=1.5, label="order by")
        ax.set_title(f"{pool['name']} ({pool.get('kind', '')})")
        ax.set_ylabel("TB (usable)")
        ax.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
