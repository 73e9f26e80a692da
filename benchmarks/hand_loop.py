"""The honest peer: the MILS loop as a competent user writes it by hand, without the engine.

What it does (and what such a script typically leaves out):
- one coroutine per sample, all started at once; the chat call (`openai.AsyncOpenAI`,
  `chat.completions.create`) runs under one `asyncio.Semaphore` of `in_flight` permits,
  sized by the user: at the server's true capacity it is at its best; 8 and 128 stand for
  a guess when the capacity is unknown. With several endpoints it round-robins requests
  over them (no weighting by speed);
- the initial pool is embedded ONCE (tritonclient gRPC asyncio, batches of the text
  model's max_batch_size) and shared by every sample;
- per step and sample: the engine's own prompt (`build_messages`) and parser
  (`parse_candidates`), one embedding request for that sample's new candidates (no
  batching across samples, no cache), cosine against the sample's target, top `keep` kept.
  The bookkeeping is `SampleOptimizer`'s, so the work per step is the engine's and only the
  orchestration differs;
- a transient fault (connection error, timeout, 429, 5xx, a Triton error) is retried by a
  fixed-backoff loop of `TRIES` tries, as people write it: no Retry-After, no adaptive
  limit, no pause shared between samples. A sample whose call fails `TRIES` times fails;
  with `passes` > 1 the failed samples are run again from the start (a user rerunning the
  script for what is missing), and the work they had done counts as wasted.

It persists nothing (the engine commits every step to SQLite): that is part of its
advantage, and of what it gives up.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import openai
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from mils.adapters.openai_generator import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from mils.engine.config import LoopConfig
from mils.engine.optimizer import SampleOptimizer
from mils.engine.prompt import build_messages, parse_candidates
from mils.engine.protocols import ChatMessage, TaskSpec

__all__ = ["BACKOFF_S", "TRIES", "HandEndpoint", "HandResult", "run_hand_loop"]

TRIES = 3
"""Tries per call, the first included."""
BACKOFF_S = 1.0
"""Fixed wait between two tries."""
TRANSIENT: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
    InferenceServerException,
)
"""What the hand loop retries: what a user learns to catch from a loaded server."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HandEndpoint:
    """One OpenAI-compatible generator endpoint."""

    base_url: str
    model: str


@dataclass(slots=True)
class HandResult:
    """What a hand-loop run did."""

    samples: int
    steps: int
    """Sample-steps of the samples that finished (the useful work)."""
    failed: int
    """Samples still failed after the last pass."""
    wasted_steps: int
    """Steps committed by samples that later failed (redone by the next pass, if any)."""
    passes: int
    """Passes run (1 when nothing failed)."""
    generator_requests: int
    """Chat requests sent, retries included."""
    retries: int
    """Tries after a transient fault (chat and scorer)."""
    text_encodes: int
    """Texts sent to the scorer (the pool once, then every sample's new candidates)."""
    unique_texts: int
    wall_s: float
    best_scores: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """The first few reasons samples failed."""


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    retries: int = 0
    texts: int = 0
    steps: int = 0
    wasted: int = 0
    unique: set[str] = field(default_factory=set)


async def _retry(call: Callable[[], Awaitable[T]], counts: _Counts) -> T:
    """`call()`, tried up to `TRIES` times with `BACKOFF_S` between tries."""
    for attempt in range(1, TRIES + 1):
        try:
            return await call()
        except TRANSIENT:
            if attempt == TRIES:
                raise
            counts.retries += 1
            await asyncio.sleep(BACKOFF_S)
    raise AssertionError("unreachable")


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


class _HandLoop:
    def __init__(
        self,
        *,
        task: TaskSpec,
        loop: LoopConfig,
        clients: Sequence[tuple[openai.AsyncOpenAI, str]],
        triton: grpcclient.InferenceServerClient,
        text_model: str,
        target_model: str,
        in_flight: int,
    ) -> None:
        self.task, self.loop = task, loop
        self.clients, self.turn = clients, itertools.count()
        self.triton, self.text_model, self.target_model = triton, text_model, target_model
        self.gate = asyncio.Semaphore(in_flight)
        self.counts = _Counts()
        self.batch = 1
        """Texts per embedding request: the text model's max_batch_size, read at start."""
        self.pool: frozenset[str] = frozenset()

    async def _infer(self, model: str, name: str, items: Sequence[bytes]) -> np.ndarray:
        rows = np.array([[item] for item in items], dtype=np.object_)
        tensor = grpcclient.InferInput(name, list(rows.shape), "BYTES")
        tensor.set_data_from_numpy(rows)
        result = await self.triton.infer(
            model, [tensor], outputs=[grpcclient.InferRequestedOutput("EMBEDDING")]
        )
        embeddings = result.as_numpy("EMBEDDING")
        assert embeddings is not None, f"{model} returned no EMBEDDING"
        return embeddings

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit embeddings of `texts`, in chunks of the model's max_batch_size (concurrently)."""
        chunks = [texts[i : i + self.batch] for i in range(0, len(texts), self.batch)]

        async def one(chunk: Sequence[str]) -> np.ndarray:
            found = await _retry(
                lambda: self._infer(self.text_model, "TEXT", [t.encode() for t in chunk]),
                self.counts,
            )
            self.counts.texts += len(chunk)
            self.counts.unique.update(chunk)
            return found

        return _unit(np.concatenate(await asyncio.gather(*(one(c) for c in chunks))))

    async def embed_target(self, target: bytes) -> np.ndarray:
        found = await _retry(lambda: self._infer(self.target_model, "IMAGE", [target]), self.counts)
        return _unit(found[0])

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """One chat completion under the semaphore, round-robin over the endpoints."""
        client, model = self.clients[next(self.turn) % len(self.clients)]

        async def call() -> str:
            self.counts.requests += 1
            reply = await client.chat.completions.create(
                model=model,
                messages=list(messages),  # type: ignore[arg-type]
                temperature=DEFAULT_TEMPERATURE,
                top_p=DEFAULT_TOP_P,
                max_tokens=DEFAULT_MAX_TOKENS,
            )
            return reply.choices[0].message.content or ""

        async with self.gate:
            return await _retry(call, self.counts)

    async def sample(
        self, sample_id: str, target: bytes, pool: Sequence[str], pool_vectors: np.ndarray
    ) -> SampleOptimizer:
        """Run one sample's loop to the end (its steps, or its patience)."""
        vector = await self.embed_target(target)
        optimizer = SampleOptimizer(sample_id, self.loop, higher_is_better=True)
        optimizer.start(list(zip((pool_vectors @ vector).tolist(), pool, strict=True)), self.pool)
        try:
            while not optimizer.done:
                plan = optimizer.plan_step()
                messages = build_messages(self.task, plan.shown, self.loop.requested)
                reply = await self.complete(messages)
                parsed = parse_candidates(
                    reply,
                    max_chars=self.task.max_candidate_chars,
                    strip_annotations=self.task.strip_annotations,
                )
                fresh, _ = optimizer.accept(plan, parsed)
                scores = (await self.embed_texts(fresh)) @ vector if fresh else np.zeros(0)
                optimizer.commit(plan, list(zip(fresh, scores.tolist(), strict=True)))
        except BaseException:
            self.counts.wasted += optimizer.step
            raise
        self.counts.steps += optimizer.step
        return optimizer


async def run_hand_loop(
    *,
    task: TaskSpec,
    loop: LoopConfig,
    endpoints: Sequence[HandEndpoint],
    triton_url: str,
    text_model: str,
    target_model: str,
    samples: Sequence[tuple[str, bytes]],
    pool: Sequence[str],
    in_flight: int,
    passes: int = 1,
) -> HandResult:
    """Run `samples` ((id, target bytes)) through the hand-written loop; see the module doc.

    Args:
        in_flight: permits of the semaphore around the chat call (all endpoints together).
        passes: runs over the samples that failed, the first included.
    """
    if in_flight < 1 or passes < 1 or not endpoints:
        raise ValueError(
            f"need in_flight >= 1, passes >= 1 and an endpoint; got {in_flight}, "
            f"{passes}, {list(endpoints)}"
        )
    began = time.monotonic()
    clients = [
        (
            openai.AsyncOpenAI(base_url=e.base_url, api_key="EMPTY", max_retries=0, timeout=300.0),
            e.model,
        )
        for e in endpoints
    ]
    triton = grpcclient.InferenceServerClient(triton_url)
    hand = _HandLoop(
        task=task,
        loop=loop,
        clients=clients,
        triton=triton,
        text_model=text_model,
        target_model=target_model,
        in_flight=in_flight,
    )
    best: dict[str, float] = {}
    errors: list[str] = []
    todo = list(samples)
    done_passes = 0
    try:
        config = await triton.get_model_config(text_model, as_json=True)
        hand.batch = int(config["config"]["max_batch_size"])
        hand.pool = frozenset(pool)
        pool_vectors = await hand.embed_texts(pool)
        while todo and done_passes < passes:
            done_passes += 1
            results = await asyncio.gather(
                *(hand.sample(sid, target, pool, pool_vectors) for sid, target in todo),
                return_exceptions=True,
            )
            failed = []
            for (sid, target), result in zip(todo, results, strict=True):
                if isinstance(result, SampleOptimizer):
                    best[sid] = result.pool[0][0]
                elif isinstance(result, Exception):
                    failed.append((sid, target))
                    if len(errors) < 5:
                        errors.append(f"{sid}: {type(result).__name__}: {result}"[:300])
                else:
                    raise result
            todo = failed
    finally:
        await triton.close()
        for client, _ in clients:
            await client.close()
    c = hand.counts
    return HandResult(
        samples=len(samples),
        steps=c.steps,
        failed=len(todo),
        wasted_steps=c.wasted,
        passes=done_passes,
        generator_requests=c.requests,
        retries=c.retries,
        text_encodes=c.texts,
        unique_texts=len(c.unique),
        wall_s=time.monotonic() - began,
        best_scores=best,
        errors=errors,
    )
