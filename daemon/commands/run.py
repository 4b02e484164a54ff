"""`quotapilot run`: the daemon under systemd (or a terminal) until SIGTERM/SIGINT.

The configuration goes through `check_config.settings_to_run()`, the one validation path that
`check-config` uses too: what `check-config` accepts, `run` starts with; what it refuses, `run`
refuses with the same message and exit 2 before anything is opened."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable

from quotapilot.daemon.commands.check_config import config_warnings, settings_to_run
from quotapilot.daemon.history.importer import warm_start_from_history
from quotapilot.daemon.logs import configure_logging, get_logger
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.store.backend import StoreError

log = get_logger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    """`quotapilot run`: the daemon, until SIGTERM/SIGINT (then exit 0 within the shutdown bound)."""
    settings = settings_to_run(args.config, False)
    if settings is None:
        return 2
    configure_logging(settings.log.level, settings.log.format)
    for warning in config_warnings(settings):
        log.warning("config.doubtful", problem=warning)
    code = asyncio.run(serve(settings))
    _exit_now_if_requests_hang(code)
    return code


async def serve(settings: Settings, *, on_open: Callable[[Daemon], object] | None = None,
                handle_signals: bool = True) -> int:
    """What `run` does with checked settings: open the daemon, run it until SIGTERM/SIGINT (or
    `stop()`), close it; the exit code. `on_open(daemon)` is called once it is open (the config
    fuzz test stops it there, in-process)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    try:
        async with Daemon(settings) as daemon:
            for sig in signals:
                loop.add_signal_handler(sig, daemon.stop)
            if handle_signals:  # an operator's reload: said, and nothing stops (it killed the daemon, undrained)
                loop.add_signal_handler(signal.SIGHUP, _reload_unsupported)
            try:
                if on_open is not None:
                    on_open(daemon)
                await warm_start_from_history(settings, daemon.observations, daemon.clock,
                                              daemon.supervisor.add)
                await daemon.run()
            finally:
                for sig in (*signals, signal.SIGHUP) if handle_signals else ():
                    loop.remove_signal_handler(sig)
    except (OSError, sqlite3.Error, StoreError) as exc:  # a busy port, a full disk, a locked or unreachable
        # database: exit 1, said plainly
        log.error("daemon.failed", error=str(exc), error_type=type(exc).__name__)
        return 1
    return 0


def _reload_unsupported() -> None:
    log.warning("daemon.reload_unsupported", signal="SIGHUP",
                hint="the configuration is read at start only: restart the service to apply a change "
                     "(secret files such as the write token are read again at use)")


def _exit_now_if_requests_hang(code: int) -> None:
    """A vastpy request blocked in a pool thread would make the interpreter wait for it at exit
    (up to the request timeout). Idle pool threads end at once; if one is still busy after a
    moment, the store is already flushed, so exit without waiting for it."""
    deadline = time.monotonic() + 0.5
    for thread in [t for t in threading.enumerate() if t.name.startswith("vms")]:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.name.startswith("vms") and t.is_alive() for t in threading.enumerate()):
        log.warning("requests.abandoned")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
