"""Schema-based fuzzing of /api/v1 with schemathesis, driven by the OpenAPI document the daemon
serves (`daemon/http/openapi.json`): no 5xx, no answer that violates the document, writes without the
token refused. Bounded (few examples per operation) so the suite stays fast."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from api_fakes import TOKEN, FakeDaemon, default_quotas, make_settings, serve_in_thread
from hypothesis import HealthCheck, Phase, settings

from quotapilot.daemon.http.api import OPENAPI_PATH
from quotapilot.daemon.store.db import Database

EXAMPLES = int(os.environ.get("QP_API_FUZZ_EXAMPLES", "15"))
"""Per operation; bounded for CI. A longer run: QP_API_FUZZ_EXAMPLES=300 QP_API_FUZZ_RANDOM=1."""

# A valid request may still be refused for reasons no schema can express: a reservation the
# cluster has no room for (507), an idempotency key already used for another request (422); and,
# where a field's unit string carries a range (ttl ≤ 30 d, a pause `until` in the future), 400.
ACCEPTED = ["2xx", "401", "403", "404", "409", "422", "507"]
# negative_data_rejection is off here (test_invalid_input_is_never_a_5xx holds invalid input to
# "no 5xx, always JSON"): this test adds the Authorization header to every call, so a case
# schemathesis builds "without" it is sent with it, and unknown query parameters are ignored, as
# the document does not forbid them (seen in a 300-example random run: `POST …/resume?=0` → 200).
CONFIG = schemathesis.Config.from_dict({
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED},
               "negative_data_rejection": {"enabled": False}},
    "operations": [{
        "include-operation-id": ["preflight", "reserve", "pauseTarget"],
        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
    }],
})
schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text()), config=CONFIG)


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    config = make_settings(tmp, policy={"mode": "enforce"})
    daemon = FakeDaemon(settings=config, db=Database(config.store.path), quotas=default_quotas())
    with serve_in_thread(daemon) as url:
        yield url


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("QP_API_FUZZ_RANDOM"),
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_conforms_to_its_document(case: schemathesis.Case, api_url: str) -> None:
    case.call_and_validate(base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


# Negative data: every body, path and query the document says is invalid. Whatever the API makes
# of it, it must not be a 5xx, and it must answer in JSON.
NEGATIVE = schemathesis.Config.from_dict({
    "generation": {"mode": "negative"},
    "checks": {"enabled": False, "not_a_server_error": {"enabled": True},
               "content_type_conformance": {"enabled": True}},
})
negative_schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text()), config=NEGATIVE)


@negative_schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("QP_API_FUZZ_RANDOM"),
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_invalid_input_is_never_a_5xx(case: schemathesis.Case, api_url: str) -> None:
    case.call_and_validate(base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


# Stateful: sequences that follow the document's links (a reservation, then reading or releasing
# it by the id the answer carried), checked like the single calls.
# A released reservation stays readable (status "released", for the audit), so schemathesis'
# use-after-free check does not apply to DELETE here.
StatefulConfig = schemathesis.Config.from_dict({
    "checks": {"positive_data_acceptance": {"enabled": False}, "use_after_free": {"enabled": False}},
})
stateful_schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text()), config=StatefulConfig)


def test_linked_sequences_conform(api_url: str) -> None:
    machine = stateful_schema.as_state_machine()
    called: list[str] = []

    class ApiMachine(machine):  # type: ignore[valid-type,misc]  # generated at run time by schemathesis
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            called.append(f"{case.method} {case.path}")
            return {"base_url": api_url, "headers": {"Authorization": f"Bearer {TOKEN}"}, "timeout": 10}

    ApiMachine.run(settings=settings(max_examples=max(10, EXAMPLES // 2), deadline=None, derandomize=True,
                                     stateful_step_count=4,
                                     suppress_health_check=list(HealthCheck)))
    linked = {c for c in called if c.startswith(("GET /api/v1/reservations/", "DELETE /api/v1/reservations/"))}
    assert linked, called  # the links were followed, not only single calls
