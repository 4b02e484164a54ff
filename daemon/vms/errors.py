"""Typed errors at the VMS boundary, and the translation of what vastpy/urllib3 raise into them.

`VmsUnavailable` (a `TemporaryError`: network trouble, 5xx, 429, a body that is not JSON, a page
shorter than its envelope promises, a TLS failure other than those below) is retried by the
transport under the retry policy, waiting at least the server's `Retry-After`; `VmsRefused` (a
`PermanentError`: 401, 403, 400, 404, a certificate we do not accept, a TLS handshake the two
sides cannot agree on) is not. Both carry a short `reason` that becomes the `reason` label of
`quotapilot_poll_errors_total`. A `VmsUnavailable` says whether the request may have been carried
out (`outcome_unknown`), so a refusal of a retried write can say that an earlier attempt may still
land (`after_lost_answer`).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping

import urllib3
import vastpy
from urllib3.util.ssl_match_hostname import CertificateError

from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.runtime.retry import parse_retry_after

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: the VMS is busy or briefly broken, not refusing."""

UNPROCESSED_STATUS = frozenset({408, 425, 429})
"""Retryable statuses that say the request was turned away before it was carried out; after a
5xx (a proxy's 502 or 504 above all) a write may have been applied."""

POLL_ERROR_REASONS: tuple[str, ...] = (
    "throttled", "server_error", "http_error", "auth", "not_found", "refused", "tls", "connection",
    "timeout", "truncated", "malformed", "unexpected", "no_cluster")
"""Every `reason` a failed poll can have (`classify`, and the poller's `no_cluster`: `GET /clusters/`
answered no cluster); the metric starts each at 0."""


class VmsUnavailable(TemporaryError):
    """The VMS did not answer usefully this time: retry later. `reason` is a metric label.
    `outcome_unknown`: the request may have been carried out (no answer, a 5xx, an answer we could
    not read); False when it never reached the VMS (no connection) or was turned away unprocessed
    (`UNPROCESSED_STATUS`). For a write, a retry after an unknown outcome can race its first try
    (`PermanentError.after_lost_answer`)."""

    def __init__(self, message: str, *, reason: str, delay: float | None = None,
                 outcome_unknown: bool = True) -> None:
        super().__init__(message, delay=delay)
        self.reason = reason
        self.outcome_unknown = outcome_unknown


class VmsRefused(PermanentError):
    """The VMS refused the request; retrying will not help. `status` is the HTTP status (if any)."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class TlsHandshakeFailed(urllib3.exceptions.SSLError):
    """The TLS handshake of a new connection failed (raised by `transport.VmsHttpsConnection`,
    the cause being what `ssl` or the socket raised): no byte of the request was sent. urllib3
    raises its plain `SSLError` alike for a handshake and for a record that fails while the
    answer is read, after the request went out; only the connection knows which phase it was in.
    A subclass of urllib3's `SSLError`, so urllib3 passes it through as it is."""


HANDSHAKE_REFUSALS = frozenset({
    "TLSV1_ALERT_PROTOCOL_VERSION",   # the VMS (or a proxy) speaks only a TLS version we do not
    "UNSUPPORTED_PROTOCOL",           # ... or we refuse the version it chose
    "VERSION_TOO_LOW",
    "NO_PROTOCOLS_AVAILABLE",         # our context enables no version at all
    "WRONG_VERSION_NUMBER",           # not TLS: a plain-HTTP port answered the ClientHello
    "NO_SHARED_CIPHER",               # no cipher both sides accept
    "NO_CIPHERS_AVAILABLE",
    "SSLV3_ALERT_HANDSHAKE_FAILURE",  # the peer's alert for the same (no cipher or group in common)
    "TLSV1_ALERT_INSUFFICIENT_SECURITY",
})
"""OpenSSL's reason codes (`ssl.SSLError.reason`) for a handshake the two sides cannot agree on:
a configuration that stays as it is until someone changes it, so no retry would help."""


class TruncatedPage(ValueError):
    """A page with fewer objects than its envelope promises (raised while paging, in the pool
    thread, so it is retried like any temporary failure)."""


def error_reason(exc: BaseException) -> str:
    """The metric label for an error raised by a VMS call."""
    return getattr(exc, "reason", None) or type(exc).__name__.lower()


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The `Retry-After` header (any case) of a failed response, as seconds."""
    value = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
    return parse_retry_after(value, time.time() if now is None else now)


def certificate_failure(exc: BaseException) -> BaseException | None:
    """The certificate verification failure behind `exc`, if that is what it is: the server's
    certificate not trusted (`ssl.SSLCertVerificationError`, hostname mismatch included) or not
    matching the host urllib3 checks itself (its `CertificateError`). urllib3 wraps either in its
    `SSLError` (as its argument and the exception's cause or context), possibly inside a
    `MaxRetryError` / `ProxyError` (`reason`, `original_error`)."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 16:  # a chain of a few links; the bound only guards a cycle
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ssl.SSLCertVerificationError | CertificateError):
            return error
        linked = [*error.args, getattr(error, "reason", None), getattr(error, "original_error", None),
                  error.__cause__, error.__context__]
        pending.extend(link for link in linked if isinstance(link, BaseException))
    return None


def classify(exc: BaseException) -> VmsUnavailable | VmsRefused:
    """Translate what vastpy/urllib3 raised into our typed errors."""
    if isinstance(exc, vastpy.RESTFailure):
        status = int(exc.status)
        body = exc.data.decode("utf-8", "replace")[:200] if isinstance(exc.data, bytes) else str(exc.data)
        message = f"{exc.method} {exc.url}: HTTP {status} {body}"
        if status in RETRYABLE_STATUS:
            reason = "throttled" if status == 429 else "server_error" if status >= 500 else "http_error"
            return VmsUnavailable(message, reason=reason, delay=retry_after_seconds(getattr(exc, "headers", None)),
                                  outcome_unknown=status not in UNPROCESSED_STATUS)
        reason = "auth" if status in (401, 403) else "not_found" if status == 404 else "refused"
        return VmsRefused(message, reason=reason, status=status)
    if isinstance(exc, urllib3.exceptions.HTTPError | ssl.SSLError) and certificate_failure(exc) is not None:
        return VmsRefused(f"certificate not accepted: {exc}", reason="tls")
    if isinstance(exc, TlsHandshakeFailed):
        return handshake_failure(exc)
    if isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError):
        # any other TLS failure (a record that fails its MAC, an alert mid-answer) can come after
        # the request went out: retried, and a write's outcome is unknown, as after a lost answer
        return VmsUnavailable(f"TLS failure: {exc}", reason="tls")
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # (a ConnectTimeoutError subclass)
        return VmsUnavailable(str(exc), reason="connection", outcome_unknown=False)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):  # no connection: nothing was sent
        return VmsUnavailable(str(exc), reason="timeout", outcome_unknown=False)
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return VmsUnavailable(str(exc), reason="timeout")
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | OSError):
        return VmsUnavailable(str(exc), reason="connection")
    if isinstance(exc, TruncatedPage):
        return VmsUnavailable(f"truncated listing: {exc}", reason="truncated")
    if isinstance(exc, ValueError | UnicodeDecodeError):  # body said JSON but is not
        return VmsUnavailable(f"malformed response: {exc}", reason="malformed")
    return VmsUnavailable(f"{type(exc).__name__}: {exc}", reason="unexpected")


def handshake_failure(exc: TlsHandshakeFailed) -> VmsUnavailable | VmsRefused:
    """A failed handshake sent nothing (`outcome_unknown` False). One the two sides cannot agree
    on (`HANDSHAKE_REFUSALS`, by the `reason` code `ssl` gives, never by the message) is a `tls`
    refusal: retrying it every poll would only delay the alert. Any other (the connection cut or
    timed out mid-handshake: a VMS restarting, a busy proxy) is retried."""
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError) and getattr(cause, "reason", None) in HANDSHAKE_REFUSALS:  # set by _ssl
        return VmsRefused(f"TLS handshake refused: {exc}", reason="tls")
    if isinstance(cause, TimeoutError):
        reason = "timeout"
    elif isinstance(cause, ssl.SSLError):
        reason = "tls"
    else:
        reason = "connection"
    return VmsUnavailable(f"TLS handshake failed: {exc}", reason=reason, outcome_unknown=False)
