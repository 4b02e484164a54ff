"""The first stage of a cycle: the poll's validated samples into the store."""

from __future__ import annotations

import asyncio

from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.runtime.leadership import Leadership, acts_on
from quotapilot.daemon.store.observations import ObservationStore

PRUNE_INTERVAL_SECONDS = 3600.0


class StoreStage:
    """First stage: the poll's validated samples into the store, one transaction per poll;
    retention pruning once an hour (of the daemon's clock).

    In a fleet every instance polls every cluster, but only the cluster's leader records: the
    shared history stays one series at the poll rate (the forecaster warm-starts from it), not
    one per instance interleaved. `leadership` None: alone, record everything."""

    name = "store"

    def __init__(self, store: ObservationStore, *, leadership: Leadership | None = None) -> None:
        self.store = store
        self.leadership = leadership
        self._last_prune: float | None = None

    def _write(self, ctx: CycleContext) -> None:
        self.store.write_poll(ctx.poll.observations)
        if self._last_prune is None or ctx.now - self._last_prune >= PRUNE_INTERVAL_SECONDS:
            self._last_prune = ctx.now
            self.store.prune(ctx.now)

    async def on_cycle(self, ctx: CycleContext) -> None:
        cluster = ctx.poll.cluster
        if not acts_on(self.leadership, cluster):
            return  # a standby: the leader records this cluster
        if ctx.poll.ok and ctx.poll.observations:
            await asyncio.to_thread(self._write, ctx)
