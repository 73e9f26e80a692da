"""Run the benchmark scenarios: baseline, engine and hand loop over the same servers.

    python -m benchmarks.run [--quick] [--out benchmarks/results] [--scenario NAME ...]

Per scenario it starts the servers (a load-model Triton, one or two load-model LLM
servers), runs the baseline (the published loop's structure), the engine (its default
configuration) and the hand loop (`benchmarks.hand_loop`: what a competent user writes,
at one or more semaphore sizes) one after the other in this process, and reads the
servers' own accounting around each run. From it:

    lower bound  = max(generator busy slot-s / total slots, busiest scorer model's busy s)
    efficiency   = lower bound / wall time
    utilisation  = busy / (capacity x wall time), per side
    speedup      = engine sample-steps/s / baseline sample-steps/s
    engine/hand  = engine sample-steps/s / hand-loop sample-steps/s, the engine on the same
                   endpoints as the hand loop (steps of finished samples only)

It prints one table and writes `<out>/<scenario>.json` per scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from benchmarks.baseline import GROUP_SIZE, run_baseline
from benchmarks.hand_loop import BACKOFF_S, TRIES, HandEndpoint, run_hand_loop
from benchmarks.llm_server import LLMFaults, LoadLLMServer
from benchmarks.scenarios import (
    SCENARIOS,
    MemoryReader,
    Scenario,
    make_pool,
    make_targets,
    quick,
)
from benchmarks.scorer_server import IMAGE_MODEL, TEXT_MODEL, LoadScorerServer, ScorerStats
from mils.adapters.openai_generator import GeneratorSettings, OpenAIGenerator
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.config import ConcurrencyConfig, LoopConfig, RetryConfig, to_dict
from mils.engine.objectives import EmbeddingObjective, Objective
from mils.engine.protocols import Generator
from mils.engine.retry import Retrier
from mils.engine.scheduler import Route, RunSummary, Sample, Scheduler
from mils.engine.store import RunStore
from mils.tasks import IMAGE_CAPTION

__all__ = ["RunMetrics", "main", "run_scenario"]

DEFAULT_OUT = Path("benchmarks/results")
RSS_SAMPLE_S = 0.25


@dataclass(slots=True)
class RunMetrics:
    """One runner's measurements in one scenario."""

    runner: str
    samples: int
    steps: int
    """Sample-steps committed."""
    wall_s: float
    steps_per_s: float
    generator_busy_slot_s: float
    generator_capacity: int
    generator_requests: int
    scorer_busy_s: dict[str, float]
    scorer_batches: int
    text_encodes: int
    """Texts the scorer embedded (its own count)."""
    unique_texts: int | None
    lower_bound_s: float
    efficiency: float
    generator_utilisation: float
    scorer_utilisation: float
    cpu_s: float
    """CPU time of this process (engine + client libraries) during the run."""
    cpu_fraction: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Servers:
    llms: list[LoadLLMServer]
    scorer: LoadScorerServer

    def snapshot(self) -> tuple[list[dict[str, Any]], dict[str, ScorerStats]]:
        return [s.stats() for s in self.llms], self.scorer.stats()


def _measure(
    runner: str,
    servers: _Servers,
    llms: Sequence[LoadLLMServer],
    before: Any,
    after: Any,
    wall_s: float,
    cpu_s: float,
    samples: int,
    steps: int,
) -> RunMetrics:
    """Turn two server snapshots around a run into the run's metrics."""
    (llm0, sc0), (llm1, sc1) = before, after
    used = {id(s) for s in llms}
    busy = sum(
        a["busy_slot_seconds"] - b["busy_slot_seconds"]
        for s, a, b in zip(servers.llms, llm1, llm0, strict=True)
        if id(s) in used
    )
    requests = sum(
        a["requests"] - b["requests"]
        for s, a, b in zip(servers.llms, llm1, llm0, strict=True)
        if id(s) in used
    )
    capacity = sum(s.cost.capacity for s in llms)
    scorer = {m: sc1[m] - sc0[m] for m in (TEXT_MODEL, IMAGE_MODEL)}
    scorer_busy = max(s.busy_s for s in scorer.values())  # one instance per model
    bound = max(busy / capacity, scorer_busy)
    return RunMetrics(
        runner=runner,
        samples=samples,
        steps=steps,
        wall_s=wall_s,
        steps_per_s=steps / wall_s,
        generator_busy_slot_s=busy,
        generator_capacity=capacity,
        generator_requests=requests,
        scorer_busy_s={m: s.busy_s for m, s in scorer.items()},
        scorer_batches=scorer[TEXT_MODEL].executions,
        text_encodes=scorer[TEXT_MODEL].items,
        unique_texts=None,
        lower_bound_s=bound,
        efficiency=bound / wall_s,
        generator_utilisation=busy / (capacity * wall_s),
        scorer_utilisation=scorer[TEXT_MODEL].busy_s / wall_s,
        cpu_s=cpu_s,
        cpu_fraction=cpu_s / wall_s,
    )


async def _timed(
    runner: str,
    servers: _Servers,
    llms: Sequence[LoadLLMServer],
    samples: int,
    steps: int,
    work: Callable[[], Awaitable[Any]],
) -> tuple[RunMetrics, Any]:
    before = await asyncio.to_thread(servers.snapshot)
    cpu0, wall0 = time.process_time(), time.monotonic()
    result = await work()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    after = await asyncio.to_thread(servers.snapshot)
    return _measure(runner, servers, llms, before, after, wall, cpu, samples, steps), result


def build_engine(
    *,
    loop: LoopConfig,
    generators: Sequence[Generator],
    scorer: TritonScorer,
    store: RunStore,
    targets: dict[str, bytes],
    concurrency: ConcurrencyConfig | None = None,
) -> tuple[Scheduler, EmbeddingObjective]:
    """The engine with its default configuration (the one place to adapt to its API), and
    its objective (whose cache the scale scenario reports)."""
    concurrency = concurrency or ConcurrencyConfig()
    retrier = Retrier(RetryConfig())
    objective = EmbeddingObjective(scorer, target="image", concurrency=concurrency, retrier=retrier)
    route = Route(
        task=IMAGE_CAPTION,
        loop=loop,
        objective=objective,
        readers={"image": MemoryReader(targets)},
    )
    engine = Scheduler(
        routes={IMAGE_CAPTION.name: route},
        concurrency=concurrency,
        retrier=retrier,
        generator=list(generators),
        store=store,
    )
    return engine, objective


def _unique_texts(store: RunStore, pool: Sequence[str]) -> int:
    """Distinct texts the run had to score: the pool and every new candidate."""
    db = sqlite3.connect(store.run_dir / "run.db")
    try:
        texts = {row[0] for row in db.execute("SELECT DISTINCT text FROM candidates")}
    finally:
        db.close()
    return len(texts | set(pool))


async def _sample_rss(
    into: list[tuple[float, float]], started: float, cached: list[int], objective: Objective
) -> None:
    """RSS over time into `into`, and the objective's values held in memory into `cached`."""
    while True:
        into.append((round(time.monotonic() - started, 2), _rss_mib()))
        cached.append(objective.statistics().cached)
        await asyncio.sleep(RSS_SAMPLE_S)


def _rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def _run_engine(
    runner: str,
    scenario: Scenario,
    servers: _Servers,
    llms: Sequence[LoadLLMServer],
    generators: Sequence[OpenAIGenerator],
    scorer: TritonScorer,
    workdir: Path,
) -> RunMetrics:
    loop = _loop_config(scenario)
    pool = make_pool(scenario.pool)
    targets = dict(make_targets(scenario.samples))
    store = RunStore.create(workdir / runner, {"benchmark": scenario.name}, pool)
    store.add_samples([(sid, {"image": sid}) for sid in targets])
    engine, objective = build_engine(
        loop=loop, generators=generators, scorer=scorer, store=store, targets=targets
    )
    samples = [Sample(sid, {"image": sid}) for sid in targets]
    rss: list[tuple[float, float]] = []
    cached: list[int] = []

    async def work() -> RunSummary:
        async with asyncio.TaskGroup() as tg:
            sampler = tg.create_task(_sample_rss(rss, time.monotonic(), cached, objective))
            try:
                return await engine.run(samples, {IMAGE_CAPTION.name: pool})
            finally:
                sampler.cancel()

    try:
        metrics, summary = await _timed(
            runner, servers, llms, len(samples), len(samples) * loop.steps, work
        )
        metrics.steps = summary.steps
        metrics.steps_per_s = summary.steps / metrics.wall_s
        metrics.unique_texts = _unique_texts(store, pool)
        cache = objective.statistics()
        metrics.extra = {
            "done": summary.done,
            "failed": summary.failed,
            "faults": summary.faults,
            "engine_texts_evaluated": summary.texts_evaluated,
            "engine_generator_requests": summary.generator_requests,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_mib_during_run": _thin(rss),
            "cache_hits": cache.cache_hits,
            "cache_misses": cache.cache_misses,
            "cache_peak_in_memory": max([*cached, cache.cached]),
            "cache_spilled_to_disk": cache.spilled,
        }
    finally:
        store.close()
    return metrics


def _thin(series: list[tuple[float, float]], points: int = 12) -> list[tuple[float, float]]:
    step = max(1, len(series) // points)
    return [*series[::step], *series[-1:]]


async def _run_baseline(
    scenario: Scenario,
    servers: _Servers,
    generator: OpenAIGenerator,
    scorer: TritonScorer,
) -> RunMetrics:
    count = scenario.samples if scenario.baseline_samples is None else scenario.baseline_samples
    count = min(scenario.samples, count)
    pool = make_pool(scenario.pool)
    targets = make_targets(scenario.samples)[:count]
    loop = _loop_config(scenario)

    async def work() -> Any:
        return await run_baseline(
            task=IMAGE_CAPTION,
            loop=loop,
            generator=generator,
            scorer=scorer,
            samples=targets,
            pool=pool,
        )

    metrics, result = await _timed(
        "baseline", servers, servers.llms[:1], count, count * loop.steps, work
    )
    metrics.extra = {
        "baseline_text_encodes_counted": result.text_encodes,
        "group_size": GROUP_SIZE,
        "subset_of_samples": count < scenario.samples,
    }
    return metrics


async def _run_hand(scenario: Scenario, servers: _Servers, in_flight: int | None) -> RunMetrics:
    """The hand loop over every LLM server (round-robin), its semaphore at `in_flight`
    (None: the servers' total capacity)."""
    count = min(scenario.samples, scenario.hand_samples or scenario.samples)
    pool = make_pool(scenario.pool)
    targets = make_targets(scenario.samples)[:count]
    loop = _loop_config(scenario)
    capacity = sum(s.cost.capacity for s in servers.llms)
    permits = capacity if in_flight is None else in_flight
    runner = "hand" if in_flight is None else f"hand@{in_flight}"

    async def work() -> Any:
        return await run_hand_loop(
            task=IMAGE_CAPTION,
            loop=loop,
            endpoints=[HandEndpoint(s.base_url, s.cost.model) for s in servers.llms],
            triton_url=servers.scorer.grpc_url,
            text_model=TEXT_MODEL,
            target_model=IMAGE_MODEL,
            samples=targets,
            pool=pool,
            in_flight=permits,
            passes=scenario.hand_passes,
        )

    metrics, result = await _timed(runner, servers, servers.llms, count, 0, work)
    metrics.steps = result.steps
    metrics.steps_per_s = result.steps / metrics.wall_s
    metrics.unique_texts = result.unique_texts
    metrics.extra = {
        "in_flight": permits,
        "endpoints": len(servers.llms),
        "failed": result.failed,
        "passes": result.passes,
        "wasted_steps": result.wasted_steps,
        "hand_generator_requests": result.generator_requests,
        "retries": result.retries,
        "tries": TRIES,
        "backoff_s": BACKOFF_S,
        "hand_text_encodes_counted": result.text_encodes,
        "subset_of_samples": count < scenario.samples,
        "errors": result.errors,
    }
    return metrics


def _loop_config(scenario: Scenario) -> LoopConfig:
    return LoopConfig(
        steps=scenario.steps,
        keep=scenario.keep,
        requested=scenario.requested,
        patience=scenario.patience,
    )


async def _run_all(scenario: Scenario, servers: _Servers, workdir: Path) -> list[RunMetrics]:
    async with AsyncExitStack() as stack:
        generators = [
            await stack.enter_async_context(
                OpenAIGenerator(GeneratorSettings(base_url=s.base_url, model=s.cost.model))
            )
            for s in servers.llms
        ]
        scorer = await stack.enter_async_context(
            TritonScorer(servers.scorer.grpc_url, text_model=TEXT_MODEL, target_model=IMAGE_MODEL)
        )
        runs: list[RunMetrics] = []
        if scenario.baseline_samples != 0:
            runs.append(await _run_baseline(scenario, servers, generators[0], scorer))
        await _fresh_window(scenario, runs)
        runs.append(
            await _run_engine(
                "engine", scenario, servers, servers.llms[:1], generators[:1], scorer, workdir
            )
        )
        if len(generators) > 1:
            await _fresh_window(scenario, runs)
            runs.append(
                await _run_engine(
                    f"engine-{len(generators)}-endpoints",
                    scenario,
                    servers,
                    servers.llms,
                    generators,
                    scorer,
                    workdir,
                )
            )
        for in_flight in scenario.hand:
            await _fresh_window(scenario, runs)
            runs.append(await _run_hand(scenario, servers, in_flight))
        return runs


async def _fresh_window(scenario: Scenario, runs: Sequence[RunMetrics]) -> None:
    """With a fixed-window rate limit, wait until the next run starts a window of its own."""
    faults = scenario.faults
    if runs and faults is not None and faults.rate_limit:
        await asyncio.sleep(faults.rate_window_s)


def run_scenario(scenario: Scenario, out: Path) -> dict[str, Any]:
    """Start the servers, run everything, write `<out>/<name>.json`, return its content."""
    with (
        tempfile.TemporaryDirectory(prefix=f"mils-bench-{scenario.name}-") as tmp,
        ExitStack() as stack,
    ):
        workdir = Path(tmp)
        scorer = stack.enter_context(
            LoadScorerServer(cost=scenario.scorer, workdir=workdir / "triton")
        )
        llms = [
            stack.enter_context(
                LoadLLMServer(
                    cost=cost,
                    faults=scenario.faults or LLMFaults(),
                    log_path=workdir / f"llm{i}.log",
                )
            )
            for i, cost in enumerate(scenario.llm_costs())
        ]
        runs = asyncio.run(_run_all(scenario, _Servers(llms, scorer), workdir))
    report = _report(scenario, runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{scenario.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _report(scenario: Scenario, runs: list[RunMetrics]) -> dict[str, Any]:
    by = {run.runner: run for run in runs}
    engine = by["engine"]
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "what": scenario.what,
        "workload": {
            "samples": scenario.samples,
            "steps": scenario.steps,
            "pool": scenario.pool,
            "keep": scenario.keep,
            "requested": scenario.requested,
            "patience": scenario.patience,
        },
        "servers": {
            "llm": asdict(scenario.llm),
            "llm_endpoints": scenario.endpoints,
            "llm_each": [asdict(cost) for cost in scenario.llm_costs()],
            "llm_faults": asdict(scenario.faults) if scenario.faults else None,
            "scorer": asdict(scenario.scorer),
        },
        "engine_config": to_dict(ConcurrencyConfig()),
        "runs": [asdict(run) | {"cpu_ms_per_step": _cpu_ms_per_step(run)} for run in runs],
    }
    if "baseline" in by:
        report["speedup"] = engine.steps_per_s / by["baseline"].steps_per_s
    if scenario.endpoints > 1:
        report["endpoint_scaling"] = by[_engine_on(scenario.endpoints)].steps_per_s / (
            engine.steps_per_s
        )
    hands = [run for run in runs if run.runner.startswith("hand")]
    if hands:
        report["engine_over_hand"] = {
            run.runner: by[_engine_on(run.extra["endpoints"])].steps_per_s / run.steps_per_s
            for run in hands
        }
    if scenario.scale:
        rss = engine.extra["rss_mib_during_run"]
        report["engine_events_per_s"] = engine.steps_per_s
        report["engine_cpu_fraction"] = engine.cpu_fraction
        report["engine_cpu_ms_per_step"] = _cpu_ms_per_step(engine)
        report["peak_rss_mib"] = engine.extra["peak_rss_mib"]
        report["rss_growth_mib"] = rss[-1][1] - rss[0][1]
    report["targets"] = _targets(scenario, report, runs)
    return report


def _cpu_ms_per_step(run: RunMetrics) -> float:
    """This process's CPU time per sample-step of the run, ms (engine + client libraries)."""
    return 1000 * run.cpu_s / max(run.steps, 1)


def _engine_on(endpoints: int) -> str:
    """The engine run over `endpoints` LLM servers (all of them from the first)."""
    return "engine" if endpoints == 1 else f"engine-{endpoints}-endpoints"


def _targets(scenario: Scenario, report: dict[str, Any], runs: list[RunMetrics]) -> dict[str, Any]:
    """The issue's targets that this scenario can check, each with its measured value."""
    engines = [run for run in runs if run.runner.startswith("engine")]
    targets: dict[str, Any] = {
        "efficiency_ge_0.90": [round(run.efficiency, 3) for run in engines],
        "efficiency_ge_0.90_met": all(run.efficiency >= 0.90 for run in engines),
        "encodes_eq_unique_texts_met": all(run.text_encodes == run.unique_texts for run in engines),
    }
    if scenario.name == "generator-bound" and "speedup" in report:
        targets["speedup_ge_5_met"] = report["speedup"] >= 5
    if "endpoint_scaling" in report and scenario.other_llms == ():
        targets["endpoint_scaling_ge_1.8_met"] = report["endpoint_scaling"] >= 1.8
    if "engine_over_hand" in report:
        ratios = report["engine_over_hand"].values()
        targets["engine_ge_hand_met"] = all(ratio >= 1.0 for ratio in ratios)
        targets["hand_lost_samples"] = any(
            run.extra["failed"] for run in runs if run.runner.startswith("hand")
        )
    if scenario.scale:
        targets["engine_cpu_fraction"] = round(report["engine_cpu_fraction"], 3)
        targets["engine_cpu_ms_per_step_le_1"] = round(report["engine_cpu_ms_per_step"], 2)
        targets["engine_cpu_ms_per_step_le_1_met"] = report["engine_cpu_ms_per_step"] <= 1.0
        targets["rss_growth_mib"] = round(report["rss_growth_mib"], 1)
    return targets


_COLUMNS = (
    "scenario",
    "runner",
    "wall s",
    "steps/s",
    "gen util",
    "scr util",
    "encodes",
    "unique",
    "bound s",
    "effic.",
    "cpu/wall",
    "cpu ms/step",
    "failed",
    "speedup",
    "engine / hand",
)


def format_table(reports: Sequence[dict[str, Any]]) -> str:
    """The results as an aligned text table."""
    rows = [_COLUMNS]
    for report in reports:
        for run in report["runs"]:
            ratio, versus = "", ""
            if run["runner"].startswith("hand"):
                versus = f"{report['engine_over_hand'][run['runner']]:.2f}x"
            if run["runner"] == "engine" and "speedup" in report:
                ratio = f"{report['speedup']:.1f}x"
            elif run["runner"].startswith("engine-") and "endpoint_scaling" in report:
                ratio = f"{report['endpoint_scaling']:.2f}x 1 ep"
            rows.append(
                (
                    report["scenario"],
                    run["runner"],
                    f"{run['wall_s']:.1f}",
                    f"{run['steps_per_s']:.1f}",
                    f"{run['generator_utilisation']:.2f}",
                    f"{run['scorer_utilisation']:.2f}",
                    str(run["text_encodes"]),
                    "" if run["unique_texts"] is None else str(run["unique_texts"]),
                    f"{run['lower_bound_s']:.1f}",
                    f"{run['efficiency']:.2f}",
                    f"{run['cpu_fraction']:.2f}",
                    f"{run['cpu_ms_per_step']:.2f}",
                    _failed(run),
                    ratio,
                    versus,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def _failed(run: dict[str, Any]) -> str:
    """Samples lost (engine: failed; hand loop: still failed after its passes, and passes)."""
    extra = run["extra"]
    if run["runner"].startswith("hand"):
        passes = f" ({extra['passes']} passes)" if extra["passes"] > 1 else ""
        return f"{extra['failed']}{passes}"
    return str(extra.get("failed", ""))


def summarise_hand(reports: Sequence[dict[str, Any]]) -> str:
    """One line: the engine over the hand loop across every hand run (geometric mean, min)."""
    ratios = {
        f"{report['scenario']}/{runner}": ratio
        for report in reports
        for runner, ratio in report.get("engine_over_hand", {}).items()
    }
    if not ratios:
        return ""
    worst = min(ratios, key=ratios.__getitem__)
    best_case = [r for name, r in ratios.items() if name.endswith("/hand")]
    return (
        f"engine / hand over {len(ratios)} hand runs: geometric mean "
        f"{_geomean(ratios.values()):.2f}x, min {ratios[worst]:.2f}x ({worst}); over the "
        f"{len(best_case)} at the servers' capacity: {_geomean(best_case):.2f}x"
    )


def _geomean(values: Iterable[float]) -> float:
    found = list(values)
    return math.exp(sum(math.log(v) for v in found) / len(found)) if found else math.nan


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS]
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small workloads (a smoke run)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON files go")
    p.add_argument(
        "--scenario",
        action="append",
        choices=names,
        help="run only these (repeatable); default: all",
    )
    p.add_argument("--samples", type=int, help="override every scenario's sample count")
    p.add_argument(
        "--full-baseline",
        action="store_true",
        help="run the baseline over all samples, not a subset of whole groups",
    )
    return p.parse_args(argv)


def _selected(args: argparse.Namespace) -> list[Scenario]:
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    if args.quick:
        chosen = [quick(s) for s in chosen]
    if args.samples:
        chosen = [replace(s, samples=args.samples) for s in chosen]
    if args.full_baseline:
        chosen = [replace(s, baseline_samples=None) if s.baseline_samples else s for s in chosen]
    return chosen


def main(argv: Sequence[str] | None = None) -> None:
    """Run the selected scenarios; print the table; write the JSON files."""
    args = _parse_args(argv)
    # Benchmarks measure the engine, not its console: errors only (the warnings would be
    # the retries of the faults some scenarios inject, printed between the tables).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    reports = []
    for scenario in _selected(args):
        print(f"running {scenario.name}: {scenario.what} ...", file=sys.stderr, flush=True)
        reports.append(run_scenario(scenario, args.out))
        print(format_table(reports[-1:]), file=sys.stderr, flush=True)
    print(format_table(reports))
    if summary := summarise_hand(reports):
        print(f"\n{summary}")
    print(f"\nJSON per scenario in {args.out}/")


if __name__ == "__main__":
    main()
