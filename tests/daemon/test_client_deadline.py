"""The pipeline client against what README "Client" says (pipeline-developer review, 2026-12-05)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from quotapilot.daemon.pipeline_client import AsyncClient, Client, ClientError, RetryPolicy


def test_async_client_has_the_same_api_as_the_sync_one() -> None:
    """`AsyncClient`: "The same API for asyncio code" — but `target`, `pause` and `resume` exist only
    on the sync `Client`; an asyncio pipeline cannot pause its target through the client."""
    sync_api = {name for name in vars(Client) if not name.startswith("_") and callable(getattr(Client, name))}
    missing = sorted(name for name in sync_api if not callable(getattr(AsyncClient, name, None)))
    assert not missing, f"AsyncClient lacks {missing}"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A daemon that accepts connections and never answers (hung, or stopped mid-restart)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_client_gives_up_by_its_deadline(silent_server: str) -> None:
    """README: every call retries "... never past a deadline". The per-request timeout is not cut to
    the time left, so a 0.3 s deadline with the (default-like) request timeout returns only after
    the whole request timeout (here 1.5 s; 10 s by default)."""
    qp = Client(silent_server, timeout_seconds=1.5, sleep=lambda s: None,
                retry=RetryPolicy(attempts=3, deadline_seconds=0.3))
    started = time.monotonic()
    with pytest.raises(ClientError):
        qp.preflight("/cosmos7/processed", "1TB")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"a call with a 0.3 s deadline took {elapsed:.2f} s"
