"""`quotapilot status | pause | resume | preflight`: the CLI side of the pipeline API.

These talk to a running daemon over HTTP through `quotapilot.daemon.pipeline_client` and stay light at
import time (no aiohttp, no statsmodels). The daemon's URL is `--url`, else the `[http] listen`
of `--config`, else http://127.0.0.1:9187; the write token is `--token`, else
`$QUOTAPILOT_WRITE_TOKEN`, else the config's `[http] write_token(_file)`.

Exit codes: 0 ok (preflight: it fits), 3 preflight: it does not fit, 1 the daemon could not
answer or refused, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.pipeline_client import DEFAULT_URL, ApiError, Client, ClientError, NotFound, RetryPolicy
from quotapilot.daemon.units import format_bytes, format_duration, format_limit, parse_bytes

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_ROOM = 0, 1, 2, 3
CLI_RETRY = RetryPolicy(attempts=3, base_seconds=0.5, max_seconds=2.0, deadline_seconds=15.0)
TOKEN_ENV = "QUOTAPILOT_WRITE_TOKEN"


class UsageError(Exception):
    pass


def _url_and_token(args: argparse.Namespace, *, need_token: bool) -> tuple[str, str | None]:
    url: str | None = getattr(args, "url", None)
    token: str | None = getattr(args, "token", None)
    # The CLI runs on the pipeline's side, not in the daemon: reading this one variable here is
    # the documented client convention, not daemon configuration.
    token = token or os.environ.get(TOKEN_ENV) or None
    config = getattr(args, "config", None)
    if config is not None and (url is None or (need_token and token is None)):
        from quotapilot.daemon.settings import load_settings

        try:
            http = load_settings(config).http
        except ConfigError as exc:
            raise UsageError(f"{exc.field}: {exc.reason}") from None
        if url is None:
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
            url = f"http://{'[' + host + ']' if ':' in host else host}:{http.port}"
        if token is None and need_token:
            try:
                token = http.resolved_write_token()
            except OSError as exc:
                raise UsageError(f"http.write_token_file: {exc}") from None
    if need_token and not token:
        raise UsageError(f"no write token: pass --token, set ${TOKEN_ENV}, or --config with [http] write_token")
    if url is not None:
        problem = _daemon_url_problem(url)
        if problem is not None:
            raise UsageError(f"--url: {problem}")
    return url or DEFAULT_URL, token


def _daemon_url_problem(url: str) -> str | None:
    """Why `url` cannot be a daemon's address (None: it can). Checked before any request: urllib
    raises ValueError for some (`http://[::1`, a port that is not a number), which is no
    connection failure, and the client's retries would wait on others for nothing."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"must start with http:// or https:// (e.g. {DEFAULT_URL})"
    if not parts.hostname:
        return f"has no host (e.g. {DEFAULT_URL})"
    if port == 0:
        return "port 0 is not a port to connect to"
    return None


def _client(args: argparse.Namespace, *, need_token: bool = False) -> Client:
    url, token = _url_and_token(args, need_token=need_token)
    return Client(url, token, retry=CLI_RETRY)


def _emit(text: str) -> None:
    """Print to stdout; a reader that went away (`quotapilot status | head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(exc: Exception) -> int:
    if isinstance(exc, UsageError):
        print(f"quotapilot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, ApiError):
        where = f" ({exc.field})" if exc.field else ""
        print(f"quotapilot: the daemon answered {exc.status}: {exc.message or exc.code}{where}", file=sys.stderr)
    else:
        print(f"quotapilot: {exc}", file=sys.stderr)
    return EXIT_FAILED


# ------------------------------------------------------------------------------ preflight
def cmd_preflight(args: argparse.Namespace) -> int:
    try:
        nbytes = parse_bytes(args.bytes)
    except ValueError as exc:
        print(f"quotapilot: BYTES: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        answer = _client(args).preflight(args.target, nbytes, inodes=args.inodes, needed_for=args.needed_for)
    except (ClientError, UsageError) as exc:
        return _fail(exc)
    if args.json:
        _emit(json.dumps(dict(answer.raw)))
    else:
        _emit(describe_preflight(answer.raw))
    return EXIT_OK if answer.fits else EXIT_NO_ROOM


def describe_preflight(body: Mapping[str, Any]) -> str:
    target = body.get("target", {})
    fit = body.get("bytes", {})
    action = body.get("action", {})
    name = target.get("path") or target.get("name")
    window = format_duration(body.get("needed_for_seconds"))
    lines = [f"{'fits' if body.get('fits') else 'does NOT fit'}: {format_bytes(fit.get('requested', 0))} in {name} "
             f"for {window} (now: {'yes' if body.get('fits_now') else 'no'})"]
    if fit.get("limit") is not None:
        lines.append(f"  room now {format_bytes(fit['room_now'])}; after the p90 forecast (+"
                     f"{format_bytes(fit['forecast_growth'])}) and reservations: "
                     f"{format_bytes(fit['room_after_forecast'])}")
    if action.get("kind") == "grow":
        lines.append(f"  the daemon would grow the hard limit to {format_bytes(action['new_hard_limit_bytes'] or 0)}")
    elif action.get("kind") in ("blocked", "later"):
        until = action.get("earliest_at")
        when = f" (earliest {_iso(until)})" if isinstance(until, int | float) else ""
        guard = f" [{action['guard']}]" if action.get("guard") else ""
        lines.append(f"  blocked{guard}: {action.get('reason', '')}{when}" if action.get("kind") == "blocked"
                     else f"  later: {action.get('reason', '')}")
    return "\n".join(lines)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------ status
def urgency_key(target: Mapping[str, Any]) -> tuple[float, float, str]:
    """Most urgent first: the pessimistic (p90) runway to 100 %, then utilization, then path."""
    runway = (target.get("runway_seconds") or {}).get("p90")
    utilization = target.get("utilization_ratio") or 0.0
    return (runway if isinstance(runway, int | float) else math.inf, -utilization, str(target.get("path", "")))


def cmd_status(args: argparse.Namespace) -> int:
    try:
        client = _client(args)
        answer = client.request("GET", "/api/v1/targets")
        try:
            leadership = client.request("GET", "/api/v1/leadership")
        except NotFound:  # a daemon older than the endpoint: the targets alone
            leadership = {}
    except (ClientError, UsageError) as exc:
        return _fail(exc)
    targets = sorted(answer.get("targets", []), key=urgency_key)
    leases = list(leadership.get("clusters", []))
    if args.json:
        _emit(json.dumps({"generated_at": answer.get("generated_at"), "kill_switch": answer.get("kill_switch"),
                          "targets": targets, "clusters": answer.get("clusters", []),
                          "leadership": {"instance": leadership.get("instance"), "clusters": leases}}))
        return EXIT_OK
    _emit(render_status(targets, bool(answer.get("kill_switch"))))
    if leases:
        _emit("")
        _emit(render_leadership(leases))
    return EXIT_OK


def render_leadership(leases: Sequence[Mapping[str, Any]]) -> str:
    """Who leads what: per cluster the lease holder, its epoch, how long it runs on, and what the
    daemon asked (this instance) is for that cluster."""
    header = ("CLUSTER", "HOLDER", "EPOCH", "EXPIRES IN", "THIS INSTANCE")
    rows: list[tuple[str, ...]] = []
    for lease in leases:
        expires = lease.get("expires_in_seconds")
        epoch = lease.get("lease_epoch")
        rows.append((str(lease.get("cluster")), str(lease.get("holder") or "(nobody)"),
                     "—" if epoch is None else str(epoch),
                     "—" if not isinstance(expires, int | float) else
                     "expired" if expires <= 0 else f"{expires:.0f}s",
                     str(lease.get("role", ""))))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in (header, *rows))


def _runway(seconds: object) -> str:
    return format_duration(seconds) if isinstance(seconds, int | float) else "—"


def render_status(targets: Sequence[Mapping[str, Any]], kill_switch: bool) -> str:
    header = ("TARGET", "USED", "LIMIT", "UTIL", "RUNWAY p50", "p90", "MODE", "PAUSED", "LAST ACTION")
    rows: list[tuple[str, ...]] = []
    for t in targets:
        runway = t.get("runway_seconds") or {}
        limit = t.get("hard_limit_bytes")
        utilization = t.get("utilization_ratio")
        action = t.get("last_action")
        last = "—"
        if action:
            grown = (f" → {format_limit(action['new_hard'], str(action.get('dimension') or 'bytes'))}"
                     if action.get("new_hard") else "")
            last = f"{action.get('status')}{grown} {_iso(action['at'])}" if action.get("at") else str(action)
        paused = "yes" if t.get("paused") else "no"
        if t.get("paused") and t.get("paused_until"):
            paused = f"until {_iso(t['paused_until'])}"
        rows.append((str(t.get("path") or t.get("name")), format_bytes(t.get("used_bytes", 0)),
                     format_bytes(limit) if isinstance(limit, int) else "—",
                     f"{utilization:.0%}" if isinstance(utilization, int | float) else "—",
                     _runway(runway.get("p50")), _runway(runway.get("p90")), str(t.get("mode", "")), paused, last))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]
    if kill_switch:
        lines.insert(0, "KILL SWITCH ENGAGED: no growth actions")
    if not rows:
        lines.append("(no targets yet: the daemon has not completed a poll)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ overrides
def cmd_pause(args: argparse.Namespace) -> int:
    try:
        answer = _client(args, need_token=True).pause(args.target, until=args.until, reason=args.reason)
    except (ClientError, UsageError) as exc:
        return _fail(exc)
    until = answer.get("paused_until")
    _emit(f"paused {answer['target']['path']}" + (f" until {_iso(until)}" if isinstance(until, int | float)
                                                  else " until resumed"))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    try:
        answer = _client(args, need_token=True).resume(args.target)
    except (ClientError, UsageError) as exc:
        return _fail(exc)
    _emit(f"resumed {answer['target']['path']}")
    return EXIT_OK
