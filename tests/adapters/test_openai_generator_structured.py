"""Structured replies of OpenAIGenerator (`reply_format="json"`) against the load-model
server over a real socket: the JSON candidate list becomes the parser's lines, and an
endpoint that refuses `response_format` is asked again without it, then never again."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from benchmarks.llm_server import LLMCostModel, LLMFaults, LoadLLMServer, candidate_lines
from mils.adapters.openai_generator import (
    GeneratorSettings,
    OpenAIGenerator,
    structured_reply,
    structured_reply_format,
)
from mils.engine.errors import ConfigError, EndpointUnavailable
from mils.engine.prompt import parse_candidates
from mils.engine.protocols import ChatMessage, Reply

FAST = LLMCostModel(capacity=64, prefill_ms=1, decode_tokens_per_s=50_000, seed=0)


def messages(n: int = 5) -> list[ChatMessage]:
    """A prompt no earlier request used, so the server's reply is its first for it."""
    return [
        {"role": "system", "content": f"You write captions. ({uuid.uuid4()})"},
        {"role": "user", "content": f"0.210: a dog on grass\nWrite {n} new captions."},
    ]


def settings(url: str, **kw: Any) -> GeneratorSettings:
    return GeneratorSettings(base_url=url, model="load-llm", reply_format="json", **kw)


def unsupported(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "structured_replies_unsupported"]


async def test_structured_replies_are_the_servers_candidates(load_llm: LoadLLMServer) -> None:
    """A json-mode reply parses into exactly the candidates the server put in its JSON, and
    the request carried the strict JSON schema."""
    asked = messages(7)
    before = load_llm.stats()["structured"]
    async with OpenAIGenerator(settings(load_llm.base_url)) as generator:
        reply = await generator.complete(asked)
        assert generator.reply_format == "json" and generator.unstructured_reason is None
    prompt = "\n".join(m["content"] for m in asked)
    assert parse_candidates(reply.text) == candidate_lines(prompt, 7, FAST.seed)
    assert load_llm.stats()["structured"] == before + 1


async def test_a_cut_off_structured_reply_keeps_its_complete_candidates(
    load_llm: LoadLLMServer,
) -> None:
    """A JSON reply stopped by max_tokens mid-string keeps the candidates before the cut,
    as a cut-off list of lines keeps its complete lines, and still says it was cut off."""
    asked = messages(20)
    async with OpenAIGenerator(settings(load_llm.base_url, max_tokens=60)) as generator:
        reply = await generator.complete(asked)
    prompt = "\n".join(m["content"] for m in asked)
    got = parse_candidates(reply.text)
    assert reply.truncated and 0 < len(got) < 20
    assert got == candidate_lines(prompt, 20, FAST.seed)[: len(got)]


@pytest.mark.parametrize("status", [400, 422, 500])
async def test_a_refusing_endpoint_is_asked_for_lines_from_then_on(
    tmp_path: Path, status: int
) -> None:
    """An endpoint answering `response_format` with HTTP 400, 422 or 500 gets that request
    again without it, the reply is used, and every later request goes unstructured; the
    refusal is logged once with the server's message."""
    faults = LLMFaults(refuse_structured=status)
    with LoadLLMServer(cost=FAST, faults=faults, log_path=tmp_path / "llm.log") as llm:
        async with OpenAIGenerator(settings(llm.base_url)) as generator:
            with capture_logs() as logs:
                replies = [await generator.complete(messages()) for _ in range(3)]
            stats = llm.stats()
        assert generator.reply_format == "lines"
        reason = generator.unstructured_reason
    assert all(len(parse_candidates(r.text)) == 5 for r in replies)
    assert (stats["structured_refused"], stats["structured"], stats["requests"]) == (1, 0, 3)
    [event] = unsupported(logs)
    assert event["endpoint"] == f"{llm.base_url} (load-llm)"
    assert reason is not None and f"HTTP {status}" in reason
    assert event["error"] == reason and "response_format is not supported" in reason


async def test_concurrent_refusals_log_once(tmp_path: Path) -> None:
    """Requests refused together each fall back on their own, and the endpoint's refusal
    is logged once."""
    faults = LLMFaults(refuse_structured=400)
    with LoadLLMServer(cost=FAST, faults=faults, log_path=tmp_path / "llm.log") as llm:
        async with OpenAIGenerator(settings(llm.base_url)) as generator:
            with capture_logs() as logs:
                replies = await asyncio.gather(*(generator.complete(messages()) for _ in range(4)))
            stats = llm.stats()
    assert all(parse_candidates(r.text) for r in replies)
    assert 1 <= stats["structured_refused"] <= 4 and stats["requests"] == 4
    assert len(unsupported(logs)) == 1


async def test_a_503_on_a_structured_request_is_retryable_not_a_refusal(tmp_path: Path) -> None:
    """An overloaded answer (503) to a structured request is the retry loop's fault to
    handle: it is raised as it is, and the endpoint is still asked for JSON."""
    faults = LLMFaults(refuse_structured=503)
    with LoadLLMServer(cost=FAST, faults=faults, log_path=tmp_path / "llm.log") as llm:
        async with OpenAIGenerator(settings(llm.base_url)) as generator:
            with pytest.raises(EndpointUnavailable) as info:
                await generator.complete(messages())
            assert generator.reply_format == "json"
        assert llm.stats()["requests"] == 0
    assert info.value.kind == "5xx"


def test_the_response_format_is_a_strict_schema_of_a_string_list() -> None:
    """The request field is OpenAI's strict json_schema asking for {"candidates": [str]}."""
    wanted = structured_reply_format()
    assert wanted["type"] == "json_schema"
    assert wanted["json_schema"]["name"] == "candidates" and wanted["json_schema"]["strict"]
    schema = wanted["json_schema"]["schema"]
    assert schema["required"] == ["candidates"] and schema["additionalProperties"] is False
    assert schema["properties"]["candidates"] == {"type": "array", "items": {"type": "string"}}
    assert structured_reply_format() is not wanted


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ('{"candidates": ["a cat", "a dog\\non grass"]}', "1. a cat\n2. a dog on grass\n"),
        ('```json\n{"candidates": ["a cat"]}\n```', "1. a cat\n"),
        ('{"candidates": ["a cat", "a \\"red\\" dog", "a bi', '1. a cat\n2. a "red" dog\n'),
        ('{"candidates": ["a cat"]} Hope this helps!', "1. a cat\n"),
        ('{"candidates": ["a cat", 3, ""]}', "1. a cat\n"),
        ('{"candidates": []}', ""),
    ],
)
def test_structured_reply_writes_the_list_as_numbered_lines(text: str, lines: str) -> None:
    """A JSON candidate list (fenced, cut off, or trailed by chatter) becomes one numbered
    line per non-empty string, whitespace folded."""
    assert structured_reply(Reply(text, truncated=True)) == Reply(lines, truncated=True)


@pytest.mark.parametrize(
    "text",
    ["1. a cat\n2. a dog", '{"captions": ["a cat"]}', '["a cat"]', '{"candidates": [1, 2]}'],
)
def test_a_reply_that_is_not_the_json_is_left_to_the_line_parser(text: str) -> None:
    """A reply that is not {"candidates": [strings]} is returned as it came, for the
    forgiving line parser."""
    with capture_logs() as logs:
        assert structured_reply(Reply(text)) == Reply(text)
    assert [e["event"] for e in logs] == ["structured_reply_unparsed"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"reply_format": "xml"}, "pass `reply_format` lines or json"),
        ({"reply_format": "json", "prompt_mode": "completion"}, "pass `prompt_mode` chat"),
    ],
)
def test_reply_format_validation_names_the_field(changes: dict[str, Any], named: str) -> None:
    """An unknown reply format, or json with the continuation prompt, is a ConfigError
    naming the field and the fix."""
    with pytest.raises(ConfigError, match=named):
        GeneratorSettings(base_url="http://127.0.0.1:8000/v1", model="m", **changes)


@pytest.mark.integration
async def test_real_llama_cpp_server_answers_json_schema_with_500_and_falls_back(
    llama_server: Any,
) -> None:
    """llama-cpp-python's server answers a `json_schema` response_format with HTTP 500 (its
    request validation knows only text and json_object); the generator falls back to lines
    and gets a reply."""
    generator_settings = GeneratorSettings(
        base_url=llama_server.base_url, model="smollm2", max_tokens=48, reply_format="json"
    )
    async with OpenAIGenerator(generator_settings) as generator:
        with capture_logs() as logs:
            reply = await generator.complete(messages(3))
        assert generator.reply_format == "lines"
    [event] = unsupported(logs)
    assert "HTTP 500" in event["error"] and "json_object" in event["error"], event
    assert reply.text.strip()
    json.dumps(event)  # the log line is plain data
