"""`mils caption` against the load-model server and Triton: generator tokens are the
server's own accounting, priced; a request budget stops the run with exit status 3 and a
resume with a higher one finishes it; replies without usage are estimated, and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, assert_complete, endpoint_args, mils, query, results

from benchmarks.llm_server import LLMCostModel, LLMFaults, LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

FAST = LLMCostModel(capacity=64, prefill_ms=5, decode_tokens_per_s=50_000, seed=0)
STEPS = 2


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
        "4",
        *extra,
        *endpoint_args(url, triton),
    ]


def stored_usage(run: Path) -> tuple[int, int, int, int]:
    row = query(
        run,
        "SELECT SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
        "SUM(estimated_requests) FROM steps",
    )[0]
    return (row[0], row[1], row[2], row[3])


def test_tokens_are_the_servers_accounting_and_priced(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Steps table, results.jsonl and the summary hold the tokens the server counted, and
    their cost at the prices given (saved in config.json)."""
    images, run = many_images[:6], tmp_path / "run"
    with LoadLLMServer(cost=FAST, log_path=tmp_path / "llm.log") as llm:
        args = caption(
            images, run, llm.base_url, rel_triton, "--price-in", "3", "--price-out", "15"
        )
        proc = mils(args, tmp_path)
        stats = llm.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    prompt, completion = stats["prompt_tokens"], stats["completion_tokens"]
    assert (
        stored_usage(run)
        == (stats["requests"], prompt, completion, 0)
        == (12, prompt, completion, 0)
    )
    per_sample = [row["usage"] for row in results(run).values()]
    assert sum(u["prompt_tokens"] for u in per_sample) == prompt
    assert sum(u["completion_tokens"] for u in per_sample) == completion
    cost = (prompt * 3 + completion * 15) / 1e6
    assert f"12 generator requests, {prompt} tokens in, {completion} out, cost {cost:.4f}" in (
        proc.stderr
    )
    budget = json.loads((run / "config.json").read_text())["budget"]
    assert (budget["price_in"], budget["price_out"], budget["max_requests"]) == (3.0, 15.0, None)


def test_max_requests_stops_the_run_and_resume_with_a_higher_one_finishes(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """--max-requests 5 sends 5 requests and exits 3 naming the budget and the command to go
    on; resuming with the same budget stops at once, sending none; a higher one finishes
    every sample, and the run's requests add up to the server's."""
    images, run = many_images[:8], tmp_path / "run"
    with LoadLLMServer(cost=FAST, log_path=tmp_path / "llm.log") as llm:
        first = mils(
            caption(images, run, llm.base_url, rel_triton, "--max-requests", "5"), tmp_path
        )
        sent_first, stored_first = llm.stats()["requests"], stored_usage(run)[0]
        again = mils(["resume", str(run), "--no-progress", "--max-requests", "5"], tmp_path)
        sent_again = llm.stats()["requests"]
        final = mils(["resume", str(run), "--no-progress", "--max-requests", "100"], tmp_path)
        stats = llm.stats()
    assert first.returncode == 3, first.stderr[-3000:]
    assert sent_first == 5 and stored_first <= 5
    assert "budget reached: --max-requests 5 reached: 5 generator requests sent" in first.stderr
    assert f"mils resume {run} --max-requests HIGHER" in first.stderr
    assert again.returncode == 3 and sent_again == sent_first, again.stderr[-3000:]
    assert "budget reached: --max-requests 5" in again.stderr
    assert final.returncode == 0, final.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    assert stats["requests"] == len(images) * STEPS
    assert json.loads((run / "config.json").read_text())["budget"]["max_requests"] == 100
    assert stored_usage(run)[:3] == (
        stats["requests"],
        stats["prompt_tokens"],
        stats["completion_tokens"],
    )


def test_replies_without_usage_are_estimated_and_marked(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """A server that sends no usage gets estimated tokens, counted as estimated requests in
    the store and results.jsonl, and the summary says so."""
    images, run = many_images[:3], tmp_path / "run"
    faults = LLMFaults(no_usage=True)
    with LoadLLMServer(cost=FAST, faults=faults, log_path=tmp_path / "llm.log") as llm:
        proc = mils(caption(images, run, llm.base_url, rel_triton), tmp_path)
        stats = llm.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    requests, prompt, completion, estimated = stored_usage(run)
    assert requests == estimated == stats["requests"] == 6
    assert prompt > 0 and completion > 0
    assert all(row["usage"]["estimated_requests"] == STEPS for row in results(run).values())
    assert "(~6 of 6 requests estimated)" in proc.stderr


def test_a_price_table_prices_the_run_and_the_resume_needs_no_file(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """--prices FILE gives the generator model's prices: the summary shows the cost at
    them, config.json saves them, and a resume after the file is gone keeps them; a model
    the table lacks stops the run at start (exit 2) naming the file and its models."""
    images, run = many_images[:4], tmp_path / "run"
    table = tmp_path / "prices.toml"
    other = "[models.other]\ninput = 1\noutput = 1\n"
    table.write_text(f'[models."load-llm"]\ninput = 3\noutput = 15\n\n{other}')
    with LoadLLMServer(cost=FAST, log_path=tmp_path / "llm.log") as llm:
        args = caption(images, run, llm.base_url, rel_triton, "--prices", str(table))
        first = mils([*args, "--max-requests", "4"], tmp_path)
        table.unlink()
        resumed = mils(["resume", str(run), "--no-progress", "--max-requests", "100"], tmp_path)
        stats = llm.stats()
        table.write_text(other)
        args = caption(images, tmp_path / "r2", llm.base_url, rel_triton, "--prices", str(table))
        missing = mils(args, tmp_path)
    assert first.returncode == 3, first.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_complete(run, [p.stem for p in images], STEPS)
    budget = json.loads((run / "config.json").read_text())["budget"]
    assert (budget["price_in"], budget["price_out"]) == (3.0, 15.0)
    prompt, completion = stats["prompt_tokens"], stats["completion_tokens"]
    cost = (prompt * 3 + completion * 15) / 1e6
    assert f"{prompt} tokens in, {completion} out, cost {cost:.4f}" in resumed.stderr
    assert missing.returncode == 2, missing.stderr[-3000:]
    assert f"model 'load-llm' is not in the price table {table} (it has 'other')" in (
        missing.stderr
    )
    assert "--price-in" in missing.stderr and not (tmp_path / "r2").exists()
