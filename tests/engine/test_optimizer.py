"""The per-sample MILS state machine: ranking, exploration, dedupe, merge, restore."""

from __future__ import annotations

import random

import pytest

from mils.engine.config import LoopConfig
from mils.engine.optimizer import SampleOptimizer, rank

POOL = [(0.1 * i, f"text {i}") for i in range(10)]  # text 9 is best


def make(**loop: object) -> SampleOptimizer:
    opt = SampleOptimizer("s1", LoopConfig(**loop))  # type: ignore[arg-type]
    opt.start(POOL, frozenset(text for _, text in POOL))
    return opt


def test_rank_is_best_first_and_breaks_ties_by_text() -> None:
    """Ranking never depends on arrival order."""
    assert rank([(0.5, "b"), (0.9, "z"), (0.5, "a")]) == [(0.9, "z"), (0.5, "a"), (0.5, "b")]
    assert rank([(0.5, "b"), (0.1, "a")], higher_is_better=False)[0] == (0.1, "a")


def test_rank_orders_by_score_then_text_whatever_the_arrival_order() -> None:
    """Any shuffle of a pool with many tied scores ranks to (score, text) order, either way."""
    rng = random.Random(7)
    tied = [0.1, 0.2, -0.0, 0.0, 0.3]
    pool = [(rng.choice(tied), f"t{rng.randrange(10**6)}") for _ in range(300)]
    pool += [(rng.random(), f"u{i}") for i in range(300)]
    for _ in range(5):
        rng.shuffle(pool)
        assert rank(pool) == sorted(pool, key=lambda e: (-e[0], e[1]))
        assert rank(pool, higher_is_better=False) == sorted(pool, key=lambda e: (e[0], e[1]))


def test_plan_keeps_top_keep() -> None:
    """Without exploration the prompt shows exactly the top `keep`."""
    plan = make(keep=3).plan_step()
    assert [t for _, t in plan.shown] == ["text 9", "text 8", "text 7"]
    assert plan.kept == plan.shown and plan.step == 1


def test_without_exploration_a_sample_holds_only_what_a_step_can_show() -> None:
    """The initial pool is cut to the top `keep` (or `top_k`); with exploration, kept whole."""
    assert [t for _, t in make(keep=3, top_k=2).pool] == ["text 9", "text 8", "text 7"]
    assert len(make(keep=3, top_k=5).pool) == 5
    assert len(make(keep=3, exploration=0.5).pool) == len(POOL)


def test_exploration_swaps_a_fraction_for_random_rest_deterministically() -> None:
    """exploration=0.5 of keep=4 replaces 2 shown slots with picks from outside the top 4."""
    a, b = make(keep=4, exploration=0.5).plan_step(), make(keep=4, exploration=0.5).plan_step()
    shown = [t for _, t in a.shown]
    assert shown[:2] == ["text 9", "text 8"]
    assert all(t not in {"text 9", "text 8", "text 7", "text 6"} for t in shown[2:])
    assert a == b  # same (seed, sample, step) -> same picks
    other_seed = SampleOptimizer("s1", LoopConfig(keep=4, exploration=0.5, seed=1))
    other_seed.start(POOL, frozenset())
    assert [t for _, t in a.kept] == [t for _, t in other_seed.plan_step().kept]


def test_accept_drops_shown_scored_and_duplicates() -> None:
    """Only never-scored, unseen texts are worth scoring."""
    opt = make(keep=2, requested=2)
    plan = opt.plan_step()
    fresh = opt.accept(plan, ["text 9", "text 0", "new a", "new a", "new b", "new c"])
    assert fresh == (["new a", "new b", "new c"], 0)


def test_extra_lines_are_all_scored_up_to_the_limit() -> None:
    """13 new lines for 10 asked: all 13 are kept; past the limit (4x) the rest is counted."""
    opt = make(keep=2, requested=10)
    lines = [f"new {i}" for i in range(13)]
    assert opt.accept(opt.plan_step(), lines) == (lines, 0)
    many = [f"more {i}" for i in range(45)]
    assert opt.accept(opt.plan_step(), many) == (many[:40], 5)
    tight = make(keep=2, requested=2, candidate_limit=3)
    assert tight.accept(tight.plan_step(), lines) == (lines[:3], 10)


def test_commit_merges_new_with_kept_and_records_the_step() -> None:
    """The pool after a step is previous top `keep` plus the new candidates, ranked."""
    opt = make(keep=2, top_k=2)
    plan = opt.plan_step()
    record = opt.commit(plan, [("new best", 2.0), ("new worst", -1.0)])
    assert record.step == 1 and opt.step == 1
    assert record.best == (2.0, "new best")
    assert record.mean_top_k == pytest.approx((2.0 + 0.9) / 2)
    assert [t for _, t in record.pool] == ["new best", "text 9", "text 8", "new worst"]
    assert opt.has_scored("new worst")
    assert opt.accept(opt.plan_step(), ["new worst"]) == ([], 0)


def test_commit_with_no_new_candidates_keeps_the_pool() -> None:
    """A step whose reply had nothing usable is still a step; the best carries over."""
    opt = make(keep=3)
    record = opt.commit(opt.plan_step(), [])
    assert record.best == (pytest.approx(0.9), "text 9") and record.new == ()


def test_done_after_steps() -> None:
    """A sample is done once `steps` steps are committed."""
    opt = make(steps=2)
    for _ in range(2):
        assert not opt.done
        opt.commit(opt.plan_step(), [])
    assert opt.done


def test_patience_stops_when_best_stalls() -> None:
    """With patience 2 the sample stops after two steps without a better best."""
    opt = make(steps=10, patience=2)
    opt.commit(opt.plan_step(), [("up", 5.0)])
    opt.commit(opt.plan_step(), [("lower", 1.0)])
    assert not opt.done
    opt.commit(opt.plan_step(), [("lower still", 0.5)])
    assert opt.done and opt.step == 3


def test_minimising_objective_ranks_low_first() -> None:
    """Tasks with a loss objective keep the lowest scores."""
    opt = SampleOptimizer("s", LoopConfig(keep=2), higher_is_better=False)
    opt.start(POOL, frozenset())
    assert [t for _, t in opt.plan_step().kept] == ["text 0", "text 1"]


def test_restore_continues_exactly_where_the_last_commit_left() -> None:
    """A restored optimizer plans the same next step as one that never stopped."""
    live = make(keep=3, exploration=0.34)
    records = [live.commit(live.plan_step(), [(f"n{i}", 0.05 * i)]) for i in range(3)]
    resumed = SampleOptimizer("s1", LoopConfig(keep=3, exploration=0.34))
    resumed.restore(
        records[-1],
        initial=[],
        initial_texts=frozenset(t for _, t in POOL),
        scored_texts=["n0", "n1", "n2"],
        best_history=[r.best[0] for r in records],
    )
    assert resumed.step == 3
    assert resumed.plan_step() == live.plan_step()
    assert resumed.has_scored("n1") and resumed.has_scored("text 4")


def test_empty_initial_pool_is_refused() -> None:
    """Starting from nothing is a clear error, not an IndexError later."""
    with pytest.raises(ValueError, match="initial pool is empty"):
        SampleOptimizer("s", LoopConfig()).start([], frozenset())


def test_committing_a_stale_plan_is_refused() -> None:
    """A plan committed twice would duplicate a step; it is refused."""
    opt = make()
    plan = opt.plan_step()
    opt.commit(plan, [])
    with pytest.raises(ValueError, match="committed after step 1"):
        opt.commit(plan, [])
