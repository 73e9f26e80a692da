"""Per-endpoint limit on requests in flight (the generator side's backpressure)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = ["EndpointLimiter", "LimiterStatistics"]


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    limit: int
    in_flight: int
    waiting: int
    completed: int
    peak_in_flight: int


class EndpointLimiter:
    """At most `limit` requests in flight to one endpoint; the rest wait their turn."""

    def __init__(self, endpoint: str, limit: int) -> None:
        self.endpoint = endpoint
        self._limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._in_flight = 0
        self._waiting = 0
        self._completed = 0
        self._peak = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one request slot for the duration of the block."""
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self._completed += 1
            self._slots.release()

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(
            limit=self._limit,
            in_flight=self._in_flight,
            waiting=self._waiting,
            completed=self._completed,
            peak_in_flight=self._peak,
        )
