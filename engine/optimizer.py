"""The per-sample MILS state machine. Pure: no I/O, no clock, no global randomness.

One `SampleOptimizer` per sample walks the loop of DESIGN.md:

    start(initial pool scores)
    while not done:
        plan = plan_step()            # rank, keep top `keep`, explore, what to show
        texts, over = accept(plan, parsed)  # drop shown, already scored, duplicates
        record = commit(plan, scores) # merge new with previous top `keep`, record step

The scheduler does the I/O between the calls. Everything needed to continue a sample
after a crash is in its last `StepRecord` plus the texts it has scored (`restore`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import eq, itemgetter

from mils.engine.config import LoopConfig

__all__ = ["SampleOptimizer", "Scored", "StepPlan", "StepRecord", "rank"]

Scored = tuple[float, str]
"""A pool entry: (score, text)."""


_score = itemgetter(0)
_text = itemgetter(1)


def rank(pool: Iterable[Scored], *, higher_is_better: bool = True) -> list[Scored]:
    """Best first; ties broken by text so that ranking never depends on arrival order.

    Sorted by C-level keys, not a key function building a tuple per entry: every sample
    ranks its initial pool (thousands of entries), which made this a large share of the
    engine's CPU per step. Lower is better: the entries' own order, (score, text). Higher:
    by score, descending; only when two scores tie, again by text first (both sorts are
    stable, so the second keeps text order among equal scores).
    """
    if not higher_is_better:
        return sorted(pool)
    ranked = sorted(pool, key=_score, reverse=True)
    scores = list(map(_score, ranked))
    if any(map(eq, scores, islice(scores, 1, None))):
        ranked.sort(key=_text)
        ranked.sort(key=_score, reverse=True)
    return ranked


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step shows the generator."""

    step: int
    """1-based number of the step being planned."""
    kept: tuple[Scored, ...]
    """Top `keep` of the pool, best first: carried into the merge."""
    shown: tuple[Scored, ...]
    """Candidates rendered into the prompt (`kept` with exploration swaps)."""


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One finished step, as committed to the store."""

    step: int
    best: Scored
    mean_top_k: float
    new: tuple[tuple[str, float], ...]
    """Every new candidate scored this step, (text, score), in reply order."""
    pool: tuple[Scored, ...]
    """The pool after the merge (what the next step ranks)."""


@dataclass(slots=True)
class SampleOptimizer:
    """State of one sample's optimisation."""

    sample_id: str
    config: LoopConfig
    higher_is_better: bool = True
    step: int = 0
    """Steps committed so far."""
    pool: list[Scored] = field(default_factory=list)
    """Ranked, best first (`start` ranks it, `commit` merges it ranked); of the initial
    pool, only what a step can show."""
    best_history: list[float] = field(default_factory=list)
    _scored_shared: frozenset[str] = frozenset()
    _scored_own: set[str] = field(default_factory=set)

    # -- lifecycle ----------------------------------------------------------------

    def start(self, initial: Sequence[Scored], initial_texts: frozenset[str]) -> None:
        """Begin from the scored initial pool; `initial_texts` may be shared across samples."""
        if not initial:
            raise ValueError(f"sample {self.sample_id!r}: the initial pool is empty")
        ranked = rank(initial, higher_is_better=self.higher_is_better)
        # Holding no more than is ever read keeps a sample's memory, and the garbage
        # collector's work, at the size of its window rather than of the initial pool.
        self.pool = ranked[: self.config.window]
        self._scored_shared = initial_texts

    def restore(
        self,
        last: StepRecord | None,
        *,
        initial: Sequence[Scored],
        initial_texts: frozenset[str],
        scored_texts: Iterable[str],
        best_history: Sequence[float],
    ) -> None:
        """Continue after the committed step `last` (None: nothing committed yet)."""
        self.start(initial if last is None else last.pool, initial_texts)
        self.step = 0 if last is None else last.step
        self._scored_own = set(scored_texts)
        self.best_history = list(best_history)

    @property
    def done(self) -> bool:
        """True once `steps` steps are committed or patience ran out."""
        return self.step >= self.config.steps or self._out_of_patience()

    def _out_of_patience(self) -> bool:
        patience = self.config.patience
        if patience is None or len(self.best_history) <= patience:
            return False
        better = max if self.higher_is_better else min
        before = better(self.best_history[:-patience])
        recent = better(self.best_history[-patience:])
        improved = recent > before if self.higher_is_better else recent < before
        return not improved

    # -- one step -----------------------------------------------------------------

    def plan_step(self) -> StepPlan:
        """Keep the top `keep` of the (ranked) pool, swap in exploration picks."""
        keep = self.config.keep
        kept, rest = self.pool[:keep], self.pool[keep:]
        shown = list(kept)
        swaps = min(round(self.config.exploration * len(kept)), len(rest))
        if swaps:
            rng = random.Random(self._seed(self.step + 1))
            shown[len(shown) - swaps :] = rng.sample(rest, swaps)
        return StepPlan(step=self.step + 1, kept=tuple(kept), shown=tuple(shown))

    def accept(self, plan: StepPlan, parsed: Iterable[str]) -> tuple[list[str], int]:
        """The parsed texts worth scoring (not shown, never scored, not repeated), up to
        the loop's candidate limit, and how many the limit left out."""
        shown = {text for _, text in plan.shown}
        fresh: list[str] = []
        seen: set[str] = set()
        for text in parsed:
            if text in shown or text in seen or self.has_scored(text):
                continue
            seen.add(text)
            fresh.append(text)
        limit = self.config.max_new
        return fresh[:limit], max(0, len(fresh) - limit)

    def commit(self, plan: StepPlan, new: Sequence[tuple[str, float]]) -> StepRecord:
        """Merge the scored new candidates with the kept ones and record the step."""
        if plan.step != self.step + 1:
            raise ValueError(f"plan for step {plan.step} committed after step {self.step}")
        self._scored_own.update(text for text, _ in new)
        merged = rank(
            [*plan.kept, *((score, text) for text, score in new)],
            higher_is_better=self.higher_is_better,
        )
        self.pool = merged
        self.step = plan.step
        best = merged[0]
        self.best_history.append(best[0])
        return StepRecord(
            step=self.step,
            best=best,
            mean_top_k=self._mean_top_k(merged),
            new=tuple(new),
            pool=tuple(merged),
        )

    def initial_record(self, own: Sequence[tuple[str, float]] = ()) -> StepRecord:
        """Step 0: where the initial pool left the sample (best, mean of top K), so that
        what the loop gained over the best of the pool can be read from the run. `own`:
        the sample's own first candidates (its text inputs), (text, score), recorded as
        step 0's new candidates."""
        return StepRecord(
            step=0,
            best=self.pool[0],
            mean_top_k=self._mean_top_k(self.pool),
            new=tuple(own),
            pool=(),
        )

    def _mean_top_k(self, ranked: Sequence[Scored]) -> float:
        top = ranked[: self.config.top_k]
        return sum(score for score, _ in top) / len(top)

    def has_scored(self, text: str) -> bool:
        return text in self._scored_own or text in self._scored_shared

    def _seed(self, step: int) -> int:
        key = f"{self.config.seed}:{self.sample_id}:{step}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
