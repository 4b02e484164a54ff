"""The `quotapilot` command.

Each subcommand's flags are declared here (they are a contract, see README); its work lives in
the module named in `_HANDLERS`, imported only when that subcommand runs, so `--help` and
`--version` stay fast. A handler takes the parsed `argparse.Namespace` and returns an exit code:
0 ok, 1 runtime failure, 2 bad usage or config (3: `preflight` says it does not fit).
`--json` output is exactly one JSON object on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from quotapilot.daemon import __version__

_HANDLERS: dict[str, str] = {
    "run": "quotapilot.daemon.commands.run:cmd_run",
    "check-config": "quotapilot.daemon.commands.check_config:cmd_check_config",
    "simulator": "quotapilot.daemon.commands.simulator:cmd_simulator",
    "forecast": "quotapilot.daemon.commands.forecast:cmd_forecast",
    "demo": "quotapilot.daemon.commands.demo:cmd_demo",
    "status": "quotapilot.daemon.commands.client:cmd_status",
    "pause": "quotapilot.daemon.commands.client:cmd_pause",
    "resume": "quotapilot.daemon.commands.client:cmd_resume",
    "preflight": "quotapilot.daemon.commands.client:cmd_preflight",
    "replay": "quotapilot.daemon.commands.replay:cmd_replay",
    "import-history": "quotapilot.daemon.commands.import_history:cmd_import_history",
    "capacity": "quotapilot.daemon.commands.capacity:cmd_capacity",
}


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="TOML configuration file (QUOTAPILOT_* environment variables override it)")


def _daemon_url_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help="daemon base URL (default: from --config [http] listen, else http://127.0.0.1:9187)")
    _config_arg(parser)
    parser.add_argument("--token", default=None,
                        help="write token (default: $QUOTAPILOT_WRITE_TOKEN or the config's [http] write token)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quotapilot",
        description="Forecast VAST quotas and the cluster pool; grow quotas before they fill.")
    parser.add_argument("--version", action="version", version=f"quotapilot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon")
    _config_arg(p)

    p = sub.add_parser("check-config", help="validate a configuration (exit 0 valid, 2 invalid)")
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("simulator", help="run the built-in VMS simulator alone (HTTPS on loopback)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="listen port (0: any free port)")
    p.add_argument("--scenario", default="cosmos7", help="built-in scenario name or a TOML file")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same run)")
    p.add_argument("--quotas", type=int, default=None,
                   help="add N small generated quotas (for benchmarks), besides the scenario's")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where the CA and certificate are written (default: a temp dir)")
    p.add_argument("--json", action="store_true",
                   help="first stdout line: one JSON object with address, ca_file, token, ...")
    p.add_argument("--start", default=None, metavar="ISO8601",
                   help="simulated start time, e.g. 2026-01-01T00:00:00Z (default: now)")

    p = sub.add_parser("forecast", help="runway from a CSV of timestamp,used_bytes")
    p.add_argument("--csv", type=Path, required=True, help="CSV with header: timestamp,used_bytes")
    p.add_argument("--limit", type=str, default=None, help="hard limit in bytes (or e.g. 500TiB)")
    p.add_argument("--thresholds", default="0.75,0.9,1.0", help="comma-separated ratios of the limit")
    p.add_argument("--horizon", default="14d", help="how far to forecast (e.g. 14d)")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG plot (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("demo", help="the embedded default: simulator + daemon, time fast-forwarded")
    p.add_argument("--days", type=float, default=30.0, help="simulated days (default 30)")
    p.add_argument("--scenario", default="cosmos7", help="built-in scenario name or a TOML file")
    p.add_argument("--policy", choices=("quotapilot", "reactive"), default="quotapilot",
                   help="quotapilot (forecast-driven) or reactive (the baseline: +1 TiB at 90 %%)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="extra configuration (e.g. [alerts] sinks) layered over the demo's own")
    p.add_argument("--warm-start", nargs="?", const="auto", default=None, choices=("auto", "prometheus", "builtin"),
                   help="start with 28 days of the scenario's history, served by a temporary prometheus "
                        "(promtool backfill) or, without the binaries, an in-process stand-in (default auto)")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")

    p = sub.add_parser("status", help="every target of a running daemon, most urgent first")
    _daemon_url_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("pause", help="stop growth actions on a target (survives restarts)")
    p.add_argument("target", help="target name or path, e.g. /cosmos7/raw")
    p.add_argument("--until", default=None, help="ISO time or duration (e.g. 12h); default: until resumed")
    p.add_argument("--reason", default="", help="why (pause_reason in `status --json` and the API; logged)")
    _daemon_url_args(p)

    p = sub.add_parser("resume", help="resume growth actions on a target")
    p.add_argument("target", help="target name or path")
    _daemon_url_args(p)

    p = sub.add_parser("preflight", help="is there room? exit 0 fits, 3 does not")
    p.add_argument("target", help="target name or path")
    p.add_argument("bytes", help="bytes needed (or e.g. 40TB)")
    p.add_argument("--inodes", type=int, default=None, help="files needed")
    p.add_argument("--needed-for", default=None, help="how long the room is needed (e.g. 6h)")
    _daemon_url_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("replay", help="what quotapilot would have done over recorded history (what-if)")
    p.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="configuration: [policy], [forecast] and (with --prometheus) [history]")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", action="store_true", help="read the history from [history] prometheus_url")
    source.add_argument("--csv", type=Path, default=None, metavar="DIR",
                        help="DIR/NAME.csv per target: timestamp,used_bytes[,hard_limit_bytes[,soft_limit_bytes]] "
                             "(an empty limit cell: unchanged since the row before)")
    p.add_argument("--since", default=None, help="replay the last DURATION of history (e.g. 30d; default: all of "
                   "the CSV, 30d from Prometheus)")
    p.add_argument("--policy-file", type=Path, default=None, metavar="FILE",
                   help="TOML whose [policy] table is layered over the config's (to try a policy)")
    p.add_argument("--initial-limit", default=None, metavar="BYTES",
                   help="hard limit at the start when the history has none there (none or 0; default: the first limit "
                        "recorded, else 1.25 x the first usage)")
    p.add_argument("--plot", type=Path, default=None, metavar="DIR", help="write one PNG per target to DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("import-history", help="import usage history from Prometheus into the store")
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="configuration with [history]")
    p.add_argument("--since", default=None, help="how far back (default: [history] lookback, 28d)")
    p.add_argument("--dry-run", action="store_true", help="fetch and match, write nothing")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p = sub.add_parser("capacity", help="pool capacity plan: threshold dates, order-by date, size, cost")
    _daemon_url_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE",
                   help="draw usage, forecast band, thresholds and the order-by date (needs matplotlib)")
    return parser


def _load_handler(spec: str) -> Callable[[argparse.Namespace], int]:
    module_name, func_name = spec.split(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module_name), func_name)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _load_handler(_HANDLERS[args.command])(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
