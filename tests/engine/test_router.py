"""Routing over several generator endpoints: least outstanding, then expected answer time,
cool-down, recovery, and rate-limit pauses."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import pytest
from structlog.testing import capture_logs

from mils.engine.config import RateLimits, RetryConfig
from mils.engine.errors import EndpointUnavailable, RateLimitExceeded
from mils.engine.protocols import ChatMessage, ProviderLimits, Reply
from mils.engine.retry import Retrier
from mils.engine.router import GeneratorRouter

MESSAGES: list[ChatMessage] = [{"role": "user", "content": "hi"}]


class Endpoint:
    prompt_mode = "chat"

    def __init__(self, name: str, delay: float = 0.0, failing: bool = False) -> None:
        self.endpoint = name
        self.delay = delay
        self.failing = failing
        self.calls = 0

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.failing:
            raise EndpointUnavailable("down", endpoint=self.endpoint, kind="connect")
        return Reply(self.endpoint)

    async def aclose(self) -> None:
        pass


async def test_requests_spread_by_least_outstanding() -> None:
    """Two equal endpoints share concurrent requests evenly."""
    a, b = Endpoint("a", 0.005), Endpoint("b", 0.005)
    router = GeneratorRouter([a, b], limit=4)
    await asyncio.gather(*(router.complete(MESSAGES) for _ in range(40)))
    assert a.calls == b.calls == 20


async def test_slow_endpoint_gets_less() -> None:
    """An endpoint that answers slower holds its requests longer and is chosen less."""
    fast, slow = Endpoint("fast", 0.001), Endpoint("slow", 0.02)
    router = GeneratorRouter([fast, slow], limit=2)

    async def worker() -> None:
        for _ in range(10):
            await router.complete(MESSAGES)

    await asyncio.gather(*(worker() for _ in range(4)))
    assert fast.calls > 2 * slow.calls


async def test_once_latencies_are_known_a_request_goes_where_it_is_answered_first() -> None:
    """A fast endpoint with free slots takes every request, however idle a slower one is:
    its expected answer (its latency, queue included) comes first. Until both latencies are
    measured, requests spread by outstanding work, so the slow one is measured too."""
    fast, slow = Endpoint("fast", 0.002), Endpoint("slow", 0.03)
    router = GeneratorRouter([fast, slow], limit=8)

    async def worker(requests: int) -> None:
        for _ in range(requests):
            await router.complete(MESSAGES)

    await asyncio.gather(*(router.complete(MESSAGES) for _ in range(64)))  # both measured
    assert slow.calls >= 16
    fast.calls = slow.calls = 0
    await asyncio.gather(*(worker(20) for _ in range(4)))  # 4 in flight: under fast's 8
    assert (fast.calls, slow.calls) == (80, 0)


class Clock:
    """Stands in for `time` in engine.router: the test moves it, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_failing_endpoint_is_cooled_down_then_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After 3 straight failures an endpoint gets nothing until its cool-down ends."""
    clock = Clock()
    monkeypatch.setattr("mils.engine.router.time", clock)
    bad, good = Endpoint("bad", failing=True), Endpoint("good")
    router = GeneratorRouter([bad, good], limit=1, cooldown_s=5)
    while bad.calls < 3:
        await _attempt(router)
    calls = bad.calls
    for _ in range(10):
        assert (await router.complete(MESSAGES)).text == "good"
    assert bad.calls == calls
    clock.now += 5.1
    bad.failing = False
    replies = {(await router.complete(MESSAGES)).text for _ in range(4)}
    assert replies == {"good", "bad"}


async def _attempt(router: GeneratorRouter) -> None:
    with contextlib.suppress(EndpointUnavailable):
        await router.complete(MESSAGES)


async def test_last_healthy_endpoint_is_never_cooled_down() -> None:
    """With nowhere else to send requests, a failing endpoint keeps getting them."""
    only = Endpoint("only", failing=True)
    router = GeneratorRouter([only], limit=1, cooldown_s=60)
    for _ in range(5):
        with pytest.raises(EndpointUnavailable):
            await router.complete(MESSAGES)
    only.failing = False
    assert (await router.complete(MESSAGES)).text == "only"  # no 60 s wait


class RateLimited(Endpoint):
    """Answers 429 to every request that arrives within `window_s` of its first one."""

    def __init__(
        self, name: str, window_s: float, retry_after: float | None, delay: float = 0.01
    ) -> None:
        super().__init__(name, delay)
        self.window_s, self.retry_after = window_s, retry_after
        self.started: float | None = None
        self.limited = 0

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        self.calls += 1
        now = asyncio.get_running_loop().time()
        self.started = now if self.started is None else self.started
        await asyncio.sleep(self.delay)
        if now - self.started < self.window_s:
            self.limited += 1
            left = self.window_s - (now - self.started)
            raise EndpointUnavailable(
                "rate limited",
                endpoint=self.endpoint,
                kind="429",
                retry_after=left if self.retry_after is None else self.retry_after,
            )
        return Reply(self.endpoint)


class Unbounded(Endpoint):
    """Always 429, asking for `retry_after` (None: no wait given)."""

    def __init__(self, name: str, retry_after: float | None) -> None:
        super().__init__(name)
        self.retry_after = retry_after

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        self.calls += 1
        await asyncio.sleep(0)
        raise EndpointUnavailable(
            "rate limited", endpoint=self.endpoint, kind="429", retry_after=self.retry_after
        )


async def test_a_429_pauses_the_endpoint_for_every_caller() -> None:
    """40 calls meet a 0.3 s rate-limit window: only the first wave (the limit, 4) reaches
    the server during it, the rest wait the one pause out, and every call is answered."""
    server = RateLimited("limited", window_s=0.3, retry_after=None)
    router = GeneratorRouter([server], limit=4)
    started = asyncio.get_running_loop().time()
    replies = await asyncio.gather(*(router.complete(MESSAGES) for _ in range(40)))
    assert {r.text for r in replies} == {"limited"}
    assert server.limited <= 4
    assert asyncio.get_running_loop().time() - started >= 0.3
    stats = router.statistics()[0]
    assert stats.rate_limited == server.limited and stats.paused_until is None


async def test_429s_without_a_wait_back_off_once_per_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no wait given, the pause backs off from RATE_LIMIT_BACKOFF_S; the 429s of the
    requests already in flight confirm the pause instead of doubling it again each."""
    monkeypatch.setattr("mils.engine.router.RATE_LIMIT_BACKOFF_S", 0.1)
    server = Unbounded("limited", retry_after=None)
    router = GeneratorRouter([server], limit=8, max_rate_limit_wait_s=0.35)
    with capture_logs() as logs:
        results = await asyncio.gather(
            *(router.complete(MESSAGES) for _ in range(8)), return_exceptions=True
        )
    assert all(isinstance(r, RateLimitExceeded) for r in results)
    pauses = [e["wait_s"] for e in logs if e["event"] == "endpoint_paused"]
    assert pauses == [0.1, 0.2]  # 0.1 + 0.2 + 0.4 would pass 0.35
    assert server.calls <= 3 * 8


async def test_a_rate_limit_spends_no_retry_attempt() -> None:
    """Behind the one retry loop with a single attempt, a rate-limited call still succeeds:
    waiting out a 429 is not a retry."""
    server = RateLimited("limited", window_s=0.1, retry_after=0.1)
    router = GeneratorRouter([server], limit=2)
    retrier = Retrier(RetryConfig(attempts=1))
    reply = await retrier.call(router.complete, MESSAGES)
    assert reply.text == "limited" and server.limited == 1
    assert retrier.statistics().retries == 0


async def test_a_rate_limit_past_the_bound_fails_with_the_rate_limit_hint() -> None:
    """An endpoint that keeps answering 429 fails the calls once the pauses would pass
    `max_rate_limit_wait_s`; the message names the bound and what to change."""
    server = Unbounded("limited", retry_after=0.1)
    router = GeneratorRouter([server], limit=1, max_rate_limit_wait_s=0.35)
    started = asyncio.get_running_loop().time()
    with pytest.raises(RateLimitExceeded) as caught:
        await router.complete(MESSAGES)
    assert 0.25 <= asyncio.get_running_loop().time() - started < 1.0
    assert server.calls == 4  # sent at 0, 0.1, 0.2, 0.3; a fourth pause would pass 0.35 s
    message = str(caught.value)
    assert "max_rate_limit_wait_s" in message and "`generator_in_flight`" in message
    assert "up and reachable" not in message


async def test_a_wait_longer_than_the_bound_fails_at_once() -> None:
    """A 429 asking for an hour (a spent quota) fails the call at once, not after an hour."""
    server = Unbounded("quota", retry_after=3600)
    router = GeneratorRouter([server], limit=1, max_rate_limit_wait_s=600)
    with pytest.raises(RateLimitExceeded, match="3600 s more"):
        await asyncio.wait_for(router.complete(MESSAGES), 2)
    assert server.calls == 1


async def test_requests_go_to_endpoints_that_are_not_paused() -> None:
    """While one endpoint is paused by a rate limit, the others take its work."""
    limited, free = Unbounded("limited", retry_after=30), Endpoint("free", 0.001)
    router = GeneratorRouter([limited, free], limit=2)
    replies = [await router.complete(MESSAGES) for _ in range(10)]
    assert {r.text for r in replies} == {"free"}
    assert limited.calls == 1
    paused = router.statistics()[0].paused_until
    assert paused is not None and 25 < paused - time.time() <= 30


async def test_a_pause_met_elsewhere_holds_requests_and_echoes_only_confirm_it() -> None:
    """`pause` (a 429 another Ray worker met) holds this router's requests to the endpoint
    until it ends, sends them to another endpoint meanwhile, and a 429 of a request sent
    before it is an echo: it starts no pause of its own."""
    slow = Endpoint("a", 0.2)
    router = GeneratorRouter([slow], limit=2)
    before = asyncio.create_task(router.complete(MESSAGES))  # in flight when the pause comes
    await asyncio.sleep(0.05)
    started = time.monotonic()
    router.pause("a", 0.3)
    router.pause("other", 60)  # an endpoint it does not have: nothing
    assert (await router.complete(MESSAGES)).text == "a"
    assert time.monotonic() - started >= 0.3
    assert (await before).text == "a"
    assert router.statistics()[0].paused_until is None
    free = Endpoint("free", 0.001)
    both = GeneratorRouter([Unbounded("limited", retry_after=30), free], limit=2)
    both.pause("limited", 30)
    replies = [await both.complete(MESSAGES) for _ in range(5)]
    assert {r.text for r in replies} == {"free"}


async def test_an_endpoint_past_its_rate_limit_bound_is_routed_around() -> None:
    """An endpoint asking for an hour is past the bound, but with another endpoint there the
    calls go there instead of failing, and the limited one is soon cooled down."""
    quota, free = Unbounded("quota", retry_after=3600), Endpoint("free", 0.001)
    router = GeneratorRouter([quota, free], limit=2, max_rate_limit_wait_s=600)
    replies = [await asyncio.wait_for(router.complete(MESSAGES), 2) for _ in range(20)]
    assert {r.text for r in replies} == {"free"}
    assert quota.calls <= 3


class Stating(Endpoint):
    """Replies with 7 prompt and 3 completion tokens, stating a limit of 120 requests a
    minute, and declares an option of 600 (`RateLimited`)."""

    rate_limits = RateLimits(rpm=600, tpm=60_000, max_tokens=50)

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        self.calls += 1
        await asyncio.sleep(0)
        return Reply("ok", prompt_tokens=7, completion_tokens=3, provider_limits=STATED)


STATED = ProviderLimits(requests=120)


async def test_a_generators_limits_apply_and_its_replies_lower_them() -> None:
    """The router paces an endpoint under its generator's `rate_limits`; a reply stating a
    lower requests limit puts that in force (learned); each reply settles its tokens."""
    endpoint = Stating("stating")
    router = GeneratorRouter([endpoint], limit=4)
    rate = router.statistics()[0].rate
    assert rate is not None and (rate.rpm, rate.rpm_learned, rate.tpm) == (600, False, 60_000)
    await router.complete(MESSAGES)
    rate = router.statistics()[0].rate
    assert rate is not None and (rate.rpm, rate.rpm_learned) == (120, True)
    assert rate.expected_completion == 3  # the reply's completion tokens, not max_tokens
