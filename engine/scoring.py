"""Text embedding shared by all samples: coalesced into batches, cached, scored on the client.

Samples ask `TextEmbeddings.embed(texts)`. Each text is looked up in an LRU cache keyed by
(scorer, text); a text already on its way to the scorer is awaited, not sent twice; the
rest join a queue that one flusher drains into batches of at most `score_batch` texts,
waiting at most `score_wait_ms` for a partial batch to fill. At most `score_in_flight`
batches are in flight; when the scorer is slow the queue, bounded by the samples in flight,
absorbs the wait (backpressure).

Scores are cosine similarities: embeddings are L2-normalised once, scoring is a dot product.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from mils.engine.config import ConcurrencyConfig
from mils.engine.errors import InvalidResponse, MilsError
from mils.engine.logs import get_logger
from mils.engine.observe import RequestObserver, observed
from mils.engine.protocols import Scorer
from mils.engine.retry import Retrier

__all__ = ["EmbeddingStatistics", "TextEmbeddings", "normalise"]

log = get_logger(__name__)


def normalise(vectors: np.ndarray, *, endpoint: str) -> np.ndarray:
    """L2-normalise rows (float32); reject non-finite or zero vectors.

    Raises:
        InvalidResponse: the scorer returned NaN/inf or an all-zero embedding.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    rows = _normalise_rows(vectors)
    if np.isnan(rows).any():
        what = (
            "non-finite embeddings" if not np.isfinite(vectors).all() else "an all-zero embedding"
        )
        raise InvalidResponse(f"scorer {endpoint} returned {what}", endpoint=endpoint)
    return rows


@dataclass(frozen=True, slots=True)
class EmbeddingStatistics:
    texts_requested: int
    """Texts asked for by samples (cache hits included)."""
    texts_embedded: int
    """Texts actually sent to the scorer."""
    cache_hits: int
    """Texts found in the cache, or already on their way to the scorer for another sample."""
    cache_misses: int
    """Texts queued for the scorer (each unique text once while it stays cached)."""
    invalid: int
    """Texts whose embedding was NaN, infinite or zero (scored as unusable)."""
    batches: int
    batches_in_flight: int
    queued: int


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit rows; a row that is non-finite or all-zero becomes all-NaN (unscorable)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    valid = np.isfinite(vectors).all(axis=1, keepdims=True) & (norms > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, vectors / np.where(valid, norms, 1.0), np.nan).astype(np.float32)


class _LRU:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        if self._capacity == 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)


class TextEmbeddings:
    """Batched, cached text embedding for one scorer; an async context manager.

    The cache is per scorer instance, and a scorer's `name` identifies its model, so the
    (scorer model, text) key of DESIGN.md holds. `on_request`, if given, hears of every
    batch attempt (see `mils.engine.observe`).
    """

    def __init__(
        self,
        scorer: Scorer,
        config: ConcurrencyConfig,
        retrier: Retrier,
        *,
        on_request: RequestObserver | None = None,
    ) -> None:
        self._scorer = scorer
        self._retrier = retrier
        self._on_request = on_request
        self._batch = min(config.score_batch, scorer.max_batch_size)
        self._wait_s = config.score_wait_ms / 1000
        self._slots = asyncio.Semaphore(config.score_in_flight)
        self._cache = _LRU(config.cache_size)
        self._pending: dict[str, asyncio.Future[np.ndarray]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: asyncio.TaskGroup | None = None
        self._requested = self._embedded = self._hits = self._batches = self._active = 0
        self._invalid = self._misses = 0
        self._dim: int | None = None
        """Embedding size, learnt from the first good batch (the initial pool)."""

    async def __aenter__(self) -> TextEmbeddings:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._flusher = self._tasks.create_task(self._flush_loop(), name="embedding-flusher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tasks is not None
        self._flusher.cancel()
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings of `texts`, shape (len(texts), dim).

        A text the scorer could not embed (NaN, infinite or all-zero output) comes back as
        a row of NaN, so its score is NaN and the caller drops it alone.
        """
        self._requested += len(texts)
        found: dict[str, np.ndarray] = {}
        waits: dict[str, asyncio.Future[np.ndarray]] = {}
        for text in texts:
            if text in found or text in waits:
                continue
            if (cached := self._cache.get(text)) is not None:
                found[text] = cached
                self._hits += 1
            elif (future := self._pending.get(text)) is not None:
                waits[text] = future
                self._hits += 1
            else:
                waits[text] = self._pending[text] = self._new_future()
                self._queue.put_nowait(text)
                self._misses += 1
        if waits:
            # asyncio.wait, not gather: cancelling this sample must not cancel futures
            # that other samples are waiting on too.
            await asyncio.wait(waits.values())
            for text, future in waits.items():
                found[text] = future.result()
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[text] for text in texts])

    def _new_future(self) -> asyncio.Future[np.ndarray]:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        # A failed batch whose waiters were all cancelled must not warn at shutdown.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    async def _flush_loop(self) -> None:
        assert self._tasks is not None
        while True:
            batch = [await self._queue.get()]
            self._drain(batch)
            if len(batch) < self._batch and self._wait_s > 0:
                await asyncio.sleep(self._wait_s)
                self._drain(batch)
            await self._slots.acquire()
            self._tasks.create_task(self._flush(batch))

    def _drain(self, batch: list[str]) -> None:
        while len(batch) < self._batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _flush(self, texts: list[str]) -> None:
        self._batches += 1
        self._active += 1
        try:
            rows = await self._embed_isolating(texts)
        except Exception as exc:  # every waiter gets the error; none is left hanging
            if not isinstance(exc, MilsError):
                log.exception("embedding_batch_crashed", size=len(texts))
            log.warning("embedding_batch_failed", size=len(texts), error=str(exc))
            for text in texts:
                self._pending.pop(text).set_exception(exc)
            return
        finally:
            self._active -= 1
            self._slots.release()
        self._embedded += len(texts)
        for text, vector in zip(texts, rows, strict=True):
            if np.isnan(vector[0]):
                self._invalid += 1
                log.warning("text_embedding_invalid", scorer=self._scorer.name, text=text[:80])
            else:
                self._cache.put(text, vector)
            self._pending.pop(text).set_result(vector)

    async def _embed_isolating(self, texts: list[str]) -> np.ndarray:
        """Unit rows for `texts`; rows the scorer could not produce are NaN.

        When the scorer rejects a batch as a whole (a bad item, a wrong shape), each text
        is sent alone so that only the offending ones become unscorable. Until one batch
        has succeeded (the embedding size is unknown) a rejection is an error.
        """
        try:
            return _normalise_rows(await self._embed_checked(texts))
        except InvalidResponse as exc:
            if self._dim is None:
                raise
            if len(texts) == 1:
                log.warning("text_embedding_rejected", text=texts[0][:80], error=str(exc))
                return np.full((1, self._dim), np.nan, dtype=np.float32)
            log.warning("embedding_batch_split", size=len(texts), error=str(exc))
        rows = await asyncio.gather(*(self._embed_isolating([text]) for text in texts))
        return np.concatenate(rows)

    async def _embed_checked(self, texts: list[str]) -> np.ndarray:
        raw = await self._retrier.call(self._embed_once, texts)
        vectors = np.asarray(raw, dtype=np.float32)
        expected = (len(texts), self._dim or (vectors.shape[-1] if vectors.ndim else 0))
        if vectors.ndim != 2 or vectors.shape != expected:
            raise InvalidResponse(
                f"scorer {self._scorer.name} returned shape {vectors.shape} for "
                f"{len(texts)} texts (expected {expected})",
                endpoint=self._scorer.name,
            )
        self._dim = vectors.shape[1]
        return vectors

    async def _embed_once(self, texts: list[str]) -> np.ndarray:
        """One attempt at one batch (observed on its own: retries are separate requests)."""
        name = self._scorer.name
        return await observed(self._on_request, "scorer", name, self._scorer.embed_texts(texts))

    def statistics(self) -> EmbeddingStatistics:
        return EmbeddingStatistics(
            texts_requested=self._requested,
            texts_embedded=self._embedded,
            cache_hits=self._hits,
            cache_misses=self._misses,
            invalid=self._invalid,
            batches=self._batches,
            batches_in_flight=self._active,
            queued=self._queue.qsize(),
        )
