"""Objectives: how candidate texts get their values for one sample.

The scheduler knows one shape, `Objective`; every MILS task is one of two kinds:

    EmbeddingObjective   text and target embedded into one space, value = cosine
                         (image, video and audio captioning). Texts from every sample are
                         coalesced into batches, each unique text is embedded once per run
                         (embeddings past the cache's size wait on disk, `mils.engine.scoring`),
                         the initial pool once per run, and the dot products run on the client.
    RenderThenScore      each text is rendered (text -> image, or an edit of an input image),
                         the media scored against the sample's inputs as named terms, and the
                         terms combined as the task declares (prompt enhancement: one term,
                         maximised; style transfer: style + content loss, minimised).
                         Renders are cached by text and the inputs the renderer reads.

An objective is an async context manager entered once per run. Per run it gets the initial
pool (`set_pool`); per sample it prepares the target from the sample's raw inputs
(`prepare`), ranks the pool for it (`score_pool`) and evaluates batches of new texts
(`evaluate`). A text that cannot be scored comes back as None and is dropped alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np

from mils.engine.config import ConcurrencyConfig
from mils.engine.errors import ConfigError, InvalidResponse
from mils.engine.logs import get_logger
from mils.engine.observe import RequestObserver
from mils.engine.optimizer import Scored
from mils.engine.protocols import MediaScorer, Renderer, Scorer
from mils.engine.retry import Retrier
from mils.engine.scoring import TextEmbeddings, normalise

__all__ = [
    "DEFAULT_RENDER_CACHE_BYTES",
    "DEFAULT_RENDER_CACHE_SIZE",
    "Artefact",
    "EmbeddingObjective",
    "Evaluation",
    "Objective",
    "ObjectiveStatistics",
    "RenderTarget",
    "RenderThenScore",
    "WeightedSum",
]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Artefact:
    """Media made while scoring a text (a rendered image), kept in the run directory."""

    data: bytes
    suffix: str
    """File suffix, with the dot (".png")."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The value of one candidate text for one sample."""

    value: float
    """What the loop ranks by, in the objective's direction."""
    terms: Mapping[str, float] = field(default_factory=dict)
    """Named parts of the value (style and content loss), when there are several."""
    artefact: Artefact | None = None


@dataclass(frozen=True, slots=True)
class ObjectiveStatistics:
    texts_evaluated: int
    """Texts sent to the scorer (or renderer): cache hits and repeats excluded."""
    unscorable: int
    """Texts whose value could not be computed (NaN, rejected): dropped alone."""
    in_flight: int
    """Scorer (or renderer) requests in flight now."""
    queued: int
    """Texts waiting for a batch."""
    cache_hits: int = 0
    """Texts whose value came from a cache (objectives without one: 0)."""
    cache_misses: int = 0
    """Texts that were not cached and went to the scorer."""
    cached: int = 0
    """Values held in memory now (embeddings, renders): bounded by the cache's size."""
    spilled: int = 0
    """Embeddings moved from memory to disk, still answered from there (each unique text
    is embedded once per run)."""


class Objective(Protocol):
    """How a run turns candidate texts into values (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def higher_is_better(self) -> bool: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def set_pool(self, pool: Sequence[str]) -> None:
        """Take the run's initial pool (once per run, while samples prepare)."""
        ...

    @property
    def pool_texts(self) -> frozenset[str]:
        """Every text of the initial pool (shared by all samples: never re-scored)."""
        ...

    async def prepare(self, inputs: Mapping[str, bytes]) -> Any:
        """The sample's target, from its raw inputs; the other methods take it back."""
        ...

    async def score_pool(self, target: Any, *, limit: int | None = None) -> list[Scored]:
        """The initial pool's values for this sample, best first (ties by text); only the
        best `limit` when given (what the sample's loop will ever read)."""
        ...

    async def evaluate(self, target: Any, texts: Sequence[str]) -> list[Evaluation | None]:
        """One value per text, in order; None where the text could not be scored."""
        ...

    async def details(self, target: Any, text: str) -> Evaluation | None:
        """What `evaluate` gives for a text already scored, when it holds more than the
        value (terms, a render): recorded for the initial pool's best, so the best text of
        a sample always has them. None when there is nothing more (and no work is done)."""
        ...

    def statistics(self) -> ObjectiveStatistics: ...


def _similarities(embeddings: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each row's dot product with `target`, in numpy's own loop rather than BLAS: after a
    call, BLAS's worker threads spin for a while, which cost more CPU than these small
    products themselves (about 1 ms per sample-step on the scale benchmark)."""
    return np.einsum("ij,j->i", embeddings, target)


def _rank_values(
    values: np.ndarray, texts: Sequence[str], higher_is_better: bool, limit: int | None = None
) -> list[Scored]:
    """`texts` sorted by text, ranked by value with numpy (the best `limit`, when given);
    a stable sort keeps ties by text."""
    key = -values if higher_is_better else values
    if limit is not None and limit < len(key):
        # Only the candidates up to the limit's value (all of its ties) are sorted.
        cut = np.partition(key, limit - 1)[limit - 1]
        if not np.isnan(cut):
            chosen = np.flatnonzero(key <= cut)
            order = chosen[np.argsort(key[chosen], kind="stable")][:limit].tolist()
            return [(float(values[i]), texts[i]) for i in order]
    order = np.argsort(key, kind="stable").tolist()
    listed = values.tolist()
    return [(listed[i], texts[i]) for i in order][:limit]


class EmbeddingObjective:
    """Cosine similarity of text and target embeddings from one `Scorer`.

    Args:
        scorer: the encoder pair (text model, target model).
        target: name of the sample input the texts are compared with ("image").
        concurrency: batch size, wait and in-flight caps of the text batcher.
        retrier: the run's retry loop (its fault counts are the run's).
        on_request: hears of every text batch sent to the scorer (`mils.engine.observe`).
    """

    higher_is_better = True

    def __init__(
        self,
        scorer: Scorer,
        *,
        target: str,
        concurrency: ConcurrencyConfig,
        retrier: Retrier,
        on_request: RequestObserver | None = None,
    ) -> None:
        self._scorer = scorer
        self._target = target
        self._retrier = retrier
        self._embeddings = TextEmbeddings(scorer, concurrency, retrier, on_request=on_request)
        self._pool_ready: asyncio.Future[None] | None = None
        self._pool_texts: list[str] = []
        self._pool_set: frozenset[str] = frozenset()
        self._pool_matrix = np.zeros((0, 0), dtype=np.float32)

    @property
    def name(self) -> str:
        return f"cosine({self._scorer.name})"

    async def __aenter__(self) -> Self:
        await self._embeddings.__aenter__()
        self._pool_ready = asyncio.get_running_loop().create_future()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool_ready is not None and not self._pool_ready.done():
            self._pool_ready.cancel()
        await self._embeddings.__aexit__(exc_type, exc, tb)

    async def set_pool(self, pool: Sequence[str]) -> None:
        """Embed the pool once for the whole run; unscorable texts are dropped."""
        assert self._pool_ready is not None, "enter the objective first"
        try:
            matrix = await self._embeddings.embed(pool)
            valid = ~np.isnan(matrix[:, 0]) if len(pool) else np.zeros(0, dtype=bool)
            if not valid.any():
                raise ConfigError(
                    f"none of the {len(pool)} initial pool texts could be embedded by "
                    f"{self._scorer.name}; check the scorer model or pass another pool"
                )
            if not valid.all():
                log.warning(
                    "pool_texts_dropped", dropped=int((~valid).sum()), kept=int(valid.sum())
                )
            # Sorted by text, so that a stable sort by value breaks ties by text, as `rank` does.
            order = sorted(np.flatnonzero(valid).tolist(), key=pool.__getitem__)
            self._pool_texts = [pool[i] for i in order]
            self._pool_set = frozenset(pool)
            self._pool_matrix = matrix[order]
        except asyncio.CancelledError:
            self._pool_ready.cancel()
            raise
        except Exception as exc:
            self._pool_ready.set_exception(exc)
            self._pool_ready.exception()  # seen here: no "never retrieved" warning later
            raise
        self._pool_ready.set_result(None)

    @property
    def pool_texts(self) -> frozenset[str]:
        return self._pool_set

    async def prepare(self, inputs: Mapping[str, bytes]) -> np.ndarray:
        raw = await self._retrier.call(self._scorer.embed_target, inputs[self._target])
        assert self._pool_ready is not None, "enter the objective first"
        await asyncio.shield(self._pool_ready)  # the target is checked against the pool's dim
        target = normalise(np.asarray(raw).reshape(1, -1), endpoint=self._scorer.name)[0]
        if target.shape[0] != self._pool_matrix.shape[1]:
            # This sample fails; a real mismatch of models shows as every sample failing.
            raise InvalidResponse(
                f"target embedding has dim {target.shape[0]} but text embeddings have dim "
                f"{self._pool_matrix.shape[1]}; the text and target models on "
                f"{self._scorer.name} must come from the same encoder pair",
                endpoint=self._scorer.name,
            )
        return target

    async def score_pool(self, target: np.ndarray, *, limit: int | None = None) -> list[Scored]:
        values = _similarities(self._pool_matrix, target)
        return _rank_values(values, self._pool_texts, self.higher_is_better, limit)

    async def details(self, target: np.ndarray, text: str) -> None:
        return None  # a cosine is all there is

    async def evaluate(self, target: np.ndarray, texts: Sequence[str]) -> list[Evaluation | None]:
        if not texts:
            return []
        scores = _similarities(await self._embeddings.embed(texts), target)
        return [Evaluation(s) if math.isfinite(s) else None for s in scores.tolist()]

    def statistics(self) -> ObjectiveStatistics:
        stats = self._embeddings.statistics()
        return ObjectiveStatistics(
            texts_evaluated=stats.texts_embedded,
            unscorable=stats.invalid,
            in_flight=stats.batches_in_flight,
            queued=stats.queued,
            cache_hits=stats.cache_hits,
            cache_misses=stats.cache_misses,
            cached=stats.cached,
            spilled=stats.spilled,
        )


@dataclass(frozen=True, slots=True)
class WeightedSum:
    """Combines named terms into one value: sum of weight x term (a declared objective)."""

    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError("a weighted sum needs at least one term")

    def __call__(self, terms: Mapping[str, float]) -> float:
        missing = sorted(set(self.weights) - set(terms))
        if missing:
            raise InvalidResponse(
                f"scorer returned terms {sorted(terms)}, missing {missing}", endpoint="scorer"
            )
        return sum(weight * float(terms[name]) for name, weight in self.weights.items())


DEFAULT_RENDER_CACHE_SIZE = 4096
"""Renders a `RenderThenScore` keeps (least recently used dropped first)."""
DEFAULT_RENDER_CACHE_BYTES = 512 * 1024 * 1024
"""Bytes of rendered media it keeps: 4096 renders of 512x512 PNGs would be about 1.5 GB."""
_HASH_IN_THREAD_BYTES = 1 << 20
"""Inputs larger than this are hashed off the event loop."""

_RenderKey = tuple[str, tuple[bytes, ...]]


@dataclass(frozen=True, slots=True)
class RenderTarget:
    """A sample's inputs, with the digests of those the renderer reads (its cache key part)."""

    inputs: Mapping[str, bytes]
    reads_digest: tuple[bytes, ...]


class RenderThenScore:
    """Render each text, score the media as named terms, combine them into one value.

    Renders are cached by (text, digests of the inputs the renderer `reads`): a text-to-image
    renderer reads nothing, so a text proposed for several samples is rendered once; an
    editor reads the image it edits, so one instruction on two images is two renders. The
    renderer's `name` carries its model and seed and an objective has one renderer, so the
    key needs no renderer part. Concurrent asks for one key share one render; a render
    that fails is not kept (the next ask renders again). Scores are not cached: they
    depend on the inputs each sample is scored against.

    Args:
        renderer: text (+ the sample's inputs) -> media.
        scorer: media (+ text, inputs) -> named terms.
        combine: terms -> value (e.g. `WeightedSum({"style": 1000, "content": 1})`).
        higher_is_better: the direction of the combined value.
        in_flight: texts rendered and scored at once, across samples.
        retrier: the run's retry loop.
        cache_size: most renders kept (0: none kept; concurrent asks still share one).
        cache_bytes: most bytes of rendered media kept.

    Raises:
        ConfigError: a negative cache bound.
    """

    def __init__(
        self,
        *,
        renderer: Renderer,
        scorer: MediaScorer,
        combine: WeightedSum,
        higher_is_better: bool,
        in_flight: int,
        retrier: Retrier,
        cache_size: int = DEFAULT_RENDER_CACHE_SIZE,
        cache_bytes: int = DEFAULT_RENDER_CACHE_BYTES,
    ) -> None:
        if cache_size < 0 or cache_bytes < 0:
            raise ConfigError(
                f"render cache bounds must be >= 0, not cache_size={cache_size}, "
                f"cache_bytes={cache_bytes}; pass 0 to keep no renders"
            )
        self._renderer = renderer
        self._scorer = scorer
        self._combine = combine
        self.higher_is_better = higher_is_better
        self._slots = asyncio.Semaphore(in_flight)
        self._retrier = retrier
        self._pool: list[str] = []
        self._pool_set: frozenset[str] = frozenset()
        # Finished renders and renders being made; only finished ones count in _kept_bytes.
        self._renders: OrderedDict[_RenderKey, asyncio.Future[bytes]] = OrderedDict()
        self._cache_size, self._cache_bytes = cache_size, cache_bytes
        self._kept_bytes = 0
        self._evaluated = self._unscorable = self._active = self._waiting = 0
        self._hits = self._misses = 0

    @property
    def name(self) -> str:
        return f"{self._scorer.name}({self._renderer.name})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._renders.clear()
        self._kept_bytes = 0

    async def set_pool(self, pool: Sequence[str]) -> None:
        self._pool = sorted(pool)  # ties are broken by text, as `rank` does
        self._pool_set = frozenset(pool)

    @property
    def pool_texts(self) -> frozenset[str]:
        return self._pool_set

    async def prepare(self, inputs: Mapping[str, bytes]) -> RenderTarget:
        """The inputs, with the digests of those the renderer reads (hashed once per sample).

        Raises:
            ConfigError: the renderer reads an input the sample does not have.
        """
        missing = [name for name in self._renderer.reads if name not in inputs]
        if missing:
            raise ConfigError(
                f"renderer {self._renderer.name} reads the inputs {missing}, which the "
                f"task's samples do not have (they have {sorted(inputs)}); set the "
                "renderer's `image_input` to one of those"
            )
        read = [inputs[name] for name in self._renderer.reads]
        if sum(len(data) for data in read) > _HASH_IN_THREAD_BYTES:
            digests = await asyncio.to_thread(_digests, read)
        else:
            digests = _digests(read)
        return RenderTarget(inputs, digests)

    async def score_pool(self, target: RenderTarget, *, limit: int | None = None) -> list[Scored]:
        """The pool's values, best first; [] for an empty pool (a run that starts from the
        sample's own text), an error when a pool was given but none of it could be scored."""
        if not self._pool:
            return []
        evaluations = await self.evaluate(target, self._pool)
        kept = [(e.value, text) for e, text in zip(evaluations, self._pool, strict=True) if e]
        if not kept:
            raise InvalidResponse(
                f"none of the {len(self._pool)} initial pool texts could be scored by {self.name}",
                endpoint=self.name,
            )
        values = np.array([value for value, _ in kept])
        return _rank_values(values, [text for _, text in kept], self.higher_is_better, limit)

    async def details(self, target: RenderTarget, text: str) -> Evaluation | None:
        """Scored again from its cached render."""
        [evaluation] = await self.evaluate(target, [text])
        return evaluation

    async def evaluate(self, target: RenderTarget, texts: Sequence[str]) -> list[Evaluation | None]:
        return list(await asyncio.gather(*(self._one(target, text) for text in texts)))

    async def _one(self, target: RenderTarget, text: str) -> Evaluation | None:
        self._waiting += 1
        async with self._slots:
            self._waiting -= 1
            self._active += 1
            try:
                media = await self._render((text, target.reads_digest), target.inputs)
                scored = await self._retrier.call(self._scorer.score, media, text, target.inputs)
                terms = dict(scored)
                value = self._combine(terms)
            except InvalidResponse as exc:
                log.warning("text_unscorable", text=text[:80], error=str(exc))
                value, terms, media = math.nan, {}, b""
            finally:
                self._active -= 1
        if not math.isfinite(value):
            self._unscorable += 1
            return None
        return Evaluation(value, terms, Artefact(media, self._renderer.suffix))

    async def _render(self, key: _RenderKey, inputs: Mapping[str, bytes]) -> bytes:
        """The render for `key`: kept, being made for another ask (shared), or made here."""
        while (shared := self._renders.get(key)) is not None:
            self._renders.move_to_end(key)
            try:
                # Shielded: this ask being cancelled must not cancel a render others share.
                media = await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                continue  # the ask making it was cancelled, not this one: make it here
            self._hits += 1
            return media
        self._misses += 1
        self._evaluated += 1
        made: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._renders[key] = made
        try:
            media = await self._retrier.call(self._renderer.render, key[0], inputs)
        except BaseException as exc:
            if self._renders.get(key) is made:  # a failed render is not kept
                del self._renders[key]
            if isinstance(exc, asyncio.CancelledError):
                made.cancel()
            else:
                made.set_exception(exc)
                made.exception()  # retrieved here: no "never retrieved" warning without askers
            raise
        made.set_result(media)
        if self._renders.get(key) is made:
            self._kept_bytes += len(media)
            self._evict()
        return media

    def _evict(self) -> None:
        """Drop the least recently used finished renders until both bounds hold."""
        if len(self._renders) <= self._cache_size and self._kept_bytes <= self._cache_bytes:
            return
        finished = [key for key, render in self._renders.items() if render.done()]
        for key in finished:
            if len(self._renders) <= self._cache_size and self._kept_bytes <= self._cache_bytes:
                return
            self._kept_bytes -= len(self._renders.pop(key).result())

    def statistics(self) -> ObjectiveStatistics:
        """`texts_evaluated` and `cache_misses` count renders made; `cache_hits` asks
        answered by a kept render or one being made for another ask."""
        return ObjectiveStatistics(
            texts_evaluated=self._evaluated,
            unscorable=self._unscorable,
            in_flight=self._active,
            queued=self._waiting,
            cache_hits=self._hits,
            cache_misses=self._misses,
            cached=len(self._renders),
        )


def _digests(read: Sequence[bytes]) -> tuple[bytes, ...]:
    return tuple(hashlib.blake2b(data, digest_size=16).digest() for data in read)
