"""Objectives: how candidate texts get their values for one sample.

The scheduler knows one shape, `Objective`; every MILS task is one of two kinds:

    EmbeddingObjective   text and target embedded into one space, value = cosine
                         (image, video and audio captioning). Texts from every sample are
                         coalesced into batches, each unique text is embedded once per run,
                         the initial pool once per run, and the dot products run on the client.
    RenderThenScore      each text is rendered (text -> image, or an edit of an input image),
                         the media scored against the sample's inputs as named terms, and the
                         terms combined as the task declares (prompt enhancement: one term,
                         maximised; style transfer: style + content loss, minimised).

An objective is an async context manager entered once per run. Per run it gets the initial
pool (`set_pool`); per sample it prepares the target from the sample's raw inputs
(`prepare`), ranks the pool for it (`score_pool`) and evaluates batches of new texts
(`evaluate`). A text that cannot be scored comes back as None and is dropped alone.
"""

from __future__ import annotations

import asyncio
import math
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
    "Artefact",
    "EmbeddingObjective",
    "Evaluation",
    "Objective",
    "ObjectiveStatistics",
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

    async def score_pool(self, target: Any) -> list[Scored]:
        """The initial pool's values for this sample, best first (ties by text)."""
        ...

    async def evaluate(self, target: Any, texts: Sequence[str]) -> list[Evaluation | None]:
        """One value per text, in order; None where the text could not be scored."""
        ...

    def statistics(self) -> ObjectiveStatistics: ...


def _rank_values(values: np.ndarray, texts: Sequence[str], higher_is_better: bool) -> list[Scored]:
    """`texts` sorted by text, ranked by value with numpy; a stable sort keeps ties by text."""
    key = -values if higher_is_better else values
    order = np.argsort(key, kind="stable").tolist()
    listed = values.tolist()
    return [(listed[i], texts[i]) for i in order]


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

    async def score_pool(self, target: np.ndarray) -> list[Scored]:
        return _rank_values(self._pool_matrix @ target, self._pool_texts, self.higher_is_better)

    async def evaluate(self, target: np.ndarray, texts: Sequence[str]) -> list[Evaluation | None]:
        if not texts:
            return []
        scores = (await self._embeddings.embed(texts)) @ target
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


class RenderThenScore:
    """Render each text, score the media as named terms, combine them into one value.

    Args:
        renderer: text (+ the sample's inputs) -> media.
        scorer: media (+ text, inputs) -> named terms.
        combine: terms -> value (e.g. `WeightedSum({"style": 1000, "content": 1})`).
        higher_is_better: the direction of the combined value.
        in_flight: texts rendered and scored at once, across samples.
        retrier: the run's retry loop.
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
    ) -> None:
        self._renderer = renderer
        self._scorer = scorer
        self._combine = combine
        self.higher_is_better = higher_is_better
        self._slots = asyncio.Semaphore(in_flight)
        self._retrier = retrier
        self._pool: list[str] = []
        self._pool_set: frozenset[str] = frozenset()
        self._evaluated = self._unscorable = self._active = self._waiting = 0

    @property
    def name(self) -> str:
        return f"{self._scorer.name}({self._renderer.name})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def set_pool(self, pool: Sequence[str]) -> None:
        self._pool = sorted(pool)  # ties are broken by text, as `rank` does
        self._pool_set = frozenset(pool)

    @property
    def pool_texts(self) -> frozenset[str]:
        return self._pool_set

    async def prepare(self, inputs: Mapping[str, bytes]) -> Mapping[str, bytes]:
        return inputs

    async def score_pool(self, target: Mapping[str, bytes]) -> list[Scored]:
        evaluations = await self.evaluate(target, self._pool)
        kept = [(e.value, text) for e, text in zip(evaluations, self._pool, strict=True) if e]
        if not kept:
            raise InvalidResponse(
                f"none of the {len(self._pool)} initial pool texts could be scored by {self.name}",
                endpoint=self.name,
            )
        values = np.array([value for value, _ in kept])
        return _rank_values(values, [text for _, text in kept], self.higher_is_better)

    async def evaluate(
        self, target: Mapping[str, bytes], texts: Sequence[str]
    ) -> list[Evaluation | None]:
        return list(await asyncio.gather(*(self._one(target, text) for text in texts)))

    async def _one(self, inputs: Mapping[str, bytes], text: str) -> Evaluation | None:
        self._waiting += 1
        async with self._slots:
            self._waiting -= 1
            self._active += 1
            try:
                media = await self._retrier.call(self._renderer.render, text, inputs)
                terms = dict(await self._retrier.call(self._scorer.score, media, text, inputs))
                value = self._combine(terms)
            except InvalidResponse as exc:
                log.warning("text_unscorable", text=text[:80], error=str(exc))
                value, terms, media = math.nan, {}, b""
            finally:
                self._active -= 1
                self._evaluated += 1
        if not math.isfinite(value):
            self._unscorable += 1
            return None
        return Evaluation(value, terms, Artefact(media, self._renderer.suffix))

    def statistics(self) -> ObjectiveStatistics:
        return ObjectiveStatistics(
            texts_evaluated=self._evaluated,
            unscorable=self._unscorable,
            in_flight=self._active,
            queued=self._waiting,
        )
