"""Per-endpoint limit on requests in flight: fixed, or adaptive to the endpoint's latency.

An LLM server with continuous batching answers in about the same time up to its batch
capacity, then queues: latency grows with every extra request while throughput stays flat.
The adaptive limit finds that knee by itself, like TCP Vegas (and Netflix's
concurrency-limits `VegasLimit`): from the no-load latency and the latency of the last
window of requests it estimates how many requests are queued at the server,

    queued = limit * (1 - rtt_noload / rtt)

and raises the limit while fewer than `alpha` are queued, lowers it when more than `beta`
are, so the server stays saturated with a short queue. The limit changes at most once per
window of `limit` completions (about one round trip), so each change is judged by latencies
measured under it. It starts high (`DEFAULT_INITIAL_LIMIT`) and grows 4x per window until
the first sign of queueing (slow start); then it drops at once to the rate the server was
seen to serve (the mean in flight times `rtt_noload / rtt`, plus `alpha`) and moves by steps
from there. The no-load latency of the first window is the mean of its requests answered
within twice the fastest one: when the start is above the server's capacity, those are the
requests served without queueing. Overload signals halve it at once, once per round: the
overloads of requests sent before the last cut (a burst of 429s from requests already in
flight) say nothing about the new limit, as in TCP's one cut per window. A 429 or a timeout
is an overload signal by itself; a server error (5xx, a refused connection) only when such
errors are a large share of recent requests (`ERROR_SHARE` of a moving average over about
`ERROR_MEMORY` requests): an overloaded server fails most requests, while a server with
sporadic faults (a few percent of 500s) is not made slower by them.

A limiter can also be paused (`pause`): a rate-limited endpoint (HTTP 429) gets no request
at all until the time the server named, whatever its limit; every caller waits that one
pause out in the limiter's queue instead of firing and failing on its own.

Under a provider's requests- and tokens-per-minute limits (`mils.engine.ratelimit`), a
request first waits its turn for the rate (one waiter at a time sleeps, in FIFO order; a
pause holds them too), and only then for an in-flight slot: waiting for the rate holds no
slot, and its wait is not counted in the latency the adaptive limit is tuned by.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from mils.engine.config import RateLimits
from mils.engine.errors import EndpointUnavailable
from mils.engine.protocols import ProviderLimits
from mils.engine.ratelimit import EndpointRate, RateStatistics, Reservation

__all__ = ["AdaptiveLimit", "EndpointLimiter", "LimiterStatistics"]

DEFAULT_INITIAL_LIMIT = 64
"""Where the adaptive limit starts. Each growth to a server's capacity costs a round trip at
part of it (from 16, 4% of a 5-second run on a 64-slot server, against a loop told the
capacity); a start above the capacity costs the server nothing (it queues the excess) and
is corrected after the first window."""
DEFAULT_MAX_LIMIT = 512
ERROR_SHARE = 0.3
"""Share of recent requests failing with server errors that counts as overload."""
ERROR_MEMORY = 50
"""Requests the moving average of server errors spans, about."""
_MIN_WINDOW = 4
"""Completions averaged before the limit may change, at the least."""


@dataclass(slots=True)
class AdaptiveLimit:
    """The Vegas-style limit arithmetic, separate from the asyncio plumbing (pure)."""

    limit: float = DEFAULT_INITIAL_LIMIT
    max_limit: int = DEFAULT_MAX_LIMIT
    rtt: float | None = None
    """Mean latency of the last complete window (seconds)."""
    rtt_noload: float | None = None
    """Lowest window latency seen: the latency without queueing. Re-learnt when the
    limit has fallen to 1 (the server became slower for good, not busier)."""
    slow_start: bool = True
    error_share: float = 0.0
    """Moving average of the share of requests failing with server errors."""
    _sum: float = 0.0
    _count: int = 0
    _in_flight_sum: int = 0
    _saturated: bool = False
    _first: list[float] = field(default_factory=list)
    """The latencies of the window that learns `rtt_noload` first."""

    def on_success(self, latency: float, in_flight: int) -> None:
        """Record one completion; `in_flight` counts it and its peers still running."""
        self.error_share *= 1 - 1 / ERROR_MEMORY
        self._sum += latency
        self._count += 1
        self._in_flight_sum += in_flight
        if self.rtt_noload is None:
            self._first.append(latency)
        # Only a limit that was actually used says anything about raising it.
        self._saturated |= in_flight >= self.limit - 1
        if self._count < max(self.limit, _MIN_WINDOW):
            return
        self.rtt = rtt = self._sum / self._count
        saturated, in_flight_mean = self._saturated, self._in_flight_sum / self._count
        if self.rtt_noload is None:
            self.rtt_noload = _unqueued_mean(self._first)
        elif rtt < self.rtt_noload or self.limit <= 1:
            self.rtt_noload = rtt
        self._reset_window()
        queued = self.limit * (1 - self.rtt_noload / rtt)
        log_limit = math.log10(max(self.limit, 10))
        alpha, beta = 3 * log_limit, 6 * log_limit
        if queued > beta:
            if self.slow_start:  # drain the queue the last growth made, in one step
                self.slow_start = False
                self.limit = max(in_flight_mean * self.rtt_noload / rtt + alpha, 1.0)
            else:
                self.limit = max(self.limit - max(1.0, (queued - beta) / 2), 1.0)
        elif queued < alpha and saturated:
            step = 3 * self.limit if self.slow_start else max(1.0, math.sqrt(self.limit) / 2)
            self.limit = min(self.limit + step, self.max_limit)

    def on_error(self) -> bool:
        """Record a server error; return whether errors are now frequent enough to be
        overload (the caller then cuts, once per round)."""
        self.error_share += (1 - self.error_share) / ERROR_MEMORY
        return self.error_share > ERROR_SHARE

    def on_overload(self) -> None:
        self.limit = max(self.limit / 2, 1.0)
        self.slow_start = False
        self._reset_window()

    def _reset_window(self) -> None:
        self._sum, self._count, self._in_flight_sum, self._saturated = 0.0, 0, 0, False
        self._first.clear()


def _unqueued_mean(latencies: list[float]) -> float:
    """The mean latency of the requests answered within twice the fastest one: of a window
    sent at once to a server that queues part of it, the part it served at once."""
    fastest = min(latencies)
    unqueued = [x for x in latencies if x <= 2 * fastest]
    return sum(unqueued) / len(unqueued)


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    endpoint: str
    limit: int
    adaptive: bool
    in_flight: int
    waiting: int
    """Requests waiting to be sent: for the rate limits or for a slot."""
    completed: int
    overloads: int
    peak_in_flight: int
    latency_s: float | None
    """Smoothed latency of recent requests (adaptive limiters only)."""
    paused_until: float | None = None
    """While a rate limit pauses the endpoint: the wall-clock time (`time.time()`) it
    takes requests again; None when it is not paused."""
    rate_limited: int = 0
    """Requests answered with HTTP 429."""
    rate: RateStatistics | None = None
    """The requests- and tokens-per-minute limits in force; None when there are none."""


_OVERLOAD_KINDS = frozenset({"429", "timeout"})
"""Faults that are overload signals by themselves."""
_ERROR_KINDS = frozenset({"5xx", "unavailable"})
"""Faults that are overload signals when frequent (`AdaptiveLimit.on_error`)."""


class EndpointLimiter:
    """At most `limit` requests in flight to one endpoint; the rest wait their turn (FIFO).

    Args:
        endpoint: name for logs and statistics.
        limit: a fixed limit, or None to adapt it to the endpoint's latency.
        initial: starting limit when adaptive.
        max_limit: ceiling when adaptive.
        rate: the provider's requests- and tokens-per-minute limits (none by default;
            those the endpoint's replies state are learned either way).
    """

    def __init__(
        self,
        endpoint: str,
        limit: int | None,
        *,
        initial: int = DEFAULT_INITIAL_LIMIT,
        max_limit: int = DEFAULT_MAX_LIMIT,
        rate: RateLimits | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._rate = EndpointRate(rate or RateLimits())
        self._pacer = asyncio.Lock()
        """Held by the one request sleeping for the rate; the others queue on it (FIFO)."""
        self._pacing = 0
        """Requests waiting for the rate."""
        self._fixed = limit
        # Under a fixed limit, the adaptive one only measures latency (for routing), in
        # windows of at most that limit.
        self._adaptive = AdaptiveLimit(limit=float(limit or initial), max_limit=limit or max_limit)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._in_flight = self._completed = self._overloads = self._peak = 0
        self._rate_limited = 0
        self._last_cut = -math.inf
        """When the adaptive limit was last cut (monotonic)."""
        self._paused_until = -math.inf
        """Monotonic time the current pause ends."""
        self._resume: asyncio.TimerHandle | None = None

    @property
    def limit(self) -> int:
        return self._fixed if self._fixed is not None else int(self._adaptive.limit)

    @property
    def load(self) -> float:
        """Outstanding requests (in flight and waiting) per unit of limit: for routing."""
        return (self._in_flight + len(self._waiters) + self._pacing) / self.limit

    @property
    def expected_s(self) -> float | None:
        """Seconds a request sent now should take to be answered: the endpoint's latency,
        longer by the queue ahead of it (served `limit` at a time, one latency each); None
        until a latency has been measured. For routing."""
        rtt = self._adaptive.rtt
        if rtt is None:
            return None
        ahead = self._in_flight + len(self._waiters) + self._pacing + 1
        return rtt * max(1.0, ahead / self.limit)

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause; 0 when not paused."""
        return max(0.0, self._paused_until - time.monotonic())

    def pause(self, seconds: float) -> bool:
        """Send no request for `seconds` from now (a pause only ever grows).

        Requests already in flight go on; new ones and those waiting for a slot wait.
        Returns whether the pause grew.
        """
        until = time.monotonic() + seconds
        if until <= self._paused_until:
            return False
        self._paused_until = until
        if self._resume is not None:
            self._resume.cancel()
        # The loop's clock is time.monotonic; the one live timer ends the pause it belongs to.
        self._resume = asyncio.get_running_loop().call_at(until, self._end_pause)
        return True

    def _end_pause(self) -> None:
        self._paused_until, self._resume = -math.inf, None
        self._wake()

    @asynccontextmanager
    async def slot(self, prompt_tokens: int = 0) -> AsyncIterator[Reservation]:
        """Wait for the rate limits, then hold one request slot for the block; its latency
        and outcome tune the limit.

        Yields what the request drew from the rate limits (`prompt_tokens` and its expected
        completion), for `settle` once the reply is in; a request not settled in the block
        is settled at 0 tokens (it failed).
        """
        reservation = await self._pace(prompt_tokens)
        try:
            await self._acquire()
            if not reservation.paced and self._rate.limited:
                reservation = await self._pace_in_slot(prompt_tokens)
        except BaseException:
            self._rate.settle(reservation, time.monotonic())
            raise
        started = time.monotonic()
        try:
            yield reservation
        except EndpointUnavailable as exc:
            self._rate_limited += exc.kind == "429"
            overload = exc.kind in _OVERLOAD_KINDS
            if exc.kind in _ERROR_KINDS:
                overload = self._adaptive.on_error()
            if overload:
                self._overloads += 1
                if started >= self._last_cut:  # sent under the current limit
                    self._adaptive.on_overload()
                    self._last_cut = time.monotonic()
            raise
        else:
            self._adaptive.on_success(time.monotonic() - started, self._in_flight)
        finally:
            self._rate.settle(reservation, time.monotonic())  # no-op once settled
            self._in_flight -= 1
            self._completed += 1
            self._wake()

    def reshare(self, limit: int | None, rate: RateLimits | None, share: float = 1.0) -> None:
        """Take a new share of the endpoint: a fixed `limit` (an adaptive limit keeps
        adapting; None keeps the fixed one), the configured `rate` (None keeps it) and the
        `share` of the limits its replies state. On Ray, each actor takes 1/N, and the
        actors still running take over the share of one whose shard has ended."""
        if self._fixed is not None and limit is not None:
            self._fixed = self._adaptive.max_limit = limit
        self._rate.configure(rate, share, time.monotonic())
        self._wake()

    def settle(
        self,
        reservation: Reservation,
        *,
        tokens: int,
        completion: int | None,
        said: ProviderLimits | None = None,
    ) -> None:
        """Settle a served request at the `tokens` it used (`completion` of them for its
        reply), and adopt the rate limits its reply stated (`said`)."""
        now = time.monotonic()
        if said is not None:
            self._rate.learn(said, now)
        self._rate.settle(reservation, now, tokens=tokens, completion=completion)

    async def _pace_in_slot(self, prompt_tokens: int) -> Reservation:
        """Pace a request that queued for its slot before any limit was known (the limits
        came with a reply meanwhile): it waits for them in its slot, once, rather than go
        out with the burst of its queue."""
        try:
            return await self._pace(prompt_tokens)
        except BaseException:
            self._in_flight -= 1
            self._wake()
            raise

    async def _pace(self, prompt_tokens: int) -> Reservation:
        """Wait until the rate limits (and any pause) let the next request go; draw it."""
        rate = self._rate
        if not rate.limited:
            return Reservation(paced=False)
        self._pacing += 1
        try:
            async with self._pacer:
                while (wait := max(rate.delay(time.monotonic()), self.paused_for)) > 0:
                    await asyncio.sleep(wait)
                return rate.take(prompt_tokens, time.monotonic())
        finally:
            self._pacing -= 1

    def _paused(self) -> bool:
        return time.monotonic() < self._paused_until

    async def _acquire(self) -> None:
        if self._in_flight < self.limit and not self._waiters and not self._paused():
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._in_flight -= 1  # woken, then cancelled: hand the slot on
                self._wake()
            elif waiter in self._waiters:  # `_wake` may have popped it after it was cancelled
                self._waiters.remove(waiter)
            raise

    def _take(self) -> None:
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)

    def _wake(self) -> None:
        if self._paused():
            return  # the pause's own timer wakes the queue when it ends
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    def statistics(self) -> LimiterStatistics:
        left = self.paused_for
        return LimiterStatistics(
            endpoint=self.endpoint,
            limit=self.limit,
            adaptive=self._fixed is None,
            in_flight=self._in_flight,
            waiting=len(self._waiters) + self._pacing,
            completed=self._completed,
            overloads=self._overloads,
            peak_in_flight=self._peak,
            latency_s=self._adaptive.rtt if self._fixed is None else None,
            paused_until=time.time() + left if left > 0 else None,
            rate_limited=self._rate_limited,
            rate=self._rate.statistics() if self._rate.limited else None,
        )
