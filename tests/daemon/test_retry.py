"""The one retry policy: exponential or scheduled, jittered, Retry-After as a capped lower bound,
attempts and deadline; and the pipeline client's import stays stdlib-only."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from quotapilot.daemon.runtime.retry import RetryPolicy, parse_retry_after


class TestExponential:
    """Nominal waits double from `base_seconds` up to `max_seconds`; jitter within the range."""

    def test_doubles_up_to_the_cap(self) -> None:
        policy = RetryPolicy(base_seconds=1.0, max_seconds=10.0)
        assert [policy.nominal(a) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]

    def test_jitter_stays_in_range_and_varies(self) -> None:
        policy = RetryPolicy(base_seconds=2.0, max_seconds=60.0)
        rng = random.Random(7)
        waits = [policy.delay(3, None, rng) for _ in range(200)]
        assert all(8.0 <= wait <= 16.0 for wait in waits)
        assert len(set(waits)) > 100

    def test_a_huge_attempt_count_does_not_overflow(self) -> None:
        assert RetryPolicy(max_seconds=5.0).nominal(10_000) == 5.0


class TestSchedule:
    """A fixed schedule (the alert dispatcher's `retry_backoffs_seconds`): the last step repeats."""

    def test_steps_then_the_last_repeats(self) -> None:
        policy = RetryPolicy.schedule((1, 2, 5, 10))
        assert [policy.nominal(a) for a in range(5)] == [1.0, 2.0, 5.0, 10.0, 10.0]

    def test_jittered_twenty_percent_by_default(self) -> None:
        policy = RetryPolicy.schedule((10,))
        rng = random.Random(3)
        waits = [policy.delay(0, None, rng) for _ in range(200)]
        assert all(8.0 <= wait <= 12.0 for wait in waits)
        assert min(waits) < 9.0 and max(waits) > 11.0

    def test_unbounded_attempts_and_no_deadline(self) -> None:
        policy = RetryPolicy.schedule((1,))
        assert not policy.exhausted(10_000)
        assert policy.time_left(1e9) == float("inf")


class TestRetryAfter:
    """Retry-After is a lower bound, capped; the backoff still grows underneath it."""

    def test_waits_at_least_retry_after(self) -> None:
        policy = RetryPolicy(base_seconds=0.5)
        assert policy.delay(0, 7.0, random.Random(1)) == 7.0

    def test_a_longer_backoff_is_not_shortened_by_a_short_retry_after(self) -> None:
        policy = RetryPolicy(base_seconds=1.0, max_seconds=60.0, jitter=(1.0, 1.0))
        assert policy.delay(4, 1.0, random.Random(1)) == 16.0

    def test_capped(self) -> None:
        policy = RetryPolicy(retry_after_max_seconds=60.0)
        assert policy.delay(0, 86_400.0, random.Random(1)) == 60.0

    def test_negative_is_zero(self) -> None:
        policy = RetryPolicy(base_seconds=1.0, jitter=(1.0, 1.0))
        assert policy.delay(0, -5.0, random.Random(1)) == 1.0

    @pytest.mark.parametrize(("header", "expected"), [
        ("3", 3.0), (" 2.5 ", 2.5), ("-4", 0.0), ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
        ("soon", None), ("", None), (None, None), ("nan", None),
    ])
    def test_parse(self, header: str | None, expected: float | None) -> None:
        assert expected == parse_retry_after(header, 1_767_225_600.0)


class TestLimits:
    """`attempts` counts every try; the deadline runs from the first."""

    def test_attempts(self) -> None:
        policy = RetryPolicy(attempts=3)
        assert [policy.exhausted(a) for a in range(3)] == [False, False, True]

    def test_time_left(self) -> None:
        assert RetryPolicy(deadline_seconds=60.0).time_left(45.0) == 15.0

    @pytest.mark.parametrize("bad", [{"attempts": 0}, {"base_seconds": 0}, {"jitter": (1.2, 0.8)},
                                     {"schedule_seconds": (1.0, -1.0)}])
    def test_nonsense_is_refused(self, bad: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]  # each case is one field of the wrong value

    def test_bound_backoff_uses_the_given_rng(self) -> None:
        policy = RetryPolicy(base_seconds=1.0)
        first = policy.backoff(random.Random(5))
        second = policy.backoff(random.Random(5))
        assert [first(a, None) for a in range(4)] == [second(a, None) for a in range(4)]


class TestStdlibOnly:
    """Pipelines import the client without the daemon's dependencies: importing it (and so the
    retry policy) loads nothing outside the standard library and quotapilot."""

    def test_pipeline_client_imports_only_the_stdlib(self) -> None:
        code = (
            "import json, sys\n"
            "before = set(sys.modules)\n"
            "import quotapilot.daemon.pipeline_client\n"
            "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
            "print(json.dumps(sorted(new - set(sys.stdlib_module_names) - {'quotapilot'})))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == []
