"""`mils caption --reply-format json` against the load-model server and Triton: candidates
come as a JSON list where the endpoint gives one, runs on in numbered lines where it
refuses, and the run's config.json records both what was asked and what was used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_harness import SMALL_LOOP, assert_complete, endpoint_args, log_events, mils

from benchmarks.llm_server import LLMCostModel, LLMFaults, LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

FAST = LLMCostModel(capacity=64, prefill_ms=5, decode_tokens_per_s=50_000, seed=0)
STEPS = 2
IN_FLIGHT = 4


def caption(
    images: list[Path], run: Path, url: str, triton: TritonServer, *extra: str
) -> list[str]:
    return [
        "caption",
        *map(str, images),
        "--steps",
        str(STEPS),
        *SMALL_LOOP,
        "--out",
        str(run),
        "--no-progress",
        "--generator-in-flight",
        str(IN_FLIGHT),
        "--reply-format",
        "json",
        *extra,
        *endpoint_args(url, triton),
    ]


def config(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "config.json").read_text())
    return data


def test_a_json_run_gets_structured_replies_and_records_them(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Every request of a --reply-format json run is answered in JSON, every sample
    finishes, and config.json says json was asked for and used."""
    images, run = many_images[:6], tmp_path / "run"
    with LoadLLMServer(cost=FAST, log_path=tmp_path / "llm.log") as llm:
        proc = mils(caption(images, run, llm.base_url, rel_triton), tmp_path)
        stats = llm.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    assert stats["structured"] == stats["requests"] == len(images) * STEPS
    saved = config(run)
    assert saved["endpoints"]["generator"]["reply_format"] == "json"
    assert saved["reply_formats_used"] == {f"{llm.base_url} (load-llm)": {"reply_format": "json"}}


def test_a_refusing_endpoint_falls_back_to_lines_and_the_run_says_so(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """An endpoint answering response_format with HTTP 400 refuses at most the first
    requests in flight; the run completes in lines, logs the refusal once, and config.json
    records json asked, lines used and the server's message."""
    images, run = many_images[:6], tmp_path / "run"
    faults = LLMFaults(refuse_structured=400)
    with LoadLLMServer(cost=FAST, faults=faults, log_path=tmp_path / "llm.log") as llm:
        proc = mils(caption(images, run, llm.base_url, rel_triton), tmp_path)
        stats = llm.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    assert stats["requests"] == len(images) * STEPS and stats["structured"] == 0
    assert 1 <= stats["structured_refused"] <= IN_FLIGHT
    assert "structured_replies_unsupported" in proc.stderr  # shown on the console too
    events = [e for e in log_events(run) if e["event"] == "structured_replies_unsupported"]
    assert len(events) == 1
    saved = config(run)
    assert saved["endpoints"]["generator"]["reply_format"] == "json"
    used = saved["reply_formats_used"][f"{llm.base_url} (load-llm)"]
    assert used["reply_format"] == "lines"
    assert "HTTP 400" in used["refusal"] and "response_format is not supported" in used["refusal"]


def test_a_resumed_json_run_keeps_asking_for_json(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """A json run stopped by its budget resumes, with no --reply-format, still in json:
    every request of both sessions was structured."""
    images, run = many_images[:4], tmp_path / "run"
    with LoadLLMServer(cost=FAST, log_path=tmp_path / "llm.log") as llm:
        first = mils(
            caption(images, run, llm.base_url, rel_triton, "--max-requests", "3"), tmp_path
        )
        resumed = mils(["resume", str(run), "--no-progress", "--max-requests", "100"], tmp_path)
        stats = llm.stats()
    assert first.returncode == 3, first.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    assert stats["structured"] == stats["requests"] == len(images) * STEPS
    assert config(run)["endpoints"]["generator"]["reply_format"] == "json"
    shown = mils(["config", "show", str(run)], tmp_path)
    assert 'reply_format = "json"' in shown.stdout


def test_json_with_the_continuation_prompt_is_a_config_error(
    many_images: list[Path], tmp_path: Path
) -> None:
    """--reply-format json with --prompt-mode completion stops before anything runs (exit
    2), naming both flags."""
    proc = mils(
        [
            "caption",
            str(many_images[0]),
            "--reply-format",
            "json",
            "--prompt-mode",
            "completion",
            "--generator-url",
            "http://127.0.0.1:9/v1",
            "--scorer-url",
            "127.0.0.1:9",
            "--out",
            str(tmp_path / "run"),
        ],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--prompt-mode chat, or --reply-format lines" in proc.stderr
    assert not (tmp_path / "run").exists()
