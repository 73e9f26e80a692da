"""In-process fakes of the engine's Protocols, for unit tests of pure orchestration."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from mils.engine.config import Budget, ConcurrencyConfig, LoopConfig, RetryConfig
from mils.engine.errors import EndpointUnavailable, InputError
from mils.engine.objectives import EmbeddingObjective
from mils.engine.protocols import ChatMessage, Reply
from mils.engine.retry import Retrier
from mils.engine.scheduler import Route, Scheduler
from mils.engine.store import RunStore
from mils.tasks import get_task

DIM = 16
IMAGE = "image-caption"
"""The task of `fake_scheduler`'s one route."""


def vector(text: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return rng.standard_normal(DIM).astype(np.float32)


class FakeScorer:
    """Deterministic embeddings; records every batch it was sent."""

    name = "fake/text"

    def __init__(self, max_batch_size: int = 8) -> None:
        self.max_batch_size = max_batch_size
        self.batches: list[list[str]] = []
        self.fail_next = 0

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        await asyncio.sleep(0)
        if self.fail_next:
            self.fail_next -= 1
            raise EndpointUnavailable("scorer down", endpoint=self.name, kind="unavailable")
        self.batches.append(list(texts))
        # A text containing "NaN" embeds to NaN: a scorer glitch on one item.
        return np.stack([vector(t) * (np.nan if "NaN" in t else 1) for t in texts])

    async def embed_target(self, data: bytes) -> np.ndarray:
        return vector(data.decode())

    async def aclose(self) -> None:
        pass


class FakeGenerator:
    """Replies with numbered lines made by `reply(n_call)`; in the "completion" prompting
    mode `reply(n_call)` is the continuation of the prompt."""

    endpoint = "fake://generator"

    def __init__(self, reply: Callable[[int], str] | None = None) -> None:
        self.calls = 0
        self.prompts: list[str] = []
        self.truncated = False
        """Mark every reply as cut off by the token limit."""
        self.prompt_mode = "chat"
        self._reply = reply or (lambda n: "\n".join(f"{i}. caption {n}-{i}" for i in range(1, 4)))

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        self.calls += 1
        self.prompts.append(messages[-1]["content"])
        await asyncio.sleep(0)
        return Reply(self._reply(self.calls), truncated=self.truncated)

    async def continue_text(self, prompt: str) -> Reply:
        self.calls += 1
        self.prompts.append(prompt)
        await asyncio.sleep(0)
        return Reply(self._reply(self.calls), truncated=self.truncated)

    async def aclose(self) -> None:
        pass


class FakeReader:
    """The source string is the target; sources starting with 'bad' are unusable."""

    async def read(self, source: str) -> bytes:
        if source.startswith("bad"):
            raise InputError(f"{source}: not an image", source=source)
        return source.encode()


NO_WAIT = RetryConfig(attempts=2, initial_s=0.0, max_s=0.0, jitter_s=0.0)


def fake_scheduler(
    store: RunStore,
    generator: FakeGenerator,
    *,
    steps: int = 3,
    in_flight: int = 4,
    budget: Budget | None = None,
    loop: LoopConfig | None = None,
) -> Scheduler:
    """A Scheduler for image-caption over the fakes (keep 5, requested 3, no retry wait)."""
    concurrency = ConcurrencyConfig(
        samples_in_flight=in_flight, score_wait_ms=1.0, generator_cooldown_s=0.01
    )
    retrier = Retrier(NO_WAIT)
    route = Route(
        task=get_task(IMAGE),
        loop=loop or LoopConfig(steps=steps, keep=5, requested=3),
        objective=EmbeddingObjective(
            FakeScorer(max_batch_size=16), target="image", concurrency=concurrency, retrier=retrier
        ),
        readers={"image": FakeReader()},
    )
    return Scheduler(
        routes={IMAGE: route},
        concurrency=concurrency,
        retrier=retrier,
        generator=generator,
        store=store,
        budget=budget,
    )
