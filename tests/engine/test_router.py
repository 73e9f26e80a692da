"""Routing over several generator endpoints: least outstanding, cool-down, recovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

from mils.engine.errors import EndpointUnavailable
from mils.engine.protocols import ChatMessage, Reply
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
