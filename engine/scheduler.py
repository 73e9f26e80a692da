"""Runs many samples through the MILS loop in one event loop.

Each sample is a task in a `TaskGroup`; a window of `samples_in_flight` bounds how many run
at once, so memory follows the window and not the dataset. While one sample waits on the
generator, others score: generation and scoring overlap across samples. Generator calls go
through a per-endpoint limiter, text embeddings through the shared batcher and cache, and
every endpoint call through the one retry loop. Each finished step is committed to the store
before the sample plans its next one.

A sample fails alone: input errors, exhausted retries and unusable replies are recorded as
its reason and the run goes on. Configuration and store errors stop the run.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import structlog

from engine.config import ConcurrencyConfig, LoopConfig, RetryConfig
from engine.errors import ConfigError, InvalidResponse, MilsError, StoreError
from engine.optimizer import SampleOptimizer
from engine.progress import Progress
from engine.prompt import build_messages, parse_candidates
from engine.protocols import Generator, MediaReader, Scorer, TaskSpec
from engine.retry import Retrier
from engine.router import GeneratorRouter
from engine.scoring import TextEmbeddings, normalise
from engine.store import DONE, RunStore

__all__ = ["RunSummary", "Sample", "Scheduler"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    source: str


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run (or a resume) did."""

    samples: int
    done: int
    failed: int
    skipped: int
    """Already done before this run started (resume)."""
    steps: int
    wall_s: float
    candidates_scored: int
    texts_embedded: int
    generator_requests: int
    replies_without_candidates: int
    """Generator replies that held no new candidate (unparseable, or only texts already
    shown or scored); the step still counts."""
    texts_unscorable: int
    """Texts the scorer could not embed (NaN, wrong shape, rejected): dropped alone."""
    faults: dict[str, int]
    failures: list[tuple[str, str]] = field(default_factory=list)


class Scheduler:
    """Wires the pure loop to the endpoints and the store for one run."""

    def __init__(
        self,
        *,
        task: TaskSpec,
        loop: LoopConfig,
        concurrency: ConcurrencyConfig,
        retry: RetryConfig,
        generator: Generator | Sequence[Generator],
        scorer: Scorer,
        reader: MediaReader,
        store: RunStore,
        show_progress: bool = True,
    ) -> None:
        self._task = task
        self._loop = loop
        self._concurrency = concurrency
        self._scorer = scorer
        self._reader = reader
        self._store = store
        self._show_progress = show_progress
        self._retrier = Retrier(retry)
        generators = [generator] if not isinstance(generator, Sequence) else list(generator)
        self._router = GeneratorRouter(
            generators,
            limit=concurrency.generator_in_flight,
            cooldown_s=concurrency.generator_cooldown_s,
        )
        self._failures: list[tuple[str, str]] = []
        self._candidates_scored = self._empty_replies = 0

    async def run(self, samples: Sequence[Sample], pool: Sequence[str]) -> RunSummary:
        """Run every sample not yet done; return what happened."""
        finished = {row.id for row in self._store.samples() if row.status == DONE}
        todo = [sample for sample in samples if sample.id not in finished]
        progress = Progress(len(todo), enabled=self._show_progress)
        log.info("run_started", samples=len(samples), todo=len(todo), pool=len(pool))
        async with TextEmbeddings(self._scorer, self._concurrency, self._retrier) as embeddings:
            self._embeddings = embeddings  # NaN rows: texts the scorer could not embed
            async with asyncio.TaskGroup() as outer:
                # Samples read and embed their targets while the pool is being embedded.
                self._pool_task = outer.create_task(self._embed_pool(pool) if todo else _noop())
                ticker = outer.create_task(progress.run(self._gauges))
                try:
                    await self._run_all(todo, progress)
                finally:
                    ticker.cancel()
            stats = embeddings.statistics()
        snap = progress.snapshot()
        summary = RunSummary(
            samples=len(samples),
            done=snap.done + len(finished),
            failed=snap.failed,
            skipped=len(finished),
            steps=snap.steps,
            wall_s=snap.elapsed_s,
            candidates_scored=self._candidates_scored,
            texts_embedded=stats.texts_embedded,
            generator_requests=sum(stat.completed for stat in self._router.statistics()),
            replies_without_candidates=self._empty_replies,
            texts_unscorable=stats.invalid,
            faults=self._retrier.statistics().faults,
            failures=list(self._failures),
        )
        log.info("run_finished", **{k: v for k, v in asdict(summary).items() if k != "failures"})
        return summary

    async def _embed_pool(self, pool: Sequence[str]) -> None:
        """Embed the initial pool once for the whole run; unscorable texts are dropped."""
        matrix = await self._embeddings.embed(pool)
        valid = ~np.isnan(matrix[:, 0]) if len(pool) else np.zeros(0, dtype=bool)
        if not valid.any():
            raise ConfigError(
                f"none of the {len(pool)} initial pool texts could be embedded by "
                f"{self._scorer.name}; check the scorer model or pass another --init-pool"
            )
        if not valid.all():
            log.warning("pool_texts_dropped", dropped=int((~valid).sum()), kept=int(valid.sum()))
        # Sorted by text, so that a stable sort by score breaks ties by text, as `rank` does.
        order = sorted(np.flatnonzero(valid).tolist(), key=pool.__getitem__)
        self._pool_texts = [pool[i] for i in order]
        self._pool_set = frozenset(pool)
        self._pool_matrix = matrix[order]

    async def _run_all(self, samples: Sequence[Sample], progress: Progress) -> None:
        window = asyncio.Semaphore(self._concurrency.samples_in_flight)
        async with asyncio.TaskGroup() as group:
            for sample in samples:
                await window.acquire()  # backpressure: no task exists beyond the window
                group.create_task(self._guarded(sample, window, progress), name=sample.id)

    def _gauges(self) -> dict[str, int]:
        gen = self._router.statistics()
        emb = self._embeddings.statistics()
        return {
            "gen_in_flight": sum(stat.in_flight for stat in gen),
            "gen_limit": sum(stat.limit for stat in gen),
            "gen_waiting": sum(stat.waiting for stat in gen),
            "score_batches_in_flight": emb.batches_in_flight,
            "score_queued": emb.queued,
        }

    async def _guarded(self, sample: Sample, window: asyncio.Semaphore, progress: Progress) -> None:
        try:
            with structlog.contextvars.bound_contextvars(sample_id=sample.id):
                await self._run_sample(sample, progress)
            progress.sample_finished(ok=True)
        except (ConfigError, StoreError):
            raise  # the whole run cannot go on
        except Exception as exc:  # one bad sample never takes down the run
            reason = str(exc) if isinstance(exc, MilsError) else f"internal error: {exc!r}"
            if sample.source not in reason:
                reason = f"{sample.source}: {reason}"
            if not isinstance(exc, MilsError):
                log.exception("sample_crashed", sample_id=sample.id)
            log.warning("sample_failed", sample_id=sample.id, source=sample.source, error=reason)
            self._failures.append((sample.id, reason))
            await asyncio.to_thread(self._store.finish_sample, sample.id, error=reason)
            progress.sample_finished(ok=False)
        finally:
            window.release()

    async def _run_sample(self, sample: Sample, progress: Progress) -> None:
        committed = await asyncio.to_thread(self._store.progress, sample.id)
        optimizer = SampleOptimizer(
            sample.id, self._loop, higher_is_better=self._task.higher_is_better
        )
        data = await self._reader.read(sample.source)
        raw_target = await self._retrier.call(self._scorer.embed_target, data)
        await asyncio.shield(self._pool_task)
        target = self._check_target(raw_target)
        initial = [] if committed.last is not None else self._ranked_pool(target)
        optimizer.restore(
            committed.last,
            initial=initial,
            initial_texts=self._pool_set,
            scored_texts=committed.scored_texts,
            best_history=committed.best_history,
        )
        while not optimizer.done:
            plan = optimizer.plan_step()
            # One attempt per try; a retry may land on another endpoint.
            reply = await self._retrier.call(
                self._router.complete,
                build_messages(self._task, plan.shown, self._loop.requested),
            )
            parsed = parse_candidates(reply)
            if not parsed:
                log.info("no_candidates_parsed", step=plan.step, reply_head=reply[:200])
            fresh = optimizer.accept(plan, parsed)
            self._empty_replies += not fresh
            new: list[tuple[str, float]] = []
            if fresh:
                scores = (await self._embeddings.embed(fresh)) @ target
                pairs = zip(fresh, scores.tolist(), strict=True)
                new = [(text, score) for text, score in pairs if math.isfinite(score)]
                if len(new) < len(fresh):
                    log.warning(
                        "candidates_unscorable", step=plan.step, dropped=len(fresh) - len(new)
                    )
            record = optimizer.commit(plan, new)
            await asyncio.to_thread(self._store.commit_step, sample.id, record)
            self._candidates_scored += len(new)
            progress.step_committed()
            log.debug(
                "step_committed",
                step=record.step,
                best=round(record.best[0], 4),
                new=len(new),
                parsed=len(parsed),
            )
        await asyncio.to_thread(self._store.finish_sample, sample.id)

    def _ranked_pool(self, target: np.ndarray) -> list[tuple[float, str]]:
        """The initial pool scored against `target`, in `rank` order (numpy, not Python)."""
        scores = self._pool_matrix @ target
        key = -scores if self._task.higher_is_better else scores
        order = np.argsort(key, kind="stable").tolist()
        values, texts = scores.tolist(), self._pool_texts
        return [(values[i], texts[i]) for i in order]

    def _check_target(self, raw: np.ndarray) -> np.ndarray:
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


async def _noop() -> None:
    """Stands in for the pool embedding when every sample is already done."""
