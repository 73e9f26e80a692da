"""Token accounting and budgets over in-process fakes: sums per step, sample and run;
estimates when a reply has no usage; a budget stops the run resumably."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import IMAGE, FakeGenerator
from fakes import fake_scheduler as scheduler

from mils.adapters.openai_generator import _reply
from mils.engine.config import Budget
from mils.engine.errors import ConfigError
from mils.engine.protocols import ChatMessage, Reply
from mils.engine.scheduler import Sample
from mils.engine.store import RunStore
from mils.engine.usage import Usage, budget_reached, estimate_tokens, reply_usage

POOL = [f"pool caption {i}" for i in range(20)]


class CountingGenerator(FakeGenerator):
    """Replies carry `usage`: 100 + call prompt tokens, 10 completion tokens."""

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        call = self.calls + 1  # the count `complete` makes, before others run
        reply = await super().complete(messages)
        return Reply(reply.text, prompt_tokens=100 + call, completion_tokens=10)


def samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(n)]


def open_store(path: Path, todo: list[Sample]) -> RunStore:
    return RunStore.create(path, {}, POOL, [(s.id, s.inputs) for s in todo])


async def test_server_tokens_are_summed_per_step_sample_and_run(tmp_path: Path) -> None:
    """The replies' usage, summed, is what the steps table, results.jsonl and the summary say."""
    todo = samples(3)
    store = open_store(tmp_path / "run", todo)
    gen = CountingGenerator()
    summary = await scheduler(store, gen, budget=Budget(price_in=2.0, price_out=8.0)).run(
        todo, {IMAGE: POOL}
    )
    prompt = sum(100 + n for n in range(1, 10))
    expected = Usage(requests=9, prompt_tokens=prompt, completion_tokens=90)
    assert summary.usage == expected == summary.run_usage == store.usage()
    assert summary.cost == pytest.approx((prompt * 2.0 + 90 * 8.0) / 1e6)
    lines = [json.loads(line) for line in store.export_results().read_text().splitlines()]
    assert sum(line["usage"]["prompt_tokens"] for line in lines) == prompt
    assert all(line["usage"]["requests"] == 3 for line in lines)
    steps = [step for line in lines for step in line["trajectory"]]
    assert [s["usage"]["requests"] for s in steps if s["step"] == 0] == [0, 0, 0]
    assert all(s["usage"]["completion_tokens"] == 10 for s in steps if s["step"] > 0)
    store.close()


async def test_replies_without_usage_are_estimated_and_marked(tmp_path: Path) -> None:
    """No usage in the reply: ~4 characters per token, and the request counts as estimated."""
    todo = samples(2)
    store = open_store(tmp_path / "run", todo)
    gen = FakeGenerator()
    summary = await scheduler(store, gen).run(todo, {IMAGE: POOL})
    assert summary.usage.requests == summary.usage.estimated_requests == 6
    assert summary.usage.completion_tokens > 0 and summary.usage.prompt_tokens > 0
    assert summary.cost is None  # no prices
    assert store.usage() == summary.usage
    store.close()


def test_reply_usage_prefers_the_server_and_estimates_otherwise() -> None:
    """Server counts are taken as they are; without them both sides are estimated."""
    assert reply_usage(Reply("abc", prompt_tokens=7, completion_tokens=3), "x" * 99) == Usage(
        1, 7, 3
    )
    assert reply_usage(Reply("abcdefgh"), "x" * 9) == Usage(1, 3, 2, estimated_requests=1)
    assert estimate_tokens("") == 0


def test_adapter_reads_usage_of_chat_and_completion_replies() -> None:
    """The OpenAI adapter takes `usage` from either reply shape, and ignores a bad one."""
    chat = {
        "choices": [{"message": {"content": "1. a"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }
    plain = {"choices": [{"text": "1. a"}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    assert (_reply(chat, "e").prompt_tokens, _reply(chat, "e").completion_tokens) == (12, 4)
    assert (_reply(plain, "e").prompt_tokens, _reply(plain, "e").completion_tokens) == (5, 2)
    bad = {**chat, "usage": {"prompt_tokens": "12", "completion_tokens": 4}}
    assert _reply(bad, "e").prompt_tokens is None
    assert _reply({"choices": chat["choices"]}, "e").completion_tokens is None


def test_budget_names_the_limit_reached_and_the_spend() -> None:
    """Each limit is checked against the spend; requests in flight count for max_requests."""
    spent = Usage(requests=4, prompt_tokens=600_000, completion_tokens=400_000)
    assert budget_reached(Budget(max_requests=5), spent) is None
    assert "`max_requests` 5 reached" in (
        budget_reached(Budget(max_requests=5), spent, sending=1) or ""
    )
    assert "1000000 tokens" in (budget_reached(Budget(max_tokens_total=10**6), spent) or "")
    priced = Budget(price_in=1.0, price_out=2.0, max_cost=1.4)
    assert "1.4000 spent" in (budget_reached(priced, spent) or "")
    assert budget_reached(Budget(price_in=1.0, price_out=2.0, max_cost=1.5), spent) is None


def test_max_cost_needs_prices() -> None:
    """A cost limit without prices is refused, naming what to pass."""
    with pytest.raises(ConfigError, match="`price_in` and `price_out`"):
        Budget(max_cost=1.0)
    with pytest.raises(ConfigError, match="max_requests must be >= 0"):
        Budget(max_requests=-1)


async def test_max_requests_stops_the_run_and_a_resume_goes_on(tmp_path: Path) -> None:
    """The run sends no request past the limit, samples stay resumable, the same limit
    stops a resume at once, and a higher one finishes every sample."""
    todo = samples(4)
    store = open_store(tmp_path / "run", todo)
    gen = CountingGenerator()
    summary = await scheduler(store, gen, in_flight=2, budget=Budget(max_requests=5)).run(
        todo, {IMAGE: POOL}
    )
    assert gen.calls == 5
    assert summary.budget_reached and "`max_requests` 5 reached" in summary.budget_reached
    assert summary.done < 4 and summary.cancelled == 4 - summary.done
    assert store.usage().requests == 5

    again = await scheduler(store, gen, budget=Budget(max_requests=5)).run(todo, {IMAGE: POOL})
    assert gen.calls == 5 and again.budget_reached and again.steps == 0

    final = await scheduler(store, gen, budget=Budget(max_requests=12)).run(todo, {IMAGE: POOL})
    assert final.budget_reached is None and final.done == 4
    assert gen.calls == 12 and store.usage().requests == 12
    assert final.run_usage.requests == 12 and final.usage.requests == 7
    store.close()


async def test_max_tokens_total_stops_the_run(tmp_path: Path) -> None:
    """A token limit stops the run once the answered requests' tokens reach it."""
    todo = samples(3)
    store = open_store(tmp_path / "run", todo)
    gen = CountingGenerator()
    summary = await scheduler(store, gen, in_flight=1, budget=Budget(max_tokens_total=300)).run(
        todo, {IMAGE: POOL}
    )
    assert gen.calls == 3  # 111 + 112 + 113 tokens: the third reaches 300
    assert summary.budget_reached and "`max_tokens_total` 300" in summary.budget_reached
    store.close()


def test_a_run_directory_from_before_token_columns_opens_and_counts_zero(tmp_path: Path) -> None:
    """Old steps tables get the columns on open; their steps count no tokens."""
    store = open_store(tmp_path / "run", samples(1))
    store.close()
    db = sqlite3.connect(tmp_path / "run" / "run.db")
    for column in ("requests", "prompt_tokens", "completion_tokens", "estimated_requests"):
        db.execute(f"ALTER TABLE steps DROP COLUMN {column}")
    db.execute("INSERT INTO steps VALUES ('s0', 0, 't', 0.5, 0.5, 0, '[]', 0)")
    db.commit()
    db.close()
    store = RunStore.open(tmp_path / "run")
    assert store.usage() == Usage()
    assert store.result("s0")["usage"]["requests"] == 0
    store.close()


async def test_salvage_keeps_the_usage_of_the_steps_it_copies(tmp_path: Path) -> None:
    """A salvaged run counts the same spend, so its budget goes on where it was."""
    todo = samples(2)
    store = open_store(tmp_path / "run", todo)
    summary = await scheduler(store, CountingGenerator()).run(todo, {IMAGE: POOL})
    store.close()
    RunStore.salvage(tmp_path / "run", tmp_path / "copy")
    copy = RunStore.open(tmp_path / "copy")
    assert copy.usage() == summary.usage
    copy.close()
