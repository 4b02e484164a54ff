"""The VMS transport: vastpy's public contract as our client relies on it, the retry policy built
from `[vast]`, and typed errors — real vastpy over HTTPS against the built-in simulator."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import vastpy
from core_helpers import InstantClock, SettingsFactory

from quotapilot.daemon.simulator.server import SimulatorServer
from quotapilot.daemon.vms.errors import VmsRefused, VmsUnavailable, classify, retry_after_seconds
from quotapilot.daemon.vms.transport import Endpoint, VmsClient, VmsTransport, make_client, retry_policy


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


class TestVastpyContract:
    """What `VmsClient` relies on in vastpy, all of it public: the constructor's keywords, child
    clients built with `self.__class__(...)` from those keywords, `RESTFailure`'s fields and
    `SUCCESS_CODES`. If a vastpy release changes one of these, this class fails first."""

    def test_our_constructor_takes_exactly_vastpys_keywords(self) -> None:
        theirs = list(inspect.signature(vastpy.VASTClient.__init__).parameters)
        ours = list(inspect.signature(VmsClient.__init__).parameters)
        assert ours == theirs

    def test_child_clients_are_ours_and_carry_the_connection(self, make_settings: SettingsFactory) -> None:
        cluster = make_settings().clusters[0]
        root = make_client(cluster, timeout_seconds=5.0)
        child = root["quotas"]
        assert isinstance(child, VmsClient)
        assert type(child) is type(root)  # the per-cluster class, so the same pool and timeout
        assert child.endpoint == Endpoint(
            address=cluster.address, url=f"api/{cluster.api_version}/quotas", version=None, tenant=cluster.tenant,
            token=cluster.resolved_token(), user=None, password=None, cert_file=str(cluster.ca_file),
            cert_server_name=None)
        assert child.endpoint.request_url == f"https://{cluster.address}/api/{cluster.api_version}/quotas/"
        grandchild = child["7"]
        assert grandchild.endpoint.url == f"api/{cluster.api_version}/quotas/7"

    def test_rest_failure_fields(self) -> None:
        failure = vastpy.RESTFailure("GET", "api/latest/quotas", None, 503, b"busy")
        failure.headers = {"Retry-After": "12"}
        error = classify(failure)
        assert isinstance(error, VmsUnavailable)
        assert (error.reason, error.delay) == ("server_error", 12.0)
        assert str(error) == "GET api/latest/quotas: HTTP 503 busy"

    def test_success_codes_are_what_the_client_accepts(self) -> None:
        assert {200, 201, 204} <= {int(code) for code in vastpy.SUCCESS_CODES}


class TestRetryAfterHeader:
    """`Retry-After` is read in any case, as seconds or an HTTP date."""

    @pytest.mark.parametrize(("headers", "expected"), [
        ({"retry-after": "5"}, 5.0), ({"RETRY-AFTER": "Thu, 01 Jan 2026 00:00:30 GMT"}, 30.0),
        ({}, None), (None, None),
    ])
    def test_read(self, headers: dict[str, str] | None, expected: float | None) -> None:
        assert expected == retry_after_seconds(headers, now=1_767_225_600.0)


class TestRetries:
    """The `[vast]` settings as the one retry policy, against the simulator's faults."""

    def test_policy_from_settings(self, make_settings: SettingsFactory) -> None:
        vast = make_settings(vast={"max_retries": 2, "backoff_base_seconds": 3, "backoff_max_seconds": 20}).vast
        policy = retry_policy(vast)
        assert (policy.attempts, policy.base_seconds, policy.max_seconds, policy.retry_after_max_seconds) == \
            (3, 3.0, 20.0, 20.0)
        assert policy.deadline_seconds is None

    async def test_retry_after_is_capped_at_backoff_max(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        sim.faults.add("rate_limit", count=1, retry_after=600, path="/clusters/")
        settings = make_settings(vast={"backoff_max_seconds": 45})
        transport = VmsTransport(settings.clusters[0], settings.vast, clock, executor)
        await transport.get("clusters")
        assert clock.slept == [45.0]
        assert transport.requests_made == 2

    async def test_refusal_is_not_retried(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock,
            executor: ThreadPoolExecutor) -> None:
        settings = make_settings()
        transport = VmsTransport(settings.clusters[0], settings.vast, clock, executor)
        with pytest.raises(VmsRefused) as info:
            await transport.get("quotas/999999")
        assert (info.value.reason, info.value.status) == ("not_found", 404)
        assert clock.slept == []
