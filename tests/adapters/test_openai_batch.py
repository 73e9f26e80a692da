"""OpenAIBatchGenerator against the load-model server's Batch API on a real socket: requests
gathered into jobs, per-line answers and failures, and jobs found again in a run's store."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.batch_api import BatchOptions
from benchmarks.llm_server import LLMCostModel, LoadLLMServer
from mils.adapters.openai_batch import BatchSettings, OpenAIBatchGenerator
from mils.adapters.openai_generator import GeneratorSettings
from mils.engine.errors import ConfigError, EndpointUnavailable
from mils.engine.protocols import ChatMessage
from mils.engine.store import RunStore

FAST = LLMCostModel(capacity=8, prefill_ms=1, decode_tokens_per_s=100_000, seed=3)
QUICK = BatchSettings(poll_s=0.05, linger_s=0.1)


def ask(text: str) -> list[ChatMessage]:
    return [{"role": "user", "content": f"{text}\nWrite 3 new captions"}]


def jobs(server: LoadLLMServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.base_url}/batches", timeout=10) as reply:
        data: list[dict[str, Any]] = json.load(reply)["data"]
    return data[::-1]


def cancel(server: LoadLLMServer, batch_id: str) -> None:
    request = urllib.request.Request(f"{server.base_url}/batches/{batch_id}/cancel", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoadLLMServer]:
    options = getattr(request, "param", BatchOptions())
    with LoadLLMServer(cost=FAST, batch=options, log_path=tmp_path / "llm.log") as llm:
        yield llm


def settings(server: LoadLLMServer) -> GeneratorSettings:
    return GeneratorSettings(base_url=server.base_url, model="m")


async def test_requests_within_the_linger_go_as_one_job_with_the_live_replies(
    server: LoadLLMServer,
) -> None:
    """Three requests (two alike) asked together go as one job of three lines with distinct
    custom ids, and each caller gets its own line's reply and token counts."""
    async with OpenAIBatchGenerator(settings(server), QUICK) as batch:
        replies = await asyncio.gather(
            *(batch.complete(ask(t)) for t in ("a red cat", "a blue dog", "a red cat"))
        )
    assert [job["request_counts"]["total"] for job in jobs(server)] == [3]
    assert all(r.prompt_tokens and r.completion_tokens for r in replies)
    assert len({r.text for r in replies}) == 3  # the server answers a repeated prompt anew
    assert server.stats()["requests"] == 3


@pytest.mark.parametrize("server", [BatchOptions(start_delay_s=30)], indirect=True)
async def test_a_job_cancelled_at_the_provider_fails_its_lines_as_transient(
    server: LoadLLMServer,
) -> None:
    """Lines of a job cancelled before they ran raise EndpointUnavailable (sent again by the
    retry loop), saying the job ended without answering."""
    async with OpenAIBatchGenerator(settings(server), QUICK) as batch:
        pending = asyncio.ensure_future(batch.complete(ask("a red cat")))
        while not jobs(server):
            await asyncio.sleep(0.05)
        cancel(server, jobs(server)[0]["id"])
        with pytest.raises(EndpointUnavailable, match="ended without answering"):
            await pending


async def test_a_job_in_the_store_is_waited_for_not_sent_again(
    server: LoadLLMServer, tmp_path: Path
) -> None:
    """A job recorded in a run's store answers the same request asked by a new generator
    (a resumed run): no second job, the same reply."""
    store = RunStore.create(tmp_path / "run", {"task": "t"}, ["a pool line"])
    try:
        async with OpenAIBatchGenerator(settings(server), QUICK, journal=store) as first:
            reply = await first.complete(ask("a green bird"))
        assert len(store.batches(first.endpoint)) == 1
        async with OpenAIBatchGenerator(settings(server), QUICK, journal=store) as second:
            again = await second.complete(ask("a green bird"))
    finally:
        store.close()
    assert again == reply
    assert len(jobs(server)) == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"poll_s": 0}, "pass `poll_s` above 0"),
        ({"linger_s": -1}, "pass `linger_s` 0 or more"),
        ({"max_lines": 50_001}, "pass `max_lines` 1 to 50000"),
    ],
)
def test_bad_batch_settings_name_the_parameter(values: dict[str, Any], message: str) -> None:
    """Each out-of-range batch setting is a ConfigError naming it and its range."""
    with pytest.raises(ConfigError, match=message):
        BatchSettings(**values)
