"""Batch mode over real sockets: each step's requests go as one OpenAI Batch API job to the
load-model server's files and batches endpoints; it gives the live mode's results, retries
only failed lines, and a run killed while a job is pending resumes by waiting for that job."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cli_harness import SMALL_LOOP, assert_complete, endpoint_args, log_events, mils, query, spawn

from benchmarks.batch_api import BatchOptions
from benchmarks.llm_server import LLMCostModel, LoadLLMServer
from mils.adapters.local_stack import LlamaServer, TritonServer

pytestmark = pytest.mark.integration

FAST = LLMCostModel(capacity=64, prefill_ms=5, decode_tokens_per_s=50_000, seed=0)
STEPS = 2
BATCH = ("--generator-mode", "batch", "--batch-poll", "0.1", "--batch-linger", "0.3")


def caption(
    images: list[Path], out: Path, url: str, triton: TritonServer, *extra: str
) -> list[str]:
    return [
        "caption",
        *map(str, images),
        "--steps",
        str(STEPS),
        *SMALL_LOOP,
        "--out",
        str(out),
        "--no-progress",
        *extra,
        *endpoint_args(url, triton),
    ]


def jobs(llm: LoadLLMServer) -> list[dict[str, Any]]:
    """Every batch job the server was sent, oldest first."""
    with urllib.request.urlopen(f"{llm.base_url}/batches", timeout=10) as reply:
        data: list[dict[str, Any]] = json.load(reply)["data"]
    return data[::-1]


def steps_and_candidates(run: Path) -> list[tuple[Any, ...]]:
    return query(
        run,
        "SELECT s.sample_id, s.step, s.best_text, s.best_score, s.n_new, s.prompt_tokens, "
        "s.completion_tokens, group_concat(c.text, '|') FROM steps s LEFT JOIN candidates c "
        "ON c.sample_id = s.sample_id AND c.step = s.step GROUP BY s.sample_id, s.step "
        "ORDER BY s.sample_id, s.step",
    )


def test_batch_mode_gives_the_live_modes_results_one_job_per_step(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """On a deterministic server, 6 samples x 2 steps in batch mode commit the same steps,
    candidates and tokens as live mode, sent as one job of 6 lines per step."""
    images = many_images[:6]
    runs = {}
    for mode in ("live", "batch"):
        run = runs[mode] = tmp_path / mode
        extra = BATCH if mode == "batch" else ()
        with LoadLLMServer(cost=FAST, log_path=tmp_path / f"{mode}.log") as llm:
            proc = mils(caption(images, run, llm.base_url, rel_triton, *extra), tmp_path)
            sent = jobs(llm)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert_complete(run, [p.stem for p in images], STEPS)
    assert steps_and_candidates(runs["batch"]) == steps_and_candidates(runs["live"])
    assert [job["request_counts"] for job in sent] == [
        {"total": 6, "completed": 6, "failed": 0}
    ] * STEPS
    saved = json.loads((runs["batch"] / "config.json").read_text())
    assert saved["batch"]["poll_s"] == 0.1


def test_only_the_failed_lines_of_a_job_are_sent_again(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """When the first line of the first job fails (HTTP 500 in the error file), every sample
    finishes and only that line is sent again, in a later job."""
    images, run = many_images[:4], tmp_path / "run"
    batch = BatchOptions(failed_lines=1)
    with LoadLLMServer(cost=FAST, batch=batch, log_path=tmp_path / "llm.log") as llm:
        proc = mils(caption(images, run, llm.base_url, rel_triton, *BATCH), tmp_path)
        sent, served = jobs(llm), llm.stats()["requests"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    assert sent[0]["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    assert sum(job["request_counts"]["total"] for job in sent) == len(images) * STEPS + 1
    assert served == len(images) * STEPS


def test_a_run_killed_while_its_job_is_pending_resumes_without_sending_it_again(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """SIGKILL while the first job waits in the provider's queue: the job id was committed,
    and the resume polls that job for its answers instead of submitting the requests again,
    so the server gets exactly one job per step."""
    images, run = many_images[:3], tmp_path / "run"
    batch = BatchOptions(start_delay_s=4.0)
    with LoadLLMServer(cost=FAST, batch=batch, log_path=tmp_path / "llm.log") as llm:
        proc = spawn(caption(images, run, llm.base_url, rel_triton, *BATCH), tmp_path)
        try:
            deadline = time.monotonic() + 120
            while not _recorded_jobs(run) and time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / "spawned.log").read_text()[-3000:]
                time.sleep(0.1)
            assert _recorded_jobs(run), "no job was recorded in time"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert jobs(llm)[0]["status"] == "validating"  # still queued at the provider
        resumed = mils(["resume", str(run), "--no-progress"], tmp_path)
        sent = jobs(llm)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    assert len(sent) == STEPS, [job["request_counts"] for job in sent]
    assert any(e["event"] == "batch_resumed" for e in log_events(run))


def _recorded_jobs(run: Path) -> int:
    try:
        return len(query(run, "SELECT id FROM batches"))
    except sqlite3.OperationalError:  # the store is not created yet
        return 0


def test_an_endpoint_without_the_batch_api_stops_the_run_with_a_clear_error(
    many_images: list[Path], rel_triton: TritonServer, llama_server: LlamaServer, tmp_path: Path
) -> None:
    """llama.cpp's server has no /v1/files: batch mode against it stops as a configuration
    error (exit 2) that says so and names live mode, not as one failure per sample."""
    args = caption(many_images[:2], tmp_path / "run", llama_server.base_url, rel_triton, *BATCH)
    proc = mils(args, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "has no OpenAI Batch API" in proc.stderr
    assert "send it live requests (without --generator-mode batch)" in proc.stderr


def test_batch_options_without_batch_mode_are_refused(tmp_path: Path) -> None:
    """--batch-poll without --generator-mode batch is a usage error naming the missing flag."""
    proc = mils(["caption", "x.png", "--batch-poll", "5", "--dry-run"], tmp_path)
    assert proc.returncode == 2
    assert "--batch-poll is for batch mode; add --generator-mode batch" in proc.stderr


def test_batch_mode_is_saved_shown_and_can_be_left_on_resume(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """A batch run stopped by --max-requests after its first job shows [batch] in its
    settings; resumed with --generator-mode live it finishes with live requests, and
    config.json says so for the next resume."""
    images, run = many_images[:2], tmp_path / "run"
    with LoadLLMServer(cost=FAST, log_path=tmp_path / "llm.log") as llm:
        args = caption(images, run, llm.base_url, rel_triton, *BATCH, "--max-requests", "2")
        first = mils(args, tmp_path)
        assert first.returncode == 3, first.stderr[-3000:]
        shown = mils(["config", "show", str(run)], tmp_path)
        assert "[batch]" in shown.stdout and "poll_s = 0.1" in shown.stdout, shown.stdout
        resumed = mils(
            [
                "resume",
                str(run),
                "--no-progress",
                "--generator-mode",
                "live",
                "--max-requests",
                "9",
            ],
            tmp_path,
        )
        sent, served = jobs(llm), llm.stats()["requests"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    assert len(sent) == 1 and served == len(images) * STEPS
    assert json.loads((run / "config.json").read_text())["batch"] is None


def test_a_price_table_gives_batch_mode_its_batch_prices(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """With --prices, batch mode prices tokens at the table's batch prices (half the live
    ones when the table gives none): the saved budget holds them."""
    (tmp_path / "prices.toml").write_text('[models."load-llm"]\ninput = 1.0\noutput = 4.0\n')
    with LoadLLMServer(cost=FAST, log_path=tmp_path / "llm.log") as llm:
        args = caption(many_images[:1], tmp_path / "run", llm.base_url, rel_triton, *BATCH)
        proc = mils([*args, "--prices", "prices.toml", "--steps", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    budget = json.loads((tmp_path / "run" / "config.json").read_text())["budget"]
    assert (budget["price_in"], budget["price_out"]) == (0.5, 2.0)
