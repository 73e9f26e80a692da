"""What a run on Ray divides among its workers, and the settings it refuses (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

import mils
from mils._config import RunConfig
from mils._ray import RaySettings, _budget_share, _handed_on, _pauses_to_share, shared
from mils.engine.config import Budget, ConcurrencyConfig, LoopConfig
from mils.engine.limiter import LimiterStatistics
from mils.engine.usage import Usage


def config(**budget: float) -> RunConfig:
    return RunConfig(
        task="image-caption",
        loop=LoopConfig(steps=2),
        concurrency=ConcurrencyConfig(samples_in_flight=10, generator_in_flight=9),
        generator=(
            mils.GeneratorSettings(base_url="http://a/v1", model="m", rpm=100, tpm=None),
            mils.GeneratorSettings(base_url="http://b/v1", model="m"),
        ),
        budget=Budget(price_in=1.0, price_out=2.0, **budget),  # type: ignore[arg-type]
    )


def test_fixed_limits_and_rates_are_divided_rounding_up() -> None:
    part = shared(config(), 3)
    assert part.concurrency.samples_in_flight == 4
    assert part.concurrency.generator_in_flight == 3
    assert [g.rpm for g in part.generator] == [34, None]
    assert part.loop == config().loop


def test_the_budget_left_is_divided_so_the_workers_together_stay_within_it() -> None:
    """Each worker counts from the spend when the run started; their shares of what is left
    add up to no more than it."""
    spent = Usage(requests=40, prompt_tokens=400_000, completion_tokens=100_000)
    whole = config(max_requests=100, max_tokens_total=1_100_000, max_cost=1.6)
    part = _budget_share(whole.budget, 3, spent)
    assert part.max_requests == 60  # 40 + 60 / 3
    assert part.max_tokens_total == 700_000  # 500,000 + 600,000 / 3
    assert part.max_cost == pytest.approx(0.6 + 1.0 / 3)  # 0.6 spent
    spent_out = _budget_share(config(max_requests=30).budget, 2, spent)
    assert spent_out.max_requests == 40  # nothing left: each worker stops at once


def test_what_an_ended_shard_left_of_its_budget_goes_to_those_still_running() -> None:
    """Three workers from a spend of 40 requests: the first ends having spent 5 of its 20;
    the 15 left go 7 and 7 to the other two (rounded down), tokens and cost likewise, and
    the three together stay within the run's limits."""
    before = Usage(requests=40, prompt_tokens=400_000, completion_tokens=100_000)
    whole = config(max_requests=100, max_tokens_total=1_100_000, max_cost=1.6)
    budgets = [_budget_share(whole.budget, 3, before)] * 3
    spent = before + Usage(requests=5, prompt_tokens=50_000, completion_tokens=10_000)
    grown = _handed_on(budgets, 0, spent, [1, 2])
    assert grown[0] == budgets[0]
    assert grown[1] == grown[2]
    assert grown[1].max_requests == 60 + 7  # 60 - 45 left, halved, rounded down
    assert grown[1].max_tokens_total == 700_000 + 70_000  # 700,000 - 560,000, halved
    left_cost = budgets[0].max_cost - (0.6 + 0.05 + 0.02)  # type: ignore[operator]
    assert grown[1].max_cost == pytest.approx(budgets[1].max_cost + left_cost / 2)
    used = 5 + 2 * (grown[1].max_requests - 40)  # each of the two spends all it may
    assert 40 + used <= 100
    overspent = _handed_on(budgets, 0, before + Usage(requests=30), [1, 2])
    assert overspent[1].max_requests == 60  # nothing left to hand on


def test_no_budget_limit_hands_nothing_on() -> None:
    budgets = [config().budget] * 2
    assert _handed_on(budgets, 0, Usage(requests=9), [1]) == budgets


def limiter(endpoint: str, paused_until: float | None) -> LimiterStatistics:
    return LimiterStatistics(
        endpoint=endpoint, limit=8, adaptive=True, in_flight=0, waiting=0, completed=0,
        overloads=0, peak_in_flight=0, latency_s=None, paused_until=paused_until,
    )  # fmt: skip


def test_a_pause_one_worker_met_is_shared_with_those_it_would_end_sooner_for() -> None:
    """Worker 0 is paused on "a" until 100; worker 1 until 99.8 (its own 429, within the
    slack), worker 2 not at all, worker 3 has not answered: only worker 2 is paused. A
    pause shared before is not shared again; a longer one is."""
    workers = [
        [limiter("a", 100.0), limiter("b", None)],
        [limiter("a", 99.8), limiter("b", None)],
        [limiter("a", None), limiter("b", None)],
        [],
    ]
    assert _pauses_to_share(workers, {}) == [("a", 100.0, [2])]
    assert _pauses_to_share(workers, {"a": 100.0}) == []
    workers[1][0] = limiter("a", 130.0)
    assert _pauses_to_share(workers, {"a": 100.0}) == [("a", 130.0, [0, 2])]
    assert _pauses_to_share([[limiter("a", None)], [limiter("a", None)]], {}) == []


def test_one_worker_keeps_the_run_settings() -> None:
    assert shared(config(max_requests=5), 1) == config(max_requests=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"actors": 0}, "ray actors must be >= 1"),
        ({"address": "ray://head:10001"}, r"Ray Client \(ray://\)"),
        ({"max_restarts": -1}, "max_restarts must be >= 0"),
    ],
)
def test_bad_settings_are_refused_naming_them(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(mils.ConfigError, match=message):
        RaySettings(**kwargs)  # type: ignore[arg-type]


async def test_a_run_with_generator_objects_is_refused_on_ray(tmp_path: Path) -> None:
    """Workers build their own endpoints from settings: objects cannot go to them; the
    refusal comes before anything is written."""

    class Generator:
        endpoint = "mine"
        prompt_mode = "chat"

    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    run = mils.open_run(
        "image-caption",
        [image],
        generator=[Generator()],  # type: ignore[list-item]
        scorer=mils.ScorerSettings(url="127.0.0.1:1"),
        out=tmp_path / "run",
        ray=RaySettings(address="local"),
    )
    with pytest.raises(mils.ConfigError, match="from settings: pass `generator`"):
        async with run:
            pass
    assert not (tmp_path / "run" / "run.db").exists()
