"""The token `/api/v1` writes are checked against: `[http] write_token`, or `write_token_file`
read at use (as every `*_file` secret), so a rotated token is honoured without a restart and the
old one stops working at once.

A file that cannot be read, or holds no token, refuses writes (`WriteTokenUnavailable`) rather
than leaving the last token it held valid: a token an operator removed must not keep working.
The file is small and writes are rare, so it is read on every write, not cached by mtime (two
writes within one filesystem timestamp tick would look unchanged). Transitions are logged once
(`api.write_token_unavailable`, `api.write_token_restored`, `api.write_token_changed`); the token never is.
"""

from __future__ import annotations

import hashlib
import stat
import threading
from pathlib import Path

from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.settings import HttpSettings, expand_path

log = get_logger(__name__)

MAX_TOKEN_FILE_BYTES = 64 * 1024
"""A token file larger than this is not a token (and is not read into memory)."""


class WriteTokenUnavailable(Exception):
    """The token file cannot be read or holds no token; `reason` says why (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WriteToken:
    """The configured write token: inline, from a file read at use, or none."""

    def __init__(self, http: HttpSettings) -> None:
        self._inline = http.write_token.get_secret_value() if http.write_token is not None else None
        self._path: Path | None = expand_path(http.write_token_file) if http.write_token_file is not None else None
        self._lock = threading.Lock()  # `current` runs in worker threads; the log state is shared
        self._fingerprint: bytes | None = None
        self._problem: str | None = None

    def current(self) -> str | None:
        """The token now, or None when none is configured. Blocking when it comes from a file
        (call it through `asyncio.to_thread`); raises `WriteTokenUnavailable`."""
        if self._inline is not None or self._path is None:
            return self._inline
        try:
            token = self._read(self._path)
        except WriteTokenUnavailable as exc:
            with self._lock:
                if exc.reason != self._problem:
                    self._problem = exc.reason
                    log.warning("api.write_token_unavailable", path=str(self._path), reason=exc.reason)
            raise
        fingerprint = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        with self._lock:
            changed = self._fingerprint is not None and fingerprint != self._fingerprint
            if self._problem is not None:
                log.info("api.write_token_restored", path=str(self._path), changed=changed)
            elif changed:
                log.info("api.write_token_changed", path=str(self._path))
            self._fingerprint, self._problem = fingerprint, None
        return token

    @staticmethod
    def _read(path: Path) -> str:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read; a directory fails it
                raise WriteTokenUnavailable("is not a regular file")
            if info.st_size > MAX_TOKEN_FILE_BYTES:
                raise WriteTokenUnavailable(f"is larger than {MAX_TOKEN_FILE_BYTES} bytes")
            token = path.read_bytes().decode("utf-8", "surrogateescape").strip()
        except OSError as exc:
            raise WriteTokenUnavailable(f"cannot be read: {exc.strerror or type(exc).__name__}") from None
        if not token:
            raise WriteTokenUnavailable("is empty")
        return token
