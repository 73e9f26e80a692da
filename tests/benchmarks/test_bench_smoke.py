"""Smoke tests of the benchmark harness: the load-model LLM server's contract and accounting,
and one tiny scenario end to end (fields present, not speed: no timing asserts)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.llm_server import (
    LLMCostModel,
    LoadLLMServer,
    candidate_lines,
    lines_requested,
    shown_texts,
)
from benchmarks.run import run_scenario
from benchmarks.scenarios import SCENARIOS, quick
from mils.adapters.openai_generator import GeneratorSettings, OpenAIGenerator
from mils.engine.prompt import build_messages, parse_candidates
from mils.engine.protocols import ChatMessage
from mils.tasks import IMAGE_CAPTION

CAPACITY = 4
COST = LLMCostModel(capacity=CAPACITY, prefill_ms=300, decode_tokens_per_s=50_000, seed=7)


@pytest.fixture(scope="module")
def llm() -> Iterator[LoadLLMServer]:
    """One load-model LLM server with 4 slots."""
    with LoadLLMServer(cost=COST) as server:
        yield server


def _messages(requested: int, best: str = "a red cat") -> list[ChatMessage]:
    return build_messages(IMAGE_CAPTION, [(0.31, best)], requested)


def test_lines_requested_reads_the_number_the_prompt_asks_for() -> None:
    """'Write N new ...' wins; without a number the default applies."""
    assert lines_requested("0.412: x\nWrite 12 new captions for it") == 12
    assert lines_requested("give me 7 new captions") == 7
    assert lines_requested("captions please", default=5) == 5


def test_candidate_lines_are_deterministic_and_varied() -> None:
    """Same (seed, prompt, occurrence) gives the same lines; lines are mostly distinct and
    mostly vary the best candidates the prompt shows."""
    prompt = "0.100: a red cat on a table\n0.300: a blue dog in a park\nWrite 50 new captions"
    lines = candidate_lines(prompt, 50, seed=1)
    assert lines == candidate_lines(prompt, 50, seed=1)
    assert lines != candidate_lines(prompt, 50, seed=2)
    assert lines != candidate_lines(prompt, 50, seed=1, occurrence=1)
    assert len(set(lines)) >= 45
    assert shown_texts(prompt) == ["a red cat on a table", "a blue dog in a park"]


async def test_chat_completions_contract_through_the_real_generator(llm: LoadLLMServer) -> None:
    """The engine's OpenAIGenerator gets a parseable numbered list of the requested length."""
    async with OpenAIGenerator(GeneratorSettings(base_url=llm.base_url, model="m")) as gen:
        reply = (await gen.complete(_messages(12))).text
        again = (await gen.complete(_messages(12))).text
    assert len(parse_candidates(reply)) == len(parse_candidates(again)) == 12
    assert reply != again  # a repeated prompt is sampled anew, as by a real LLM
    stats = llm.stats()
    assert {"requests", "busy_slot_seconds", "capacity", "peak_concurrency", "started_at"} <= set(
        stats
    )
    assert stats["capacity"] == CAPACITY


async def _burst(llm: LoadLLMServer, n: int) -> dict:
    before = llm.stats()
    async with OpenAIGenerator(GeneratorSettings(base_url=llm.base_url, model="m")) as gen:
        await asyncio.gather(*(gen.complete(_messages(5, f"a cat {i}")) for i in range(n)))
    after = llm.stats()
    return {
        k: after[k] - before[k] for k in ("requests", "busy_slot_seconds", "completion_tokens")
    } | {"peak_concurrency": after["peak_concurrency"], "peak_queued": after["peak_queued"]}


async def test_busy_slot_seconds_follow_the_cost_model_and_concurrency_caps_at_capacity(
    llm: LoadLLMServer,
) -> None:
    """k concurrent requests occupy min(k, capacity) slots, the rest queue; every request adds
    its prefill + tokens / rate to the busy slot-seconds."""
    small = await _burst(llm, CAPACITY - 1)
    assert small["requests"] == CAPACITY - 1
    assert small["peak_concurrency"] >= CAPACITY - 1
    large = await _burst(llm, 3 * CAPACITY)
    assert large["requests"] == 3 * CAPACITY
    assert large["peak_concurrency"] == CAPACITY
    assert large["peak_queued"] >= CAPACITY
    for burst in (small, large):
        expected = burst["requests"] * COST.prefill_ms / 1000 + (
            burst["completion_tokens"] / COST.decode_tokens_per_s
        )
        assert burst["busy_slot_seconds"] >= 0.99 * expected
    assert large["busy_slot_seconds"] > small["busy_slot_seconds"]


@pytest.mark.integration
def test_tiny_scenario_writes_a_complete_report(tmp_path: Path) -> None:
    """One scenario with a handful of samples runs baseline, engine and hand loop and reports
    every field."""
    base = quick(next(s for s in SCENARIOS if s.name == "generator-bound"))
    scenario = dataclasses.replace(base, samples=8, pool=64, baseline_samples=8)
    report = run_scenario(scenario, tmp_path)
    written = json.loads((tmp_path / "generator-bound.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert [run["runner"] for run in report["runs"]] == ["baseline", "engine", "hand"]
    for run in report["runs"]:
        for key in (
            "wall_s",
            "steps_per_s",
            "generator_utilisation",
            "scorer_utilisation",
            "text_encodes",
            "lower_bound_s",
            "efficiency",
            "cpu_fraction",
            "cpu_ms_per_step",
        ):
            assert run[key] >= 0, key
        assert run["wall_s"] > 0 and 0 < run["lower_bound_s"] <= run["wall_s"]
        assert 0 < run["efficiency"] <= 1
        assert run["steps"] == 8 * scenario.steps
    engine = report["runs"][1]
    assert engine["text_encodes"] == engine["unique_texts"]
    assert report["speedup"] > 0
