"""`quotapilot check-config`: load the configuration exactly as `run` does, then print what it
means (secrets masked) and exit 0, or name the offending field and exit 2.

`settings_to_run()` is the one validation path: `run` calls it too, so the two never disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from quotapilot.daemon import __version__
from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.settings import (
    AlertSettings,
    EventSettings,
    Settings,
    WebhookSettings,
    expand_path,
    load_settings,
    read_secret_file,
    secret_problem,
    url_for_display,
)
from quotapilot.daemon.store.backend import StoreError
from quotapilot.daemon.store.open import probe

SQLITE_HEADER = b"SQLite format 3\x00"


def validate_for_run(settings: Settings) -> None:
    """What the settings model cannot check alone, checked the way `run` will meet it: at least
    one cluster; every secret file read with the same `resolved_*()` call `run` makes (readable,
    not empty, not world-writable); every `ca_file` loaded as `run` loads it (a PEM CA bundle);
    the store path a writable SQLite file location; every route naming a configured sink.
    Raises `ConfigError` naming the field."""
    if not settings.clusters and not settings.filesystems:  # filesystems alone are a valid deployment
        raise ConfigError("clusters", "at least one [[clusters]] (or [[filesystems]]) table is required")
    for field, path, read in secret_files(settings):
        try:
            mode = expand_path(path).stat().st_mode
            secret = read()
        except OSError as exc:
            raise ConfigError(field, f"cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(field, "is not UTF-8 text") from None
        problem = secret_problem(secret or "")  # (read strips the white space around it)
        if problem is not None:  # a secret file holds one line: a second one is a mistake
            raise ConfigError(field, problem)
        if mode & stat.S_IWOTH:
            raise ConfigError(field, f"{path} is world-writable: anyone on the host could replace the secret")
    for field, ca_file in ca_files(settings):
        # a CA that cannot verify anything would fail every TLS check at run time: refuse it now
        try:
            if ca_file.stat().st_mode & stat.S_IWOTH:
                raise ConfigError(field, f"{ca_file} is world-writable: anyone on the host could make "
                                  "quotapilot trust their certificate")
            ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(field, f"not a PEM CA bundle ({exc.reason or exc})") from None
        except OSError as exc:
            raise ConfigError(field, f"cannot be read: {exc.strerror or exc}") from None
    problem = listen_problem(settings.http.host)
    if problem is not None:
        raise ConfigError("http.listen", problem)
    problem = None if settings.store.url is not None else store_path_problem(settings.store.path)
    if problem is not None:  # (PostgreSQL: `probe` checks reachability and schema in check-config)
        raise ConfigError("store.path", problem)
    sinks = settings.alerts.sink_names()
    for i, name in enumerate(sinks):
        if name in sinks[:i]:
            raise ConfigError("alerts.webhooks", f"two sinks are named {name!r}")
    for i, route in enumerate(settings.alerts.routes):
        for j, sink in enumerate(route.sinks):
            if sink not in sinks:
                raise ConfigError(f"alerts.routes.{i}.sinks.{j}",
                                  f"no sink named {sink!r} (configured: {', '.join(sinks) or 'none'})")


def notification_groups(settings: Settings) -> tuple[tuple[str, AlertSettings | EventSettings], ...]:
    """The two groups with MQTT and webhook sinks of the same settings: `[alerts]`, `[events]`."""
    return ("alerts", settings.alerts), ("events", settings.events)


def secret_files(settings: Settings) -> Iterator[tuple[str, Path, Callable[[], str | None]]]:
    """`(field, path, read)` for every secret kept in a file, `read` being what `run` calls."""
    for i, cluster in enumerate(settings.clusters):
        if cluster.token_file is not None:
            yield f"clusters.{i}.token_file", cluster.token_file, cluster.resolved_token
        if cluster.password_file is not None:
            yield f"clusters.{i}.password_file", cluster.password_file, cluster.resolved_password
    if settings.http.write_token_file is not None:
        yield "http.write_token_file", settings.http.write_token_file, settings.http.resolved_write_token
    for section, sinks in notification_groups(settings):
        mqtt = sinks.mqtt
        if mqtt is not None and mqtt.password_file is not None:
            yield f"{section}.mqtt.password_file", mqtt.password_file, mqtt.resolved_password
        for i, hook in enumerate(sinks.webhooks):
            if hook.token_file is not None:
                yield f"{section}.webhooks.{i}.token_file", hook.token_file, hook.resolved_token
    if settings.store.password_file is not None:
        yield "store.password_file", settings.store.password_file, settings.store.resolved_password
    history = settings.history
    for name in ("bearer_token_file", "basic_auth_password_file"):
        path = getattr(history, name)
        if path is not None:  # read as `history.prometheus.PrometheusClient` reads it
            yield f"history.{name}", path, partial(read_secret_file, path)


def ca_files(settings: Settings) -> Iterator[tuple[str, Path]]:
    """`(field, path)` of every CA bundle `run` will load (`ssl.create_default_context(cafile=)`)."""
    for i, cluster in enumerate(settings.clusters):
        ca = cluster.resolved_ca_file()
        if ca is not None and not cluster.insecure_skip_tls_verify:
            yield f"clusters.{i}.ca_file", ca
    for section, sinks in notification_groups(settings):
        mqtt = sinks.mqtt
        if mqtt is not None and mqtt.tls:
            ca = mqtt.resolved_ca_file()
            if ca is not None:
                yield f"{section}.mqtt.ca_file", ca
        for i, hook in enumerate(sinks.webhooks):
            ca = hook.resolved_ca_file()
            if ca is not None and hook.verify_tls:
                yield f"{section}.webhooks.{i}.ca_file", ca
    if settings.history.ca_file is not None:  # loaded by the Prometheus client whenever it is set
        yield "history.ca_file", expand_path(settings.history.ca_file)


def listen_problem(host: str) -> str | None:
    """Why `run` could not listen on `host` (None: it can). Every address the name resolves to is
    bound as aiohttp will bind it, but on port 0: the configured port may be held right now by
    the daemon this configuration is about to replace."""
    try:
        addresses = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return f"{host} does not resolve: {getattr(exc, 'strerror', None) or exc}"
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.bind(address)
        except OSError as exc:
            return f"cannot listen on {address[0]}: {exc.strerror or exc} (not an address of this host?)"
    return None


def store_path_problem(path: Path) -> str | None:
    """Why `run` could not open `path` as its SQLite store (None: it can). The database is created
    with its parent directories when missing; SQLite writes `-wal`/`-shm` files beside it, so the
    directory must be writable too: a file is created there and removed (`os.access` says yes to
    root anywhere, /proc and read-only mounts included). Nothing else is created here."""
    if "\0" in str(path):
        return "has a NUL character in it"
    if path.is_dir():
        return f"{path} is a directory; give a file path, e.g. {path / 'state.db'}"
    if path.exists():
        if not path.is_file():
            return f"{path} is not a regular file"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path} is not readable and writable by this user"
        try:
            with open(path, "rb") as fh:
                header = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            return f"{path} cannot be read: {exc.strerror or exc}"
        if header and header != SQLITE_HEADER:
            return f"{path} is not an SQLite database"
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # the first ancestor that exists is where mkdir starts
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {directory} is not writable by this user (SQLite writes its journal beside the file)"
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".quotapilot-check-"):
            pass
    except OSError as exc:
        return f"cannot create a file in {directory}: {exc.strerror or exc}"
    return None


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
                   "webhooks": [w.name or url_for_display(w.url) for w in alerts.webhooks],
                   "routes": len(alerts.routes)},
        "views": [v.path for v in settings.views],
        "shutdown_timeout_seconds": settings.daemon.shutdown_timeout_seconds,
    }


def config_warnings(settings: Settings) -> list[str]:
    warnings = [f"clusters.{i}.insecure_skip_tls_verify: the certificate of {c.address} is NOT verified; "
                "anyone on the path can read the token and change quotas"
                for i, c in enumerate(settings.clusters) if c.insecure_skip_tls_verify]
    webhooks: list[tuple[str, WebhookSettings]] = [
        (f"{section}.webhooks.{i}", w) for section, sinks in notification_groups(settings)
        for i, w in enumerate(sinks.webhooks)]
    warnings.extend(f"{field}.verify_tls: the certificate of {url_for_display(w.url)} is NOT verified; "
                    "anyone on the path can read what is posted (and its token)"
                    for field, w in webhooks if not w.verify_tls and w.url.startswith("https://"))
    if settings.http.host not in ("127.0.0.1", "localhost", "::1") and \
            settings.http.write_token is None and settings.http.write_token_file is None:
        warnings.append(f"http.listen: {settings.http.listen} is not loopback and no write token is set")
    for field, path, _ in secret_files(settings):
        # Warned, not refused: container runtimes mount secrets 0444 inside a private mount
        # namespace (Docker's /run/secrets), where world-readable reaches no other user.
        try:
            mode = expand_path(path).stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:
            warnings.append(f"{field}: {path} is world-readable (mode {stat.filemode(mode)}); "
                            "make it 0600 or 0640, or use systemd LoadCredential=")
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
