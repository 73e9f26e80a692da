"""The refusal gate: a wrong setting stops the run, one bad request fails its sample alone."""

from __future__ import annotations

import asyncio

import pytest

from mils.engine.errors import ConfigError, RequestRefused
from mils.engine.refusals import RefusalGate


def refused(
    detail: str = "Invalid model name passed in model=gpt-5", endpoint: str = "a"
) -> RequestRefused:
    return RequestRefused(f"refused: {detail}", endpoint=endpoint, status=400, detail=detail)


async def test_three_alike_refusals_before_any_success_are_a_config_error() -> None:
    """The third identical refusal raises a ConfigError quoting the server; the two held
    before it get the same verdict."""
    gate = RefusalGate(threshold=3)
    first, second = gate.hold(refused()), gate.hold(refused())
    assert first is not None and second is not None and gate.held == 2
    with pytest.raises(ConfigError, match=r"HTTP 400: Invalid model name .* check `model`"):
        gate.hold(refused())
    assert isinstance(await first, ConfigError) and isinstance(await second, ConfigError)
    assert gate.held == 0
    with pytest.raises(ConfigError, match="each of the first 3 requests"):  # the same verdict
        gate.hold(refused())


async def test_a_success_releases_held_refusals_as_ordinary_failures() -> None:
    """Once the endpoint serves a request, held refusals fail alone, and later ones are not
    held at all."""
    gate = RefusalGate(threshold=3)
    held = gate.hold(refused())
    assert held is not None
    gate.served("a")
    assert await held is None
    assert gate.hold(refused()) is None and gate.hold(refused()) is None  # never a ConfigError


async def test_a_different_refusal_starts_the_streak_again() -> None:
    """Refusals that differ are not one wrong setting: the streak restarts, the earlier
    ones fail alone."""
    gate = RefusalGate(threshold=2)
    held = gate.hold(refused("prompt too long"))
    assert held is not None
    assert gate.hold(refused("content filter")) is not None
    assert await held is None
    with pytest.raises(ConfigError, match="content filter"):
        gate.hold(refused("content filter"))


async def test_endpoints_are_judged_apart() -> None:
    """A success on one endpoint says nothing about another's refusals."""
    gate = RefusalGate(threshold=2)
    assert gate.hold(refused(endpoint="bad")) is not None
    gate.served("good")
    with pytest.raises(ConfigError, match="generator bad refused"):
        gate.hold(refused(endpoint="bad"))


async def test_settle_fails_held_refusals_alone() -> None:
    """When nothing else can decide (a run smaller than the threshold), held refusals fail
    alone; a holder cancelled while waiting does not count as held."""
    gate = RefusalGate(threshold=3)
    kept, dropped = gate.hold(refused()), gate.hold(refused())
    assert kept is not None and dropped is not None
    dropped.cancel()
    assert gate.held == 1
    gate.settle()
    assert await kept is None and gate.held == 0
    await asyncio.sleep(0)
