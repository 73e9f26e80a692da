"""The one retry loop every endpoint call goes through.

Only `EndpointUnavailable` is retried (connect errors, timeouts, 429, 5xx, Triton
UNAVAILABLE); everything else surfaces at once. Backoff is exponential with jitter and a
cap; a server's Retry-After is honoured (up to four times the cap). A call that runs out
of attempts raises `RetriesExhausted`, which fails the sample, not the run. A generator's
429 never reaches this loop: the router pauses the endpoint and sends the request again
(`mils.engine.router`), so a rate limit spends no attempt.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from mils.engine.config import RetryConfig
from mils.engine.errors import EndpointUnavailable, RetriesExhausted
from mils.engine.logs import get_logger

__all__ = ["Retrier", "RetryStatistics"]

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    """Faults seen so far, counted by kind ("connect", "timeout", "429", "5xx", ...)."""

    faults: dict[str, int]
    retries: int
    exhausted: int


class Retrier:
    """Runs calls with the configured retry policy and counts what it saw."""

    def __init__(self, config: RetryConfig) -> None:
        self._config = config
        self._faults: Counter[str] = Counter()
        self._retries = 0
        self._exhausted = 0

    @property
    def config(self) -> RetryConfig:
        return self._config

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await `fn(*args, **kwargs)`, retrying transient faults.

        The first attempt is a plain await: the retry loop's machinery is built only once
        it fails (at scale, building it for every call cost about 5% of the engine's CPU).

        Raises:
            RetriesExhausted: the endpoint stayed unavailable for every attempt.
        """
        try:
            return await fn(*args, **kwargs)
        except EndpointUnavailable as exc:
            first = exc
        attempts = self._config.attempts
        try:
            if attempts == 1:
                raise first
            delay = self._delay(1, first)
            self._note(1, first, delay)
            await asyncio.sleep(delay)
            retrying = AsyncRetrying(  # attempts 2.. (tenacity counts them from 1)
                retry=retry_if_exception_type(EndpointUnavailable),
                stop=stop_after_attempt(attempts - 1),
                wait=lambda state: self._delay(state.attempt_number + 1, _failure(state)),
                before_sleep=lambda state: self._note(
                    state.attempt_number + 1, _failure(state), state.upcoming_sleep
                ),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    return await fn(*args, **kwargs)
        except EndpointUnavailable as exc:
            self._faults[exc.kind] += 1
            self._exhausted += 1
            raise RetriesExhausted(exc, attempts=attempts) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _delay(self, attempt: int, exc: EndpointUnavailable) -> float:
        """Seconds to wait after failed attempt number `attempt`: exponential backoff with
        jitter and a cap, or the server's Retry-After (up to four times the cap)."""
        config = self._config
        backoff = config.initial_s * 2 ** (attempt - 1)
        delay = min(backoff, config.max_s) + random.uniform(0, config.jitter_s)
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, 4 * config.max_s))
        return delay

    def _note(self, attempt: int, exc: EndpointUnavailable, sleep_s: float) -> None:
        """Count and log failed attempt number `attempt`, to be retried after `sleep_s`."""
        self._faults[exc.kind] += 1
        self._retries += 1
        log.warning(
            "endpoint_retry",
            endpoint=exc.endpoint,
            fault=exc.kind,
            attempt=attempt,
            sleep_s=round(sleep_s, 3),
            error=str(exc),
        )

    def statistics(self) -> RetryStatistics:
        return RetryStatistics(
            faults=dict(self._faults), retries=self._retries, exhausted=self._exhausted
        )


def _failure(state: RetryCallState) -> EndpointUnavailable:
    """The error of the attempt tenacity is about to retry (only these are retried)."""
    exc = state.outcome.exception() if state.outcome else None
    assert isinstance(exc, EndpointUnavailable)
    return exc
