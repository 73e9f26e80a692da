"""Text embedding shared by all samples: coalesced into batches, cached, scored on the client.

Samples ask `TextEmbeddings.embed(texts)`. Each text is looked up in an LRU cache keyed by
(scorer, text); a text already on its way to the scorer is awaited, not sent twice; the
rest join a queue that one flusher drains into batches of at most `score_batch` texts,
waiting at most `score_wait_ms` for a partial batch to fill. At most `score_in_flight`
batches are in flight; when the scorer is slow the queue, bounded by the samples in flight,
absorbs the wait (backpressure).

Each unique text is embedded once per run, however long the run, while memory stays flat:
the LRU holds `cache_size` embeddings, and those it evicts move to a file on disk
(`_Spill`) from which a text asked for again is read back instead of embedded again.
Texts recur across samples far apart in a run (two samples' LLM replies share a line), not
within one sample (its loop never scores a text twice), so holding only what live samples
hold would not be exact; holding everything in memory would grow with the dataset.

Scores are cosine similarities: embeddings are L2-normalised once, scoring is a dot product.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sqlite3
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from mils.engine.config import ConcurrencyConfig
from mils.engine.errors import InvalidResponse, MilsError
from mils.engine.logs import get_logger
from mils.engine.observe import RequestObserver, observed
from mils.engine.protocols import Scorer
from mils.engine.retry import Retrier

__all__ = ["SPILL_CHUNK", "EmbeddingStatistics", "TextEmbeddings", "normalise"]

log = get_logger(__name__)

_T = TypeVar("_T")


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
    cached: int = 0
    """Embeddings held in memory now: at most `cache_size`, plus those on their way to disk
    (up to two chunks, see `SPILL_CHUNK`)."""
    spilled: int = 0
    """Embeddings moved to disk (read back when their text is asked for again)."""
    recalled: int = 0
    """Texts read back from disk (counted in `cache_hits` too)."""


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

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, value: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Keep `value`; return what was evicted to make room for it, oldest first."""
        if self._capacity == 0:
            return [(key, value)]
        self._items[key] = value
        self._items.move_to_end(key)
        evicted = []
        while len(self._items) > self._capacity:
            evicted.append(self._items.popitem(last=False))
        return evicted


SPILL_CHUNK = 1024
"""Evicted embeddings written to disk at once (they stay readable in memory until then).
When twice as many wait, new asks wait for the disk (backpressure): memory holds at most
`cache_size` + 2 x SPILL_CHUNK embeddings, plus the batches in flight."""
_BLOOM_BITS = 1 << 25
"""Bits of the filter of spilled texts (4 MiB, two bits a text): a false positive, which
costs one disk read, in about 1 of 7,000 lookups at 200,000 spilled texts, 1 of 80 at 2
million."""
_READ_CHUNK = 500
"""Texts per SELECT (SQLite caps the parameters of one statement)."""


class _Spill:
    """Embeddings evicted from memory, in an SQLite file of a temporary directory.

    The file is made on the first write and removed by `close`. A fixed-size Bloom filter
    in memory says which texts may be on disk, so a text never spilled (almost every miss)
    costs no read. All SQLite work runs on one thread of its own: one connection, used from
    the thread that opened it, and reads queue behind the writes before them.
    """

    def __init__(self) -> None:
        self._bits = bytearray()
        """The filter, made on the first `mark` (a run that never spills never holds it)."""
        self._thread: ThreadPoolExecutor | None = None
        self._dir: Path | None = None
        self._db: sqlite3.Connection | None = None
        self.count = 0
        """Embeddings written (a text written twice counts twice; it is rare)."""

    def mark(self, text: str) -> None:
        """Note that `text` is on its way to disk."""
        if not self._bits:
            self._bits = bytearray(_BLOOM_BITS // 8)
        # Two positions from the process's own string hash (stable within a run, cached
        # on the string): inline, as this runs for every evicted and every new text.
        h = hash(text)
        a, b = h & (_BLOOM_BITS - 1), (h >> 32) & (_BLOOM_BITS - 1)
        self._bits[a >> 3] |= 1 << (a & 7)
        self._bits[b >> 3] |= 1 << (b & 7)

    def may_hold(self, text: str) -> bool:
        """False: `text` was never spilled. True: it probably was."""
        if not self._bits:
            return False
        h = hash(text)
        a, b = h & (_BLOOM_BITS - 1), (h >> 32) & (_BLOOM_BITS - 1)
        return bool(self._bits[a >> 3] >> (a & 7) & 1 and self._bits[b >> 3] >> (b & 7) & 1)

    async def write(self, rows: Sequence[tuple[str, np.ndarray]]) -> None:
        """Store `rows` (text, unit float32 vector)."""
        blobs = [(text, vector.tobytes()) for text, vector in rows]
        await self._run(self._write, blobs)
        self.count += len(blobs)

    async def read(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those of `texts` on disk."""
        found = await self._run(self._read, list(texts))
        return {text: np.frombuffer(blob, dtype=np.float32) for text, blob in found}

    async def close(self) -> None:
        """Close the file and remove its directory (waits for writes already started)."""
        if self._thread is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        finally:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def _run(self, work: Callable[[Any], _T], arg: Any) -> _T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="embedding-spill")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, arg)

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self._dir = Path(tempfile.mkdtemp(prefix="mils-embeddings-"))
            self._db = sqlite3.connect(self._dir / "spill.db", isolation_level=None)
            # Scratch data, gone with the run: no journal, no fsync.
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE spill (text TEXT PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"
            )
        return self._db

    def _write(self, blobs: Iterable[tuple[str, bytes]]) -> None:
        db = self._open()
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO spill VALUES (?, ?)", blobs)
        db.execute("COMMIT")

    def _read(self, texts: list[str]) -> list[tuple[str, bytes]]:
        if self._db is None:
            return []
        found: list[tuple[str, bytes]] = []
        for start in range(0, len(texts), _READ_CHUNK):
            chunk = texts[start : start + _READ_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT text, vector FROM spill WHERE text IN ({marks})"
            found += self._db.execute(query, chunk).fetchall()
        return found

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class _Ask:
    """One `embed` call waiting for its texts not at hand: woken once, when the last of
    them has arrived (into `found`) or the first has failed."""

    __slots__ = ("found", "future", "left")

    def __init__(
        self, found: dict[str, np.ndarray], left: int, future: asyncio.Future[None]
    ) -> None:
        self.found, self.left, self.future = found, left, future

    def give(self, text: str, vector: np.ndarray) -> None:
        self.found[text] = vector
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class TextEmbeddings:
    """Batched, cached text embedding for one scorer; an async context manager.

    The cache is per scorer instance, and a scorer's `name` identifies its model, so the
    (scorer model, text) key of DESIGN.md holds. It keeps `cache_size` embeddings in
    memory and the rest on disk (see the module docstring). `on_request`, if given, hears
    of every batch attempt (see `mils.engine.observe`).
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
        self._spill = _Spill()
        self._spilling: dict[str, np.ndarray] = {}
        """Evicted embeddings not yet on disk: still answered from here."""
        self._writer: asyncio.Task[None] | None = None
        self._pending: dict[str, list[_Ask]] = {}
        """Texts queued, being embedded or read back from disk: the calls waiting for each."""
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: asyncio.TaskGroup | None = None
        self._requested = self._embedded = self._hits = self._batches = self._active = 0
        self._invalid = self._misses = self._recalled = 0
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
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            self._spilling.clear()
            await self._spill.close()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings of `texts`, shape (len(texts), dim).

        A text the scorer could not embed (NaN, infinite or all-zero output) comes back as
        a row of NaN, so its score is NaN and the caller drops it alone.
        """
        while self._writer is not None and len(self._spilling) >= 2 * SPILL_CHUNK:
            await asyncio.shield(self._writer)  # the disk is behind: wait for it
        self._requested += len(texts)
        found: dict[str, np.ndarray] = {}
        missing: dict[str, list[_Ask]] = {}  # texts on their way: who waits for each
        recall: list[str] = []
        for text in texts:
            if text in found or text in missing:
                continue
            cached = self._cache.get(text)
            if cached is not None or (cached := self._spilling.get(text)) is not None:
                found[text] = cached
                self._hits += 1
            elif (asks := self._pending.get(text)) is not None:
                missing[text] = asks
                self._hits += 1
            else:
                missing[text] = self._pending[text] = []
                if self._spill.count and self._spill.may_hold(text):
                    recall.append(text)  # counted as a hit or a miss once read
                else:
                    self._queue.put_nowait(text)
                    self._misses += 1
        if recall:
            assert self._tasks is not None
            self._tasks.create_task(self._recall(recall))
        if missing:
            # One future of this call's own, not one per text: cancelling this sample
            # must not cancel what other samples wait for too.
            ask = _Ask(found, len(missing), asyncio.get_running_loop().create_future())
            for asks in missing.values():
                asks.append(ask)
            await ask.future
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[text] for text in texts])

    async def _recall(self, texts: list[str]) -> None:
        """Answer `texts` from disk; those not there (a filter's false positive, a failed
        write) go to the scorer."""
        try:
            found = await self._spill.read(texts)
        except (OSError, sqlite3.Error) as exc:
            log.warning("embedding_spill_unreadable", texts=len(texts), error=str(exc))
            found = {}
        for text in texts:
            if (vector := found.get(text)) is not None:
                self._hits += 1
                self._recalled += 1
                for ask in self._pending.pop(text):
                    ask.give(text, vector)
            else:
                self._misses += 1
                self._queue.put_nowait(text)

    def _keep(self, text: str, vector: np.ndarray) -> None:
        """Cache `vector`; what the LRU evicts goes to disk, a chunk at a time."""
        for old, row in self._cache.put(text, vector):
            self._spilling[old] = row
            self._spill.mark(old)
        if len(self._spilling) >= SPILL_CHUNK and self._writer is None:
            assert self._tasks is not None
            self._writer = self._tasks.create_task(self._write_spill())

    async def _write_spill(self) -> None:
        """Write the oldest evicted embeddings to disk, a chunk at a time, until fewer than
        a chunk wait."""
        try:
            while len(self._spilling) >= SPILL_CHUNK:
                chunk = list(itertools.islice(self._spilling.items(), SPILL_CHUNK))
                try:
                    await self._spill.write(chunk)
                except (OSError, sqlite3.Error) as exc:
                    # Not fatal: those texts are embedded again if asked for.
                    log.warning("embedding_spill_failed", texts=len(chunk), error=str(exc))
                for text, row in chunk:
                    if self._spilling.get(text) is row:
                        del self._spilling[text]
        finally:
            self._writer = None

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
                for ask in self._pending.pop(text):
                    ask.fail(exc)
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
                self._keep(text, vector)
            for ask in self._pending.pop(text):
                ask.give(text, vector)

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
            cached=len(self._cache) + len(self._spilling),
            spilled=self._spill.count,
            recalled=self._recalled,
        )
