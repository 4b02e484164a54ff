"""Child process for the SIGKILL test: raise alerts whose delivery cannot succeed (the webhook
answers 503), print "queued" once they are in the outbox, then wait to be killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alert_helpers import T0, alert_settings, cycle, make_stage, running

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.logs import configure_logging


async def main(db_path: Path, url: str, count: int) -> None:
    configure_logging("warning", "json")  # logs to stderr; stdout is our protocol
    clock = VirtualClock(T0)
    stage = make_stage(alert_settings(db_path, webhook_url=url), clock)
    async with running(stage):
        await stage.on_cycle(cycle(T0, {f"q{i}": 0.95 for i in range(count)}))
        pending = await stage.store.pending_counts()
        print(f"queued {pending.get('webhook-0', 0)}", flush=True)  # the log sink's rows come and go
        await asyncio.Event().wait()  # the parent SIGKILLs us here


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
