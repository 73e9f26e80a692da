"""Per-request observations (`mils.engine.observe`): one per attempt, with its outcome, from
the generator router and the text batcher; an observer's own failure never fails a request."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeGenerator, FakeScorer
from structlog.testing import capture_logs

from mils.engine.config import ConcurrencyConfig, RetryConfig
from mils.engine.errors import EndpointUnavailable, InvalidResponse
from mils.engine.observe import RequestObserved, observed
from mils.engine.protocols import ChatMessage
from mils.engine.retry import Retrier
from mils.engine.router import GeneratorRouter
from mils.engine.scoring import TextEmbeddings

MESSAGES: list[ChatMessage] = [{"role": "user", "content": "hi"}]
FAST_RETRY = RetryConfig(attempts=3, initial_s=0.0, max_s=0.0, jitter_s=0.0)


async def _fails(exc: Exception) -> None:
    await asyncio.sleep(0)
    raise exc


async def test_each_outcome_is_reported_once() -> None:
    """Success is "ok", a transient fault its kind, any other failure "error"."""
    seen: list[RequestObserved] = []
    assert await observed(seen.append, "generator", "e", asyncio.sleep(0, result=7)) == 7
    with pytest.raises(EndpointUnavailable):
        fault = EndpointUnavailable("x", endpoint="e", kind="429")
        await observed(seen.append, "generator", "e", _fails(fault))
    with pytest.raises(InvalidResponse):
        await observed(seen.append, "scorer", "s", _fails(InvalidResponse("bad", endpoint="s")))
    assert [(o.role, o.endpoint, o.outcome) for o in seen] == [
        ("generator", "e", "ok"),
        ("generator", "e", "429"),
        ("scorer", "s", "error"),
    ]
    assert all(o.seconds >= 0 for o in seen)


async def test_a_cancelled_attempt_is_not_reported() -> None:
    """Cancellation is no outcome of the endpoint's: nothing is observed."""
    seen: list[RequestObserved] = []
    task = asyncio.create_task(observed(seen.append, "generator", "e", asyncio.sleep(10)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == []


async def test_a_failing_observer_is_logged_not_raised() -> None:
    """The request's own result comes back whatever the observer does."""

    def broken(observation: RequestObserved) -> None:
        raise RuntimeError("metrics down")

    with capture_logs() as logs:
        assert await observed(broken, "scorer", "s", asyncio.sleep(0, result="ok")) == "ok"
    assert [entry["event"] for entry in logs] == ["request_observer_failed"]


async def test_the_router_reports_every_attempt_with_its_endpoint() -> None:
    """A retried generator call is two observations: the fault, then the success."""
    seen: list[RequestObserved] = []
    generator = FakeGenerator()
    calls = 0
    complete = generator.complete

    async def flaky(messages: list[ChatMessage]):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise EndpointUnavailable("busy", endpoint=generator.endpoint, kind="5xx")
        return await complete(messages)

    generator.complete = flaky  # type: ignore[method-assign]
    router = GeneratorRouter([generator], limit=2, on_request=seen.append)
    await Retrier(FAST_RETRY).call(router.complete, MESSAGES)
    assert [(o.role, o.endpoint, o.outcome) for o in seen] == [
        ("generator", "fake://generator", "5xx"),
        ("generator", "fake://generator", "ok"),
    ]


async def test_text_batches_are_observed_and_cache_misses_counted() -> None:
    """One observation per batch attempt (a failed one too); a text is a miss once, then
    a hit."""
    seen: list[RequestObserved] = []
    scorer = FakeScorer(max_batch_size=8)
    scorer.fail_next = 1
    config = ConcurrencyConfig(score_wait_ms=1.0)
    async with TextEmbeddings(scorer, config, Retrier(FAST_RETRY), on_request=seen.append) as emb:
        await emb.embed(["a", "b", "c"])
        await emb.embed(["a", "d"])
        stats = emb.statistics()
    assert [(o.role, o.endpoint, o.outcome) for o in seen] == [
        ("scorer", "fake/text", "unavailable"),
        ("scorer", "fake/text", "ok"),
        ("scorer", "fake/text", "ok"),
    ]
    assert (stats.cache_misses, stats.cache_hits, stats.texts_embedded) == (4, 1, 4)
