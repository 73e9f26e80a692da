"""The hand-written loop (the engine's honest peer) on real load-model servers: its counts
and its shape, checked against the servers' own accounting (never its speed)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.hand_loop import TRIES, HandEndpoint, HandResult, run_hand_loop
from benchmarks.llm_server import LLMCostModel, LLMFaults, LoadLLMServer
from benchmarks.run import format_table, run_scenario, summarise_hand
from benchmarks.scenarios import SCENARIOS, make_pool, make_targets, quick
from benchmarks.scorer_server import IMAGE_MODEL, TEXT_MODEL, LoadScorerServer
from mils.engine.config import LoopConfig
from mils.tasks import IMAGE_CAPTION

pytestmark = pytest.mark.integration

COST = LLMCostModel(capacity=4, prefill_ms=20, decode_tokens_per_s=50_000)
LOOP = LoopConfig(steps=2, keep=8, requested=8)
SAMPLES, POOL = 6, 100


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadScorerServer]:
    """A load-model Triton (text and image models, max_batch_size 64)."""
    with LoadScorerServer(workdir=tmp_path_factory.mktemp("triton")) as server:
        yield server


async def _run(
    llm: LoadLLMServer, scorer: LoadScorerServer, *, in_flight: int, passes: int = 1
) -> HandResult:
    return await run_hand_loop(
        task=IMAGE_CAPTION,
        loop=LOOP,
        endpoints=[HandEndpoint(llm.base_url, llm.cost.model)],
        triton_url=scorer.grpc_url,
        text_model=TEXT_MODEL,
        target_model=IMAGE_MODEL,
        samples=make_targets(SAMPLES),
        pool=make_pool(POOL),
        in_flight=in_flight,
        passes=passes,
    )


async def test_hand_loop_does_every_step_embeds_the_pool_once_and_honours_its_semaphore(
    scorer: LoadScorerServer,
) -> None:
    """Every sample runs every step with one chat request each, the servers count exactly the
    requests and texts the loop counts (the pool once), and no more chat requests are in
    flight than the semaphore allows."""
    with LoadLLMServer(cost=COST) as llm:
        texts_before = scorer.stats()[TEXT_MODEL].items
        result = await _run(llm, scorer, in_flight=2)
        stats = llm.stats()
    assert (result.samples, result.failed, result.passes) == (SAMPLES, 0, 1)
    assert result.steps == SAMPLES * LOOP.steps
    assert result.generator_requests == stats["requests"] == SAMPLES * LOOP.steps
    assert result.retries == result.wasted_steps == 0
    assert stats["peak_concurrency"] <= 2
    assert result.text_encodes == scorer.stats()[TEXT_MODEL].items - texts_before
    # the pool once, then at most `max_new` new candidates per sample-step
    assert POOL < result.text_encodes <= POOL + SAMPLES * LOOP.steps * LOOP.max_new
    assert POOL < result.unique_texts <= result.text_encodes
    assert sorted(result.best_scores) == [sid for sid, _ in make_targets(SAMPLES)]
    assert all(-1.0 <= score <= 1.0 for score in result.best_scores.values())


async def test_hand_loop_gives_up_after_its_tries_and_reruns_failed_samples(
    scorer: LoadScorerServer,
) -> None:
    """Against a server that answers every chat request 500, each sample's first call is
    tried `TRIES` times per pass, then the sample fails; nothing counts as done."""
    with LoadLLMServer(cost=COST, faults=LLMFaults(error_rate=1.0)) as llm:
        result = await _run(llm, scorer, in_flight=4, passes=2)
        stats = llm.stats()
    assert (result.failed, result.passes, result.steps, result.wasted_steps) == (SAMPLES, 2, 0, 0)
    assert result.generator_requests == stats["failed"] == 2 * SAMPLES * TRIES
    assert result.retries == 2 * SAMPLES * (TRIES - 1)
    assert stats["requests"] == 0
    assert len(result.errors) == min(5, SAMPLES) and "InternalServerError" in result.errors[0]


def test_scenario_reports_the_engine_over_each_hand_run(tmp_path: Path) -> None:
    """A scenario with hand-loop runs at the servers' capacity and at a given size reports
    each beside the engine, with its ratio in the JSON, the table and the summary."""
    base = quick(next(s for s in SCENARIOS if s.name == "capacity-unknown"))
    scenario = dataclasses.replace(base, samples=6, pool=64, hand=(None, 2))
    report = run_scenario(scenario, tmp_path)
    assert json.loads((tmp_path / "capacity-unknown.json").read_text()) == json.loads(
        json.dumps(report)
    )
    runs = {run["runner"]: run for run in report["runs"]}
    assert list(runs) == ["engine", "hand", "hand@2"]
    assert runs["hand"]["extra"]["in_flight"] == scenario.llm.capacity
    assert runs["hand@2"]["extra"]["in_flight"] == 2
    for name in ("hand", "hand@2"):
        run = runs[name]
        assert run["steps"] == 6 * scenario.steps and run["extra"]["failed"] == 0
        assert 0 < run["lower_bound_s"] <= run["wall_s"] and 0 < run["efficiency"] <= 1
        assert report["engine_over_hand"][name] == pytest.approx(
            runs["engine"]["steps_per_s"] / run["steps_per_s"]
        )
    table = format_table([report])
    assert "engine / hand" in table.splitlines()[0]
    assert f"{report['engine_over_hand']['hand@2']:.2f}x" in table
    assert "geometric mean" in summarise_hand([report])
