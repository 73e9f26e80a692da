"""The published MILS loop's structure, as the baseline the engine is measured against.

What it keeps of the published implementation (and what makes it slow):
- samples go in groups of 16 (its local batch); groups run one after another;
- per group and step, it generates for all 16 samples (concurrently), *then* scores them
  all: generation and scoring strictly alternate, one side always idle;
- the initial pool is embedded again for every sample (no cache), one batch at a time;
- each step re-embeds the previous top `keep` together with the new candidates.

It uses the same adapters (any `Generator`, any `Scorer`) and the engine's pure pieces
(`SampleOptimizer`, `build_messages`, `parse_candidates`), so the only differences from the
engine are the schedule and the caching. It counts every text it sends to the scorer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mils.engine.config import LoopConfig
from mils.engine.optimizer import SampleOptimizer, StepPlan
from mils.engine.prompt import build_messages, parse_candidates
from mils.engine.protocols import Generator, Scorer, TaskSpec
from mils.engine.scoring import normalise

__all__ = ["GROUP_SIZE", "BaselineResult", "run_baseline"]

GROUP_SIZE = 16
"""The published loop's local batch of samples."""


@dataclass(frozen=True, slots=True)
class BaselineResult:
    """What a baseline run did."""

    samples: int
    steps: int
    """Sample-steps committed."""
    wall_s: float
    text_encodes: int
    """Texts sent to the scorer (repeats included: there is no cache)."""
    target_encodes: int
    generator_requests: int
    best_scores: list[float]


@dataclass(slots=True)
class _Counters:
    texts: int = 0
    targets: int = 0
    requests: int = 0


class _Baseline:
    def __init__(
        self, task: TaskSpec, loop: LoopConfig, generator: Generator, scorer: Scorer
    ) -> None:
        self.task, self.loop, self.generator, self.scorer = task, loop, generator, scorer
        self.batch = max(1, scorer.max_batch_size)
        self.count = _Counters()

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One batch at a time, nothing cached (the published scoring call)."""
        parts = []
        for start in range(0, len(texts), self.batch):
            chunk = texts[start : start + self.batch]
            parts.append(normalise(await self.scorer.embed_texts(chunk), endpoint="baseline"))
            self.count.texts += len(chunk)
        return np.concatenate(parts)

    async def start(
        self, sample_id: str, target: bytes, pool: Sequence[str]
    ) -> tuple[SampleOptimizer, np.ndarray]:
        """Embed the target and the whole initial pool for this one sample."""
        raw = await self.scorer.embed_target(target)
        self.count.targets += 1
        vector = normalise(np.asarray(raw).reshape(1, -1), endpoint="baseline")[0]
        scores = await self.embed_texts(pool) @ vector
        optimizer = SampleOptimizer(sample_id, self.loop, higher_is_better=True)
        optimizer.start(list(zip(scores.tolist(), pool, strict=True)), frozenset(pool))
        return optimizer, vector

    async def generate(self, plan: StepPlan) -> str:
        self.count.requests += 1
        reply = await self.generator.complete(
            build_messages(self.task, plan.shown, self.loop.requested)
        )
        return reply.text

    async def score_step(
        self, optimizer: SampleOptimizer, vector: np.ndarray, plan: StepPlan, reply: str
    ) -> None:
        """Re-embed the previous top `keep` with the new candidates, then commit."""
        fresh, _ = optimizer.accept(plan, parse_candidates(reply))
        kept = [text for _, text in plan.kept]
        scores = (await self.embed_texts(kept + fresh)) @ vector
        new = list(zip(fresh, scores[len(kept) :].tolist(), strict=True))
        optimizer.commit(plan, new)

    async def group(self, group: Sequence[tuple[str, bytes]], pool: Sequence[str]) -> list[float]:
        started = [await self.start(sid, target, pool) for sid, target in group]
        for _ in range(self.loop.steps):
            plans = [optimizer.plan_step() for optimizer, _ in started]
            replies = await asyncio.gather(*(self.generate(plan) for plan in plans))
            for (optimizer, vector), plan, reply in zip(started, plans, replies, strict=True):
                await self.score_step(optimizer, vector, plan, reply)
        return [optimizer.pool[0][0] for optimizer, _ in started]


async def run_baseline(
    *,
    task: TaskSpec,
    loop: LoopConfig,
    generator: Generator,
    scorer: Scorer,
    samples: Sequence[tuple[str, bytes]],
    pool: Sequence[str],
    group_size: int = GROUP_SIZE,
) -> BaselineResult:
    """Run `samples` ((id, target bytes)) through the published loop structure.

    `patience` is ignored: every sample runs `loop.steps` steps, as the published loop does.
    """
    baseline = _Baseline(task, loop, generator, scorer)
    began = time.monotonic()
    best: list[float] = []
    for start in range(0, len(samples), group_size):
        best += await baseline.group(samples[start : start + group_size], pool)
    return BaselineResult(
        samples=len(samples),
        steps=len(samples) * loop.steps,
        wall_s=time.monotonic() - began,
        text_encodes=baseline.count.texts,
        target_encodes=baseline.count.targets,
        generator_requests=baseline.count.requests,
        best_scores=best,
    )
