"""Batch mode against live mode: wall time, jobs, tokens and cost of the same workload.

    python -m benchmarks.batch [--quick] [--queue S ...] [--out benchmarks/results]

On the load-model servers (a load-model LLM server with the Batch API, a load-model
Triton), the engine runs one workload three ways in this process: live requests, then
batch mode with jobs that start at once, then batch mode with jobs that wait `--queue`
seconds in the provider's queue before they run (a hosted provider's batch queue takes
minutes to hours; its length is the provider's, not the engine's, so it is a parameter
here). Per row: wall time, its ratio to live, jobs and lines sent, the tokens the server
counted, and the cost at `PRICES` (list price live; half of it in batch, as hosted
providers bill batch jobs). Batch mode's own overhead per step is the linger (gathering a
step's requests) plus up to one poll interval; the rows show it.

It prints one table and writes `<out>/batch.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from benchmarks.batch_api import BatchOptions
from benchmarks.llm_server import LLMCostModel, LoadLLMServer
from benchmarks.run import DEFAULT_OUT, build_engine
from benchmarks.scenarios import make_pool, make_targets
from benchmarks.scorer_server import IMAGE_MODEL, TEXT_MODEL, LoadScorerServer, ScorerCostModel
from mils.adapters.openai_batch import BatchSettings, OpenAIBatchGenerator
from mils.adapters.openai_generator import GeneratorSettings, OpenAIGenerator
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.config import Budget, ConcurrencyConfig, LoopConfig
from mils.engine.protocols import Generator
from mils.engine.scheduler import Sample
from mils.engine.store import RunStore
from mils.tasks import IMAGE_CAPTION

__all__ = ["PRICES", "Workload", "main", "run_batch_benchmark"]

PRICES = Budget(price_in=0.15, price_out=0.60)
"""Per million tokens: OpenAI's published list prices of gpt-4o-mini (USD, 2024); batch
jobs at half of them. Only the ratio matters here."""
BATCH_PRICES = Budget(price_in=0.075, price_out=0.30)
POLL_S = 0.5
LINGER_S = 0.5


LLM = LLMCostModel(capacity=32, prefill_ms=50, decode_tokens_per_s=3000)
SCORER = ScorerCostModel(text_a_ms=2, text_b_ms=0.05)
"""The throughput benchmark's generator-bound servers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    samples: int = 64
    steps: int = 4
    pool: int = 500
    llm: LLMCostModel = field(default_factory=lambda: LLM)
    scorer: ScorerCostModel = field(default_factory=lambda: SCORER)


QUICK = Workload(samples=8, steps=2, pool=100)


async def _run(
    name: str,
    workload: Workload,
    llm: LoadLLMServer,
    scorer: TritonScorer,
    workdir: Path,
    batch: BatchSettings | None,
) -> dict[str, Any]:
    pool = make_pool(workload.pool)
    targets = dict(make_targets(workload.samples))
    store = RunStore.create(workdir / name, {"benchmark": "batch", "runner": name}, pool)
    store.add_samples([(sid, {"image": sid}) for sid in targets])
    settings = GeneratorSettings(base_url=llm.base_url, model=llm.cost.model)
    jobs_before = len(_jobs(llm))
    async with AsyncExitStack() as stack:
        generator: Generator = await stack.enter_async_context(
            OpenAIGenerator(settings)
            if batch is None
            else OpenAIBatchGenerator(settings, batch, journal=store)
        )
        samples = [Sample(sid, {"image": sid}) for sid in targets]
        concurrency = ConcurrencyConfig(
            generator_in_flight=None if batch is None else workload.samples,
            samples_in_flight=workload.samples,
        )
        engine, _ = build_engine(
            loop=LoopConfig(steps=workload.steps, keep=50, requested=50),
            generators=[generator],
            scorer=scorer,
            store=store,
            targets=targets,
            concurrency=concurrency,
        )
        started = time.monotonic()
        summary = await engine.run(samples, {IMAGE_CAPTION.name: pool})
        wall = time.monotonic() - started
    store.close()
    jobs = _jobs(llm)[jobs_before:]
    prices = PRICES if batch is None else BATCH_PRICES
    usage = summary.usage
    return {
        "runner": name,
        "wall_s": wall,
        "steps": summary.steps,
        "done": summary.done,
        "jobs": len(jobs),
        "lines": sum(job["request_counts"]["total"] for job in jobs),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost": prices.cost(usage.prompt_tokens, usage.completion_tokens),
    }


def _jobs(llm: LoadLLMServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{llm.base_url}/batches", timeout=10) as reply:
        data: list[dict[str, Any]] = json.load(reply)["data"]
    return data[::-1]


async def _all(
    workload: Workload, queues: Sequence[float], workdir: Path, scorer_url: str
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with TritonScorer(scorer_url, text_model=TEXT_MODEL, target_model=IMAGE_MODEL) as scorer:
        for queue in (None, *queues):
            name = "live" if queue is None else f"batch, queue {queue:g} s"
            options = BatchOptions(start_delay_s=queue or 0.0)
            with LoadLLMServer(
                cost=workload.llm, batch=options, log_path=workdir / f"llm-{len(rows)}.log"
            ) as llm:
                batch = None if queue is None else BatchSettings(poll_s=POLL_S, linger_s=LINGER_S)
                rows.append(await _run(f"run{len(rows)}", workload, llm, scorer, workdir, batch))
            rows[-1]["runner"] = name
    live = rows[0]
    for row in rows:
        row["wall_vs_live"] = row["wall_s"] / live["wall_s"]
        row["cost_vs_live"] = row["cost"] / live["cost"] if live["cost"] else None
    return rows


def run_batch_benchmark(
    workload: Workload, queues: Sequence[float], out: Path | None = None
) -> dict[str, Any]:
    """Run the rows; write `<out>/batch.json` when `out` is given; return the report."""
    with tempfile.TemporaryDirectory(prefix="mils-bench-batch-") as tmp:
        workdir = Path(tmp)
        with LoadScorerServer(cost=workload.scorer, workdir=workdir / "triton") as triton:
            rows = asyncio.run(_all(workload, queues, workdir, triton.grpc_url))
    report = {
        "workload": {"samples": workload.samples, "steps": workload.steps, "pool": workload.pool},
        "batch_settings": {"poll_s": POLL_S, "linger_s": LINGER_S},
        "prices_per_million": {"live": [PRICES.price_in, PRICES.price_out], "batch": "half"},
        "rows": rows,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "batch.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_table(report: dict[str, Any]) -> str:
    columns = ("runner", "wall s", "vs live", "jobs", "lines", "tokens in/out", "cost", "vs live")
    rows = [columns]
    for r in report["rows"]:
        rows.append(
            (
                r["runner"],
                f"{r['wall_s']:.1f}",
                f"{r['wall_vs_live']:.2f}x",
                str(r["jobs"]),
                str(r["lines"]),
                f"{r['prompt_tokens']}/{r['completion_tokens']}",
                f"{r['cost']:.4f}",
                f"{r['cost_vs_live']:.2f}x" if r["cost_vs_live"] is not None else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a small workload (a smoke run)")
    p.add_argument(
        "--queue",
        type=float,
        action="append",
        help="seconds a job waits in the provider's queue; repeatable (0 and 10)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where batch.json goes")
    args = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    workload = QUICK if args.quick else Workload()
    print("running live and batch mode ...", file=sys.stderr, flush=True)
    report = run_batch_benchmark(workload, args.queue or [0.0, 10.0], args.out)
    print(format_table(report))
    print(f"\nJSON in {args.out}/batch.json")


if __name__ == "__main__":
    main()
