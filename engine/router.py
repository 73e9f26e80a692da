"""Spreads chat requests over one or more generator endpoints.

Each request goes to the endpoint expected to answer it first: its measured latency,
longer by the queue ahead of the request (served `limit` at a time), so a faster endpoint
takes every request until its queue would cost more than a slower one's latency; until
each endpoint's latency is known, to the one with the least outstanding work relative to
its limit (in flight plus waiting, over the limit). An endpoint that fails
`failures_to_cool` times in a row is cooled down: it gets no new requests for a while
(doubling on each relapse, capped), then one request probes it. The last healthy endpoint
is never cooled down: with nowhere else to go, the retry backoff alone paces requests to
it. A retried call may land on another endpoint.

A rate limit (HTTP 429) is the endpoint's state, not the call's fault: the endpoint is
paused for as long as the server asked (Retry-After or a rate-limit reset header; without
one, a backoff that doubles from 1 s to 30 s), every caller waits that one pause out in
its limiter's queue (or goes to an endpoint that is not paused), and the call is sent again
without spending a retry attempt. A 429 from a request sent before the pause began only
confirms it. The wait is bounded: once an endpoint has been rate limited, with no request
served, for `max_rate_limit_wait_s`, calls that meet its 429s go to another endpoint, or
fail where there is none (`RateLimitExceeded`).

Better than meeting a 429 is not causing one: an endpoint with requests- or
tokens-per-minute limits (its generator's `rate_limits`, or what its replies' headers state)
gets its requests paced under them (`mils.engine.ratelimit`) before they take an in-flight
slot; each reply settles the tokens its request reserved, and its headers may lower the
limits.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from mils.engine.config import DEFAULT_COOLDOWN_S, DEFAULT_MAX_RATE_LIMIT_WAIT_S, RateLimits
from mils.engine.errors import ConfigError, EndpointUnavailable, RateLimitExceeded
from mils.engine.limiter import EndpointLimiter, LimiterStatistics
from mils.engine.logs import get_logger
from mils.engine.observe import RequestObserver, observed
from mils.engine.protocols import ChatMessage, Generator, RateLimited, Reply
from mils.engine.usage import estimate_tokens, reply_usage

__all__ = ["GeneratorRouter"]

log = get_logger(__name__)

DEFAULT_FAILURES_TO_COOL = 3
MAX_COOLDOWN_S = 120.0
RATE_LIMIT_BACKOFF_S = 1.0
"""First pause of a rate-limited endpoint that names no wait; doubles per 429 after it."""
MAX_RATE_LIMIT_BACKOFF_S = 30.0


@dataclass(slots=True)
class _Endpoint:
    generator: Generator
    limiter: EndpointLimiter
    consecutive_failures: int = 0
    cooldown_s: float = DEFAULT_COOLDOWN_S
    cool_until: float = 0.0
    limited_since: float | None = None
    """When its current rate limit began (the first 429 since a request was served)."""
    paused_at: float = -math.inf
    """When its pause last grew: 429s of requests sent before then are echoes."""
    backoffs: int = 0
    """Pauses without a server-given wait in the current rate limit."""


class GeneratorRouter:
    """Least-outstanding-requests routing with per-endpoint limits, cool-down and rate-limit
    pauses.

    `on_request`, if given, hears of every attempt (see `mils.engine.observe`);
    `on_served`, of every request an endpoint served (its `endpoint` name).
    """

    def __init__(
        self,
        generators: Sequence[Generator],
        *,
        limit: int | None,
        failures_to_cool: int = DEFAULT_FAILURES_TO_COOL,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        max_rate_limit_wait_s: float = DEFAULT_MAX_RATE_LIMIT_WAIT_S,
        on_request: RequestObserver | None = None,
        on_served: Callable[[str], None] | None = None,
    ) -> None:
        if not generators:
            raise ValueError("at least one generator endpoint is needed")
        if len({g.prompt_mode for g in generators}) > 1:
            raise ConfigError(
                "the generator endpoints mix prompting modes; give them all the same `prompt_mode`"
            )
        self._endpoints = [
            _Endpoint(
                g,
                EndpointLimiter(
                    g.endpoint,
                    limit,
                    rate=g.rate_limits if isinstance(g, RateLimited) else None,
                ),
                cooldown_s=cooldown_s,
            )
            for g in generators
        ]
        self._failures_to_cool = failures_to_cool
        self._base_cooldown_s = cooldown_s
        self._max_rate_limit_wait_s = max_rate_limit_wait_s
        self._on_request = on_request
        self._on_served = on_served
        self._turn = 0

    @property
    def prompt_mode(self) -> str:
        return self._endpoints[0].generator.prompt_mode

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        """One chat completion on the least loaded healthy endpoint (one attempt; a 429
        is sent again when its endpoint's pause ends).

        Raises:
            EndpointUnavailable: a transient fault other than 429 (for the retry loop).
            RateLimitExceeded: rate limited past `max_rate_limit_wait_s`.
        """
        prompt = "\n".join(m["content"] for m in messages)
        return await self._attempt(lambda generator: generator.complete(messages), prompt)

    async def continue_text(self, prompt: str) -> Reply:
        """One plain continuation, as `complete` sends a chat request."""
        return await self._attempt(lambda generator: generator.continue_text(prompt), prompt)

    async def _attempt(self, call: Callable[[Generator], Awaitable[Reply]], prompt: str) -> Reply:
        """Send `call` (whose prompt text is `prompt`) to an endpoint, again after a 429."""
        prompt_tokens = estimate_tokens(prompt)
        while True:  # a rate-limited request is sent again once its endpoint's pause ends
            endpoint = await self._choose()
            exceeded: RateLimitExceeded | None = None
            try:
                async with endpoint.limiter.slot(prompt_tokens) as reservation:
                    sent = time.monotonic()
                    generator = endpoint.generator
                    try:
                        reply = await observed(
                            self._on_request, "generator", generator.endpoint, call(generator)
                        )
                    except EndpointUnavailable as exc:
                        if exc.kind == "429":  # paused before the slot goes to a waiter
                            exceeded = self._rate_limited(endpoint, exc, sent)
                        raise
                    usage = reply_usage(reply, prompt)
                    endpoint.limiter.settle(
                        reservation,
                        tokens=usage.tokens,
                        completion=usage.completion_tokens,
                        said=reply.provider_limits,
                    )
            except EndpointUnavailable as exc:
                if exc.kind != "429":
                    self._failed(endpoint)
                    raise
                if exceeded is not None:
                    self._failed(endpoint)  # past its bound: route around it like a failure
                    if not self._elsewhere(endpoint):
                        raise exceeded from exc
                continue
            self._served(endpoint)
            return reply

    async def _choose(self) -> _Endpoint:
        now = time.monotonic()
        # Rotate the starting point so that ties (idle endpoints) are taken in turn.
        self._turn = (self._turn + 1) % len(self._endpoints)
        order = self._endpoints[self._turn :] + self._endpoints[: self._turn]
        ready = [e for e in order if e.cool_until <= now and not e.limiter.paused_for]
        if ready:
            if any(e.limiter.expected_s is None for e in ready):  # a latency not yet known
                return min(ready, key=lambda e: e.limiter.load)
            return min(ready, key=lambda e: e.limiter.expected_s or 0.0)
        # Nothing takes requests now: wait for the first endpoint back. A cool-down is waited
        # out here, then the request probes it; a pause, in the limiter's queue.
        soonest = min(order, key=lambda e: max(e.cool_until - now, e.limiter.paused_for))
        if soonest.cool_until > now:
            await asyncio.sleep(soonest.cool_until - now)
        return soonest

    def _elsewhere(self, endpoint: _Endpoint) -> bool:
        """Whether another endpoint can take the request (now, or after its pause)."""
        now = time.monotonic()
        return any(e.cool_until <= now for e in self._endpoints if e is not endpoint)

    def _served(self, endpoint: _Endpoint) -> None:
        endpoint.consecutive_failures = 0
        endpoint.cooldown_s = self._base_cooldown_s
        if endpoint.limited_since is not None:
            log.info(
                "endpoint_rate_limit_lifted",
                endpoint=endpoint.generator.endpoint,
                limited_s=round(time.monotonic() - endpoint.limited_since, 1),
            )
            endpoint.limited_since, endpoint.backoffs = None, 0
        if self._on_served is not None:
            self._on_served(endpoint.generator.endpoint)

    def _rate_limited(
        self, endpoint: _Endpoint, exc: EndpointUnavailable, sent: float
    ) -> RateLimitExceeded | None:
        """Pause the endpoint for as long as the 429 asks (or a backoff), within the bound;
        return the error to raise instead when the pause would pass `max_rate_limit_wait_s`."""
        now = time.monotonic()
        if endpoint.limited_since is None:
            endpoint.limited_since = now
        echo = sent < endpoint.paused_at  # sent before the pause began
        if exc.retry_after is not None and exc.retry_after > 0:
            wait, told = exc.retry_after, True
        elif echo:
            return None  # it says nothing new: wait the pause out
        else:
            wait = min(RATE_LIMIT_BACKOFF_S * 2**endpoint.backoffs, MAX_RATE_LIMIT_BACKOFF_S)
            told, endpoint.backoffs = False, endpoint.backoffs + 1
        limited = now - endpoint.limited_since
        if limited + wait > self._max_rate_limit_wait_s:
            log.warning(
                "endpoint_rate_limit_exceeded",
                endpoint=endpoint.generator.endpoint,
                limited_s=round(limited, 1),
                wait_s=round(wait, 3),
                max_wait_s=self._max_rate_limit_wait_s,
            )
            return RateLimitExceeded(
                exc, limited_s=limited, wait_s=wait, max_wait_s=self._max_rate_limit_wait_s
            )
        if endpoint.limiter.pause(wait) and not echo:
            endpoint.paused_at = now
            resumes = datetime.datetime.now().astimezone() + datetime.timedelta(seconds=wait)
            log.warning(
                "endpoint_paused",
                endpoint=endpoint.generator.endpoint,
                reason="rate limited (HTTP 429)",
                wait_s=round(wait, 3),
                told_by_server=told,
                resumes_at=resumes.isoformat(timespec="seconds"),
                limited_s=round(limited, 1),
            )
        return None

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

    def pause(self, endpoint: str, seconds: float) -> None:
        """Pause `endpoint` for `seconds` from now, as a 429 of its own would (a pause only
        grows): on Ray, a pause another worker met, since a provider's rate limit is the
        account's. A 429 of a request sent before then only confirms it."""
        for e in self._endpoints:
            if e.generator.endpoint == endpoint and e.limiter.pause(seconds):
                e.paused_at = time.monotonic()

    def reshare(
        self, limit: int | None, rates: Mapping[str, RateLimits], share: float = 1.0
    ) -> None:
        """Take a new share of every endpoint (`EndpointLimiter.reshare`): a fixed `limit`,
        the configured rates of the endpoints `rates` names, `share` of learned limits."""
        for endpoint in self._endpoints:
            endpoint.limiter.reshare(limit, rates.get(endpoint.generator.endpoint), share)

    def statistics(self) -> list[LimiterStatistics]:
        return [e.limiter.statistics() for e in self._endpoints]
