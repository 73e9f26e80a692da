"""Spreads chat requests over one or more generator endpoints.

Each request goes to the endpoint with the least outstanding work relative to its limit
(in flight plus waiting, over the limit), so a faster endpoint, whose adaptive limit is
higher, takes more. An endpoint that fails `failures_to_cool` times in a row is cooled
down: it gets no new requests for a while (doubling on each relapse, capped), then one
request probes it. The last healthy endpoint is never cooled down: with nowhere else to
go, the retry backoff alone paces requests to it. A retried call may land on another
endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mils.engine.config import DEFAULT_COOLDOWN_S
from mils.engine.errors import ConfigError, EndpointUnavailable
from mils.engine.limiter import EndpointLimiter, LimiterStatistics
from mils.engine.logs import get_logger
from mils.engine.protocols import ChatMessage, Generator, Reply

__all__ = ["GeneratorRouter"]

log = get_logger(__name__)

DEFAULT_FAILURES_TO_COOL = 3
MAX_COOLDOWN_S = 120.0


@dataclass(slots=True)
class _Endpoint:
    generator: Generator
    limiter: EndpointLimiter
    consecutive_failures: int = 0
    cooldown_s: float = DEFAULT_COOLDOWN_S
    cool_until: float = 0.0


class GeneratorRouter:
    """Least-outstanding-requests routing with per-endpoint limits and cool-down."""

    def __init__(
        self,
        generators: Sequence[Generator],
        *,
        limit: int | None,
        failures_to_cool: int = DEFAULT_FAILURES_TO_COOL,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
    ) -> None:
        if not generators:
            raise ValueError("at least one generator endpoint is needed")
        if len({g.prompt_mode for g in generators}) > 1:
            raise ConfigError(
                "the generator endpoints mix prompting modes; give them all the same `prompt_mode`"
            )
        self._endpoints = [
            _Endpoint(g, EndpointLimiter(g.endpoint, limit), cooldown_s=cooldown_s)
            for g in generators
        ]
        self._failures_to_cool = failures_to_cool
        self._base_cooldown_s = cooldown_s
        self._turn = 0

    @property
    def prompt_mode(self) -> str:
        return self._endpoints[0].generator.prompt_mode

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        """One chat completion on the least loaded healthy endpoint (one attempt)."""
        return await self._attempt(lambda generator: generator.complete(messages))

    async def continue_text(self, prompt: str) -> Reply:
        """One plain continuation on the least loaded healthy endpoint (one attempt)."""
        return await self._attempt(lambda generator: generator.continue_text(prompt))

    async def _attempt(self, call: Callable[[Generator], Awaitable[Reply]]) -> Reply:
        endpoint = await self._choose()
        try:
            async with endpoint.limiter.slot():
                reply = await call(endpoint.generator)
        except EndpointUnavailable:
            self._failed(endpoint)
            raise
        endpoint.consecutive_failures = 0
        endpoint.cooldown_s = self._base_cooldown_s
        return reply

    async def _choose(self) -> _Endpoint:
        now = time.monotonic()
        # Rotate the starting point so that ties (idle endpoints) are taken in turn.
        self._turn = (self._turn + 1) % len(self._endpoints)
        order = self._endpoints[self._turn :] + self._endpoints[: self._turn]
        healthy = [e for e in order if e.cool_until <= now]
        if healthy:
            return min(healthy, key=lambda e: e.limiter.load)
        # Everything is cooling down: wait for the first to come back, then probe it.
        soonest = min(self._endpoints, key=lambda e: e.cool_until)
        await asyncio.sleep(soonest.cool_until - now)
        return soonest

    def _failed(self, endpoint: _Endpoint) -> None:
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures < self._failures_to_cool:
            return
        now = time.monotonic()
        if not any(e.cool_until <= now for e in self._endpoints if e is not endpoint):
            return  # never cool the last healthy endpoint: retry backoff paces it alone
        endpoint.cool_until = now + endpoint.cooldown_s
        log.warning(
            "endpoint_cooling_down",
            endpoint=endpoint.generator.endpoint,
            failures=endpoint.consecutive_failures,
            cooldown_s=endpoint.cooldown_s,
        )
        endpoint.cooldown_s = min(endpoint.cooldown_s * 2, MAX_COOLDOWN_S)
        # The request that probes it after the cool-down decides alone: one more failure
        # cools it again, for twice as long.
        endpoint.consecutive_failures = self._failures_to_cool - 1

    def statistics(self) -> list[LimiterStatistics]:
        return [e.limiter.statistics() for e in self._endpoints]
