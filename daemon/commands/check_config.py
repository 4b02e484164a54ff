"""`quotapilot check-config`: load the configuration exactly as `run` does, then print what it
means (secrets masked) and exit 0, or name the offending field and exit 2.

`settings_to_run()` is the one validation path: `run` calls it too, so the two never disagree.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quotapilot.daemon import __version__
from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.store.backend import StoreError
from quotapilot.daemon.store.open import probe


def validate_for_run(settings: Settings) -> None:
    """What the settings model cannot check alone: at least one cluster or filesystem, secret files that can
    be read and are not empty, a `ca_file` that is a PEM CA bundle. Raises `ConfigError` naming
    the field."""
    if not settings.clusters and not settings.filesystems:  # filesystems alone are a valid deployment (issue 18)
        raise ConfigError("clusters", "at least one [[clusters]] (or [[filesystems]]) table is required")
    for i, cluster in enumerate(settings.clusters):
        for field in ("token_file", "password_file"):
            if getattr(cluster, field) is None:
                continue
            try:
                secret = cluster.resolved_token() if field == "token_file" else cluster.resolved_password()
            except OSError as exc:
                raise ConfigError(f"clusters.{i}.{field}", f"cannot be read: {exc}") from None
            if not secret:
                raise ConfigError(f"clusters.{i}.{field}", "is empty")
        if cluster.ca_file is not None and not cluster.insecure_skip_tls_verify:
            # a CA that cannot verify anything would fail every poll's TLS check: refuse it now
            try:
                ssl.create_default_context(cafile=cluster.resolved_ca_file())
            except ssl.SSLError as exc:
                raise ConfigError(f"clusters.{i}.ca_file",
                                  f"not a PEM CA bundle ({exc.reason or exc})") from None
            except OSError as exc:
                raise ConfigError(f"clusters.{i}.ca_file", f"cannot be read: {exc.strerror or exc}") from None


def _print_config_error(exc: ConfigError, as_json: bool) -> None:
    problems = exc.problems
    if as_json:
        print(json.dumps({"valid": False, "field": exc.field, "reason": exc.reason,
                          "problems": [{"field": p.field, "reason": p.reason} for p in problems]}))
        return
    print(f"quotapilot: invalid configuration: {exc.field}: {exc.reason}", file=sys.stderr)
    for problem in problems[1:]:
        print(f"  also: {problem.field}: {problem.reason}", file=sys.stderr)


def config_summary(settings: Settings) -> dict[str, Any]:
    """What a configuration means, with every secret masked."""
    clusters = []
    for cluster in settings.clusters:
        if cluster.token is not None:
            auth = "token (inline, ****)"
        elif cluster.token_file is not None:
            auth = f"token_file {cluster.token_file}"
        else:
            auth = f"user {cluster.user} + " + (f"password_file {cluster.password_file}"
                                                if cluster.password_file else "password (inline, ****)")
        if cluster.insecure_skip_tls_verify:
            tls = "NOT VERIFIED (insecure_skip_tls_verify)"
        elif cluster.ca_file is not None:
            tls = f"verified with ca_file {cluster.ca_file}"
        else:
            tls = "verified with the system trust store"
        clusters.append({"name": cluster.name, "address": cluster.address, "auth": auth, "tls": tls,
                         "tenant": cluster.tenant})
    alerts = settings.alerts
    return {
        "version": __version__,
        "clusters": clusters,
        "poll": {"interval_seconds": settings.poll.interval_seconds,
                 "stale_after_seconds": settings.poll.stale_after_intervals * settings.poll.interval_seconds},
        "vast": {"request_timeout_seconds": settings.vast.request_timeout_seconds,
                 "max_retries": settings.vast.max_retries, "page_size": settings.vast.page_size,
                 "threads": settings.vast.threads},
        "http": {"listen": settings.http.listen,
                 "write_token": "set (****)" if (settings.http.write_token or settings.http.write_token_file)
                 else "not set (write endpoints refused)"},
        "store": {"path": str(settings.store.path),
                  "raw_retention_seconds": settings.store.raw_retention_seconds,
                  "hourly_retention_seconds": settings.store.hourly_retention_seconds},
        "policy": {"mode": settings.policy.mode, "overrides": len(settings.policy.overrides),
                   "kill_switch": settings.policy.kill_switch},
        "alerts": {"mqtt": alerts.mqtt.host if alerts.mqtt else None,
                   "webhooks": [w.name or w.url.split("?")[0] for w in alerts.webhooks],
                   "routes": len(alerts.routes)},
        "views": [v.path for v in settings.views],
        "shutdown_timeout_seconds": settings.daemon.shutdown_timeout_seconds,
    }


def config_warnings(settings: Settings) -> list[str]:
    warnings = [f"clusters.{i}.insecure_skip_tls_verify: the certificate of {c.address} is NOT verified; "
                "anyone on the path can read the token and change quotas"
                for i, c in enumerate(settings.clusters) if c.insecure_skip_tls_verify]
    if settings.http.host not in ("127.0.0.1", "localhost", "::1") and \
            settings.http.resolved_write_token() is None:
        warnings.append(f"http.listen: {settings.http.listen} is not loopback and no write token is set")
    return warnings


def _print_summary(summary: Mapping[str, Any], warnings: list[str]) -> None:
    lines = [f"configuration valid (quotapilot {summary['version']})"]
    for cluster in summary["clusters"]:
        lines.append(f"  cluster {cluster['name']}: {cluster['address']}, {cluster['auth']}, TLS {cluster['tls']}")
    poll = summary["poll"]
    lines.append(f"  poll: every {poll['interval_seconds']:g}s, stale after {poll['stale_after_seconds']:g}s")
    lines.append(f"  http: {summary['http']['listen']}, write token {summary['http']['write_token']}")
    store = summary["store"]
    lines.append(f"  store: {store['where']} (PostgreSQL, schema v{store['schema_version']} of "
                 f"v{store['latest_schema_version']})" if "where" in store else f"  store: {store['path']}")
    policy = summary["policy"]
    lines.append(f"  policy: mode {policy['mode']}, {policy['overrides']} override(s)"
                 + (", KILL SWITCH ON" if policy["kill_switch"] else ""))
    alerts = summary["alerts"]
    lines.append(f"  alerts: mqtt {alerts['mqtt'] or 'off'}, webhooks {len(alerts['webhooks'])},"
                 f" routes {alerts['routes']}")
    if summary["views"]:
        lines.append(f"  managed views: {', '.join(summary['views'])}")
    print("\n".join(lines))
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)


def settings_to_run(config: Path | None, as_json: bool) -> Settings | None:
    """The settings, checked as `run` needs them; None once the problem is printed (exit 2)."""
    try:
        settings = load_settings(config)
        validate_for_run(settings)
    except ConfigError as exc:
        _print_config_error(exc, as_json)
        return None
    return settings


def cmd_check_config(args: argparse.Namespace) -> int:
    """`quotapilot check-config`: exit 0 with a summary, or 2 naming the offending field."""
    as_json = bool(getattr(args, "json", False))
    settings = settings_to_run(args.config, as_json)
    if settings is None:
        return 2
    summary = config_summary(settings)
    warnings = config_warnings(settings)
    if settings.store.url is not None:  # FLEET (issue 15): the database must answer, its schema not be newer
        try:
            summary["store"] = {**summary["store"], **probe(settings.store)}
        except StoreError as exc:
            _print_config_error(ConfigError("store.url", str(exc)), as_json)
            return 2
    if as_json:
        print(json.dumps({"valid": True, "summary": summary, "warnings": warnings}))
    else:
        _print_summary(summary, warnings)
    return 0
