"""The first stage of a cycle: the poll's validated samples into the store."""

from __future__ import annotations

import asyncio

from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.store.observations import ObservationStore

PRUNE_INTERVAL_SECONDS = 3600.0


class StoreStage:
    """First stage: the poll's validated samples into SQLite, one transaction per poll; retention
    pruning once an hour (of the daemon's clock)."""

    name = "store"

    def __init__(self, store: ObservationStore) -> None:
        self.store = store
        self._last_prune: float | None = None

    def _write(self, ctx: CycleContext) -> None:
        self.store.write_poll(ctx.poll.observations)
        if self._last_prune is None or ctx.now - self._last_prune >= PRUNE_INTERVAL_SECONDS:
            self._last_prune = ctx.now
            self.store.prune(ctx.now)

    async def on_cycle(self, ctx: CycleContext) -> None:
        if ctx.poll.ok and ctx.poll.observations:
            await asyncio.to_thread(self._write, ctx)
