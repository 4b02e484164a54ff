#!/usr/bin/env python3
"""An example pipeline step that asks quotapilot for room before it writes.

    QUOTAPILOT_URL=http://127.0.0.1:9187 QUOTAPILOT_WRITE_TOKEN=... \
        python pipeline_step.py --target /cosmos7/processed --bytes 40TB --ttl 6h -- ./transform.sh

1. Pre-flight: does the output fit now and for the whole run, given the forecast growth of the
   target? If not, and the daemon would not grow the quota for it now, wait for room (up to
   `--wait`).
2. Reserve the capacity (idempotent: a retried request with the same `--run-id` gets the same
   reservation back while it is held; a retry after it ended gets a new one), so the daemon's
   planner counts it as demand while the step runs (and grows the quota for it, guards allowing).
3. Run the work; release the reservation afterwards, whether the work succeeded or not.

Exit codes: the work's own exit code; 75 (EX_TEMPFAIL) when there was no room in time or the
daemon refused the reservation, so a scheduler retries the step later.

Only the client module is needed (`quotapilot.daemon.pipeline_client`, stdlib only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from quotapilot.daemon.pipeline_client import Client, DeadlineExceeded, Refused

EX_TEMPFAIL = 75


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="quota name or path, e.g. /cosmos7/processed")
    parser.add_argument("--bytes", required=True, help="output size, e.g. 40TB")
    parser.add_argument("--ttl", default="6h", help="how long the run holds the room (e.g. 6h)")
    parser.add_argument("--wait", type=float, default=3600.0, help="seconds to wait for room at most")
    parser.add_argument("--run-id", default=None, help="idempotency key: a retry with the same run id gets the same reservation while it is held")
    parser.add_argument("work", nargs=argparse.REMAINDER, help="-- the command that writes the data")
    args = parser.parse_args(argv)
    command = args.work[1:] if args.work[:1] == ["--"] else args.work

    qp = Client(os.environ.get("QUOTAPILOT_URL", "http://127.0.0.1:9187"), os.environ.get("QUOTAPILOT_WRITE_TOKEN"))
    try:
        answer = qp.preflight(args.target, args.bytes, needed_for=args.ttl)
        if not answer.fits and not answer.grows_on_reservation:   # (a `grow` answer: the reservation grows it)
            print(f"no room yet: {answer.action.get('reason')}; waiting up to {args.wait:.0f}s", file=sys.stderr)
            qp.wait_for_room(args.target, args.bytes, needed_for=args.ttl, deadline_seconds=args.wait)
        with qp.reservation(args.target, args.bytes, ttl=args.ttl, idempotency_key=args.run_id) as held:
            print(f"reserved {args.bytes} in {args.target} ({held.id}, until {held.expires_at})", file=sys.stderr)
            return subprocess.run(command, check=False).returncode if command else 0
    except DeadlineExceeded as exc:
        print(f"gave up waiting for room: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except Refused as exc:
        when = f", earliest at {exc.earliest_at:.0f}" if exc.earliest_at else ""
        print(f"reservation refused ({exc.guard}): {exc.reason}{when}", file=sys.stderr)
        return EX_TEMPFAIL


if __name__ == "__main__":
    raise SystemExit(main())
