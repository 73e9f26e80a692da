"""The one retry loop: only transient faults, bounded, Retry-After honoured, counted."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from mils.engine.config import RetryConfig
from mils.engine.errors import EndpointUnavailable, InvalidResponse, RetriesExhausted
from mils.engine.retry import Retrier


class Flaky:
    def __init__(self, faults: list[Exception]) -> None:
        self.faults = faults
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.faults:
            raise self.faults.pop(0)
        return "ok"


def unavailable(kind: str, retry_after: float | None = None) -> EndpointUnavailable:
    return EndpointUnavailable(
        f"{kind} fault", endpoint="http://x", kind=kind, retry_after=retry_after
    )


NO_WAIT = RetryConfig(attempts=4, initial_s=0.0, max_s=0.0, jitter_s=0.0)


async def test_transient_faults_are_retried_and_counted_by_kind() -> None:
    """Two transient faults then success: three calls, faults counted by kind."""
    retrier = Retrier(NO_WAIT)
    call = Flaky([unavailable("429"), unavailable("5xx")])
    assert await retrier.call(call) == "ok"
    assert call.calls == 3
    stats = retrier.statistics()
    assert stats.faults == {"429": 1, "5xx": 1} and stats.retries == 2 and stats.exhausted == 0


async def test_non_transient_errors_are_not_retried() -> None:
    """An unusable answer surfaces at once."""
    call = Flaky([InvalidResponse("garbage", endpoint="http://x")])
    with pytest.raises(InvalidResponse):
        await Retrier(NO_WAIT).call(call)
    assert call.calls == 1


async def test_exhausted_retries_name_the_endpoint_and_attempts() -> None:
    """After `attempts` tries the error says which endpoint and how many attempts."""
    call = Flaky([unavailable("connect") for _ in range(10)])
    with pytest.raises(RetriesExhausted, match=r"after 4 attempts.*http://x"):
        await Retrier(NO_WAIT).call(call)
    assert call.calls == 4


async def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After waits at least that long even when backoff is shorter."""
    retrier = Retrier(RetryConfig(attempts=2, initial_s=0.0, max_s=1.0, jitter_s=0.0))
    with capture_logs() as logs:
        assert await retrier.call(Flaky([unavailable("429", retry_after=0.3)])) == "ok"
    assert [e["sleep_s"] for e in logs if e["event"] == "endpoint_retry"] == [0.3]


async def test_backoff_doubles_from_the_first_failure_and_attempts_are_numbered() -> None:
    """Each failed attempt is logged with its number and the wait before the next, which
    doubles from `initial_s` up to the cap."""
    retrier = Retrier(RetryConfig(attempts=5, initial_s=0.001, max_s=0.004, jitter_s=0.0))
    call = Flaky([unavailable("5xx") for _ in range(10)])
    with capture_logs() as logs, pytest.raises(RetriesExhausted, match="after 5 attempts"):
        await retrier.call(call)
    retries = [e for e in logs if e["event"] == "endpoint_retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3, 4]
    assert [e["sleep_s"] for e in retries] == [0.001, 0.002, 0.004, 0.004]
    assert call.calls == 5
    stats = retrier.statistics()
    assert stats.faults == {"5xx": 5} and stats.retries == 4 and stats.exhausted == 1


async def test_a_single_attempt_is_not_retried() -> None:
    """With `attempts` 1 the first transient fault exhausts the call."""
    retrier = Retrier(RetryConfig(attempts=1, initial_s=0.0, max_s=0.0, jitter_s=0.0))
    call = Flaky([unavailable("timeout")])
    with pytest.raises(RetriesExhausted, match="after 1 attempt"):
        await retrier.call(call)
    assert call.calls == 1
    assert retrier.statistics().faults == {"timeout": 1}
