"""`quotapilot import-history --config FILE [--since 28d] [--dry-run] [--json]`: the daemon's warm
start on demand — usage history from the Prometheus of `[history]` into the store, idempotent
(local samples are never overwritten; a second run imports nothing new). A progress bar on stderr
(one tick per `query_range` chunk), then a summary: targets matched, samples imported, targets left
cold (known to the store, no history in Prometheus), series no target matched.

The store is the one the daemon uses (`store.open.open_backend`): the fleet's PostgreSQL when
`[store] url` is set, else the SQLite file at `[store] path`.

Exit 0 done, 2 bad config, 1 Prometheus or the store unreachable or refusing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from typing import Any, TextIO

from quotapilot.daemon.errors import ConfigError, PermanentError, TemporaryError
from quotapilot.daemon.store.backend import StoreError
from quotapilot.daemon.units import parse_duration


class ProgressBar:
    """`[████░░░░] 3/8 requests` on a terminal (redrawn in place); nothing otherwise."""

    def __init__(self, out: TextIO, width: int = 30) -> None:
        self.out = out
        self.width = width
        self.total = 0
        self.done = 0
        self.enabled = out.isatty()

    def start(self, total: int) -> None:
        self.total = max(1, total)
        self._draw()

    def tick(self) -> None:
        self.done += 1
        self._draw()

    def finish(self) -> None:
        if self.enabled and self.done:
            self.out.write("\n")
            self.out.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        filled = int(self.width * min(1.0, self.done / self.total))
        self.out.write(f"\r[{'█' * filled}{'░' * (self.width - filled)}] {self.done}/{self.total} requests")
        self.out.flush()


def format_summary(summary: dict[str, Any]) -> str:
    verb = "would import" if summary["dry_run"] else "imported"
    lines = [f"quotapilot import-history: {len(summary['targets_matched'])} targets matched, "
             f"{summary['samples_fetched']} samples fetched, {summary['samples_imported']} {verb} (hourly)",
             f"  targets left cold: {len(summary['targets_cold'])}"
             + (f" ({', '.join(summary['targets_cold'])})" if summary["targets_cold"] else "")]
    if summary["unmatched_series"]:
        lines.append(f"  series matching no target: {len(summary['unmatched_series'])}")
        lines.extend(f"    {series}" for series in summary["unmatched_series"][:10])
    return "\n".join(lines)


def cmd_import_history(args: argparse.Namespace) -> int:
    from quotapilot.daemon.commands.check_config import settings_to_run
    from quotapilot.daemon.logs import configure_logging

    settings = settings_to_run(args.config, False)
    if settings is None:
        return 2
    configure_logging("warning", settings.log.format)
    try:
        if settings.history.prometheus_url is None:
            raise ConfigError("history.prometheus_url", "required by import-history")
        since = parse_duration(args.since) if args.since is not None else settings.history.lookback
        if since <= 0:
            raise ConfigError("--since", "must be > 0")
    except (ConfigError, ValueError) as exc:
        where = f"{exc.field}: {exc.reason}" if isinstance(exc, ConfigError) else f"--since: {exc}"
        print(f"quotapilot import-history: {where}", file=sys.stderr)
        return 2
    bar = ProgressBar(sys.stderr)
    try:
        summary = asyncio.run(_import(settings, since, args.dry_run, bar)).as_dict()
    except (TemporaryError, PermanentError, StoreError, OSError, sqlite3.Error) as exc:
        bar.finish()
        print(f"quotapilot import-history: {exc}", file=sys.stderr)
        return 1
    bar.finish()
    print(json.dumps(summary, sort_keys=True) if args.json else format_summary(summary))
    return 0


async def _import(settings: Any, since: float, dry_run: bool, bar: ProgressBar) -> Any:
    from quotapilot.daemon.history.importer import import_history
    from quotapilot.daemon.store.observations import ObservationStore
    from quotapilot.daemon.store.open import open_backend

    db = await asyncio.to_thread(open_backend, settings.store)
    try:
        store = ObservationStore(db, raw_retention_seconds=settings.store.raw_retention_seconds,
                                 hourly_retention_seconds=settings.store.hourly_retention_seconds)
        return await import_history(settings, store, now=time.time(), since_seconds=since, dry_run=dry_run,
                                    on_start=bar.start, on_chunk=bar.tick)
    finally:
        await asyncio.to_thread(db.close)
