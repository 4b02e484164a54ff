"""Fixtures of the alert tests: a subscriber on the test's own broker (`broker` and `receiver`
are in tests/conftest.py, shared with the daemon's live event tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alert_receivers import Broker, Subscriber, subscribe


@pytest.fixture
async def subscriber(broker: Broker) -> AsyncIterator[Subscriber]:
    async for sub in subscribe(broker.port, "qp/#"):
        yield sub
