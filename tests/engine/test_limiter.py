"""Per-endpoint limits: fixed caps hold, the adaptive limit finds a server's capacity."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
import types

import pytest

from mils.engine import limiter as limiter_module
from mils.engine.config import RateLimits
from mils.engine.errors import EndpointUnavailable
from mils.engine.limiter import DEFAULT_INITIAL_LIMIT, AdaptiveLimit, EndpointLimiter


def server_latency(in_flight: float, capacity: int, base: float = 1.0) -> float:
    """A continuous-batching server: flat up to capacity, then queueing."""
    return base * max(1.0, in_flight / capacity)


@pytest.mark.parametrize("capacity", [4, 16, 64])
def test_adaptive_limit_settles_just_above_capacity(capacity: int) -> None:
    """From 4, the limit climbs to the server's capacity and stops with a short queue."""
    limit = AdaptiveLimit(limit=4)
    for _ in range(3000):
        in_flight = int(limit.limit)
        limit.on_success(server_latency(in_flight, capacity), in_flight)
    assert capacity <= limit.limit <= capacity * 1.25 + 12


def test_adaptive_limit_tolerates_reply_length_noise() -> None:
    """Replies of varying length (+-30% latency) do not hold the limit below capacity."""
    limit, rng = AdaptiveLimit(limit=4), random.Random(0)
    for _ in range(4000):
        in_flight = int(limit.limit)
        noise = 1.0 + rng.uniform(-0.3, 0.3)
        limit.on_success(server_latency(in_flight, 32) * noise, in_flight)
    assert limit.limit >= 32


def fifo_server(
    limit: AdaptiveLimit, capacity: int, completions: int, rng: random.Random | None = None
) -> list[float]:
    """Drive `limit` against a server of `capacity` slots that queues the rest (FIFO), with
    every request answered replaced at once (a caller with work to spare), service times 1
    (+-30% with `rng`). Returns the limit after each completion."""
    clock, waiting, busy = 0.0, 0, []  # requests queued; (done at, sent at) of those served
    sent: list[float] = []  # send times of the queued requests, oldest first
    limits = []
    for _ in range(completions):
        while len(busy) + waiting < int(limit.limit):
            sent.append(clock)
            waiting += 1
        while waiting and len(busy) < capacity:
            waiting -= 1
            service = 1.0 + (rng.uniform(-0.3, 0.3) if rng else 0.0)
            heapq.heappush(busy, (clock + service, sent.pop(0)))
        clock, started = heapq.heappop(busy)
        limit.on_success(clock - started, len(busy) + waiting + 1)
        limits.append(limit.limit)
    return limits


@pytest.mark.parametrize("capacity", [1, 4, 16, 64, 256])
def test_a_fifo_server_of_any_capacity_is_saturated_with_a_short_queue(capacity: int) -> None:
    """From the default start, above or below the server's capacity, the limit ends at the
    capacity or just above it, and the drop after a start above it is one step."""
    limit = AdaptiveLimit()
    limits = fifo_server(limit, capacity, 60 * capacity + 2000, random.Random(capacity))
    assert capacity <= limit.limit <= capacity * 1.25 + 12
    if capacity < DEFAULT_INITIAL_LIMIT:
        first_move = next(x for x in limits if x != DEFAULT_INITIAL_LIMIT)
        assert first_move <= capacity * 2 + 12


def test_slow_start_grows_fourfold_per_window() -> None:
    """Below the server's capacity, each window of `limit` completions quadruples it."""
    limit = AdaptiveLimit(limit=4)
    limits = fifo_server(limit, 1000, 4 + 16 + 64)
    assert (limits[3], limits[19], limits[83]) == (16, 64, 256)


def test_overload_halves_and_unused_limit_does_not_grow() -> None:
    """An overload halves the limit; a limit that is not used is not raised."""
    limit = AdaptiveLimit(limit=40)
    limit.on_overload()
    assert limit.limit == 20
    for _ in range(100):
        limit.on_success(1.0, in_flight=2)
    assert limit.limit == 20


async def test_fixed_limit_caps_requests_in_flight() -> None:
    """With limit 3, never more than 3 requests run at once, and all of them run."""
    limiter = EndpointLimiter("e", 3)
    running, peak, done = 0, 0, 0

    async def request() -> None:
        nonlocal running, peak, done
        async with limiter.slot():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1
            done += 1

    await asyncio.gather(*(request() for _ in range(20)))
    assert peak == 3 and done == 20
    assert limiter.statistics().completed == 20


async def test_a_larger_share_lets_waiting_requests_go_at_once() -> None:
    """A fixed limit of 1 with three requests waiting behind the first: resharing it to 3
    sends two more at once; the rate configured comes into force; an adaptive limiter
    keeps adapting."""
    limiter = EndpointLimiter("e", 1)
    release = asyncio.Event()
    running = 0

    async def request() -> None:
        nonlocal running
        async with limiter.slot():
            running += 1
            await release.wait()

    tasks = [asyncio.create_task(request()) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert running == 1 and limiter.statistics().waiting == 3
    limiter.reshare(3, None)
    await asyncio.sleep(0.01)
    assert running == 3 and limiter.limit == 3
    assert limiter.statistics().rate is None
    limiter.reshare(None, RateLimits(rpm=600))
    rate = limiter.statistics().rate
    assert rate is not None and rate.rpm == 600 and limiter.limit == 3
    release.set()
    await asyncio.gather(*tasks)
    adaptive = EndpointLimiter("a", None, initial=8)
    adaptive.reshare(3, None)
    assert adaptive.limit == 8 and adaptive.statistics().adaptive


async def test_overload_error_shrinks_an_adaptive_limiter() -> None:
    """A 429 inside a slot halves the adaptive limit and is re-raised."""
    limiter = EndpointLimiter("e", None, initial=8)
    with pytest.raises(EndpointUnavailable):
        async with limiter.slot():
            raise EndpointUnavailable("busy", endpoint="e", kind="429")
    stats = limiter.statistics()
    assert stats.limit == 4 and stats.overloads == 1 and stats.in_flight == 0


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    """A request cancelled while waiting does not leak a slot."""
    limiter = EndpointLimiter("e", 1)
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            await release.wait()

    async def waiter() -> None:
        async with limiter.slot():
            pass

    hold = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    wait = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)
    wait.cancel()
    release.set()
    await hold
    with pytest.raises(asyncio.CancelledError):
        await wait
    async with limiter.slot():
        assert limiter.statistics().in_flight == 1


async def test_a_waiter_cancelled_then_passed_over_leaves_the_limiter_sound() -> None:
    """A waiter cancelled while a slot is released in the same tick is passed over by the
    wake-up and cleans up without error; the next waiter gets the slot."""
    limiter = EndpointLimiter("e", 1)

    async def use() -> None:
        async with limiter.slot():
            await asyncio.sleep(0)

    held = limiter.slot()
    await held.__aenter__()
    waiters = [asyncio.create_task(use()) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait for the slot
    waiters[0].cancel()  # its future is cancelled now, its clean-up runs later
    await held.__aexit__(None, None, None)  # the release wakes past the cancelled waiter
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [None, None]
    stats = limiter.statistics()
    assert (stats.in_flight, stats.waiting, stats.completed) == (0, 0, 3)


async def test_a_pause_holds_new_and_queued_requests_until_it_ends() -> None:
    """While paused, no request gets a slot, whatever the limit; all go when it ends, and
    the statistics say until when (wall clock)."""
    limiter = EndpointLimiter("e", 4)
    loop = asyncio.get_running_loop()
    assert limiter.pause(0.2) and not limiter.pause(0.1)  # a pause only grows
    paused = limiter.statistics().paused_until
    assert paused is not None and 0.1 < paused - time.time() <= 0.2
    started = loop.time()
    entered: list[float] = []

    async def request() -> None:
        async with limiter.slot():
            entered.append(loop.time() - started)

    await asyncio.gather(*(request() for _ in range(6)))
    assert len(entered) == 6 and min(entered) >= 0.19
    assert limiter.statistics().paused_until is None and limiter.paused_for == 0


async def test_a_burst_of_overloads_cuts_the_limit_once() -> None:
    """Eight requests in flight all answered 429 halve the adaptive limit once, not eight
    times: they were sent under the old limit; one sent after the cut halves it again."""
    limiter = EndpointLimiter("e", None, initial=16)
    release = asyncio.Event()

    async def overloaded() -> None:
        with contextlib.suppress(EndpointUnavailable):
            async with limiter.slot():
                await release.wait()
                raise EndpointUnavailable("busy", endpoint="e", kind="429")

    burst = [asyncio.ensure_future(overloaded()) for _ in range(8)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*burst)
    stats = limiter.statistics()
    assert stats.limit == 8 and stats.overloads == 8 and stats.rate_limited == 8
    await overloaded()
    assert limiter.statistics().limit == 4


async def test_waiting_for_the_rate_holds_no_slot() -> None:
    """Under 60 requests a minute, a second request waits for the rate without taking an
    in-flight slot (the statistics count it as waiting); cancelled, it leaves nothing behind."""
    limiter = EndpointLimiter("e", 4, rate=RateLimits(rpm=60))
    first = limiter.slot()
    await first.__aenter__()
    second = asyncio.create_task(limiter.slot().__aenter__())
    await asyncio.sleep(0.01)
    stats = limiter.statistics()
    assert (stats.in_flight, stats.waiting) == (1, 1)
    assert stats.rate is not None and stats.rate.rpm == 60
    second.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second
    await first.__aexit__(None, None, None)
    assert limiter.statistics().waiting == 0 and limiter.load == 0


def test_sporadic_server_errors_are_not_overload_frequent_ones_are() -> None:
    """One request in ten failing with a 500 (a flaky server, not a busy one) never reads as
    overload; half of them failing does, within a few dozen requests."""
    limit, rng = AdaptiveLimit(limit=32), random.Random(0)
    flaky = [rng.random() < 0.1 for _ in range(2000)]
    for failed in flaky:
        if failed:
            assert not limit.on_error()
        else:
            limit.on_success(1.0, in_flight=32)
    overloaded = [limit.on_error() if i % 2 else limit.on_success(1.0, 32) for i in range(80)]
    assert any(overloaded)


async def test_a_flaky_server_keeps_its_limit_an_overloaded_one_loses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the limiter: 10% of requests answered 500 leave the adaptive limit where it
    was; a run of 503s halves it (once per round)."""
    # The limiter's clock ticks 1 ms per reading: every request takes the same time, so the
    # latency signal stays flat whatever the machine's load (only the errors speak).
    ticks = itertools.count()
    clock = types.SimpleNamespace(monotonic=lambda: next(ticks) / 1000, time=time.time)
    monkeypatch.setattr(limiter_module, "time", clock)
    limiter = EndpointLimiter("e", None, initial=16)

    async def request(fault: str | None) -> None:
        with contextlib.suppress(EndpointUnavailable):
            async with limiter.slot():
                if fault is not None:
                    raise EndpointUnavailable("server error", endpoint="e", kind=fault)

    for i in range(200):
        await request("5xx" if i % 10 == 9 else None)
    stats = limiter.statistics()
    assert stats.limit >= 16 and stats.overloads == 0
    for _ in range(20):
        await request("5xx")
    assert limiter.statistics().limit < stats.limit
