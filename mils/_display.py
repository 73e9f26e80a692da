"""What the CLI shows while and after a run: a live display drawn from `Run.statistics()`,
the listing of best texts, and the summary.

On a terminal the live display (rich) is a progress bar with samples done and failed,
steps/s and the ETA, and a line per generator endpoint (requests in flight, limit, waiting,
latency); it fits the terminal's width, redraws in place, and log lines print above it.
Elsewhere it is a plain line every few seconds, or a JSON line (`--progress json`). While a
rate limit pauses a generator endpoint, each says until when; under requests- or
tokens-per-minute limits, each says which are in force ("learned": stated by the endpoint's
headers). Each shows the generator tokens spent so far (and their cost when the run has
prices); "~" marks estimated ones.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mils._api import Run
from mils.engine import RunStatistics, RunSummary, Usage

__all__ = ["print_results", "print_summary", "show_progress"]

PLAIN_EVERY_S = 5.0


async def show_progress(run: Run, *, mode: str, stream: TextIO | None = None) -> None:
    """Draw progress until cancelled: mode "bar", "plain", "json" or "off"."""
    out = stream or sys.stderr
    steps_per_sample = run.config.loop.steps
    if mode == "off":
        return
    if mode == "bar":
        console = Console(file=out, stderr=out is sys.stderr)
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while True:
                live.update(_panel(run.statistics(), steps_per_sample))
                await asyncio.sleep(0.25)
    while True:
        await asyncio.sleep(PLAIN_EVERY_S)
        stats = run.statistics()
        if mode == "json":
            out.write(json.dumps(_fields(stats, steps_per_sample)) + "\n")
        else:
            out.write(_plain(stats, steps_per_sample) + "\n")
        out.flush()


def _eta_s(stats: RunStatistics, steps_per_sample: int) -> float | None:
    """Seconds left at the current rate (from committed steps; resumed samples make it an
    upper bound), or None before the first step."""
    if not stats.steps or not stats.elapsed_s:
        return None
    left = max(0, stats.total * steps_per_sample - stats.steps)
    return left / stats.steps_per_s


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _ended(stats: RunStatistics) -> int:
    return stats.done + stats.failed + stats.cancelled


def _panel(stats: RunStatistics, steps_per_sample: int) -> RenderableType:
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True)
    head.add_column(no_wrap=True, overflow="ellipsis")
    bar = ProgressBar(total=max(stats.total, 1), completed=_ended(stats), width=24)
    head.add_row(
        bar,
        f"{_ended(stats)}/{stats.total} samples, {stats.failed} failed | "
        f"{stats.steps_per_s:.1f} steps/s | ETA {_clock(_eta_s(stats, steps_per_sample))}",
    )
    endpoints = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    endpoints.add_column("endpoint", no_wrap=True, overflow="ellipsis", max_width=40)
    for name in ("in flight", "limit", "waiting", "latency"):
        endpoints.add_column(name, justify="right", no_wrap=True)
    for e in stats.endpoints:
        latency = f"{e.latency_s:.2f} s" if e.latency_s is not None else "-"
        endpoints.add_row(e.endpoint, str(e.in_flight), str(e.limit), str(e.waiting), latency)
    endpoints.add_row("scorer", str(stats.score_in_flight), "", str(stats.score_queued), "")
    parts: list[RenderableType] = [head, endpoints]
    if stats.usage.requests:
        tokens = _tokens(stats.usage, stats.cost)
        parts.append(Text(f"generator: {tokens}", no_wrap=True, overflow="ellipsis"))
    pause = _pause_note(stats)
    if pause:
        parts.append(Text(pause, style="yellow", no_wrap=True, overflow="ellipsis"))
    rates = _rate_note(stats)
    if rates:
        parts.append(Text(rates, no_wrap=True, overflow="ellipsis"))
    if stats.faults:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(stats.faults.items()))
        parts.append(Text(f"faults: {faults}", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


def _pause_note(stats: RunStatistics) -> str | None:
    """Which generator endpoints a rate limit pauses, and until when; None if none."""
    paused = [e for e in stats.endpoints if e.paused_until is not None]
    if not paused:
        return None
    if stats.paused_until is not None:
        left = max(0.0, stats.paused_until - time.time())
        return (
            f"rate limited (HTTP 429): generator paused until "
            f"{time.strftime('%H:%M:%S', time.localtime(stats.paused_until))} "
            f"(in {_clock(left)})"
        )
    return (
        f"rate limited (HTTP 429): {len(paused)} of {len(stats.endpoints)} generator "
        "endpoints paused"
    )


def _rate_note(stats: RunStatistics) -> str | None:
    """The requests- and tokens-per-minute limits in force per generator endpoint
    ("600 rpm (learned), 90000 tpm"); None when there are none."""
    notes = []
    for e in stats.endpoints:
        rate = e.rate
        if rate is None:
            continue
        limits = [
            f"{limit:g} {unit}" + (" (learned)" if learned else "")
            for limit, unit, learned in (
                (rate.rpm, "rpm", rate.rpm_learned),
                (rate.tpm, "tpm", rate.tpm_learned),
            )
            if limit is not None
        ]
        notes.append(f"{e.endpoint} {', '.join(limits)}")
    return "rate limits: " + "; ".join(notes) if notes else None


def _plain(stats: RunStatistics, steps_per_sample: int) -> str:
    faults = sum(stats.faults.values())
    pause = _pause_note(stats)
    rates = _rate_note(stats)
    return (
        f"{_ended(stats)}/{stats.total} samples ({stats.failed} failed), {stats.steps} steps, "
        f"{stats.steps_per_s:.1f} steps/s, ETA {_clock(_eta_s(stats, steps_per_sample))}, "
        f"generator {stats.generator_in_flight}/{stats.generator_limit} in flight, "
        f"{faults} faults, {_tokens(stats.usage, stats.cost)}"
        + (f"; {pause}" if pause else "")
        + (f"; {rates}" if rates else "")
    )


def _tokens(usage: Usage, cost: float | None) -> str:
    """Tokens in and out (and their cost): "1200 tokens in, 800 out, cost 0.0012"; the
    estimated requests said, as "(~3 of 10 requests estimated)"."""
    text = f"{usage.prompt_tokens} tokens in, {usage.completion_tokens} out"
    if cost is not None:
        text += f", cost {cost:.4f}"
    if usage.estimated_requests:
        text += f" (~{usage.estimated_requests} of {usage.requests} requests estimated)"
    return text


def _fields(stats: RunStatistics, steps_per_sample: int) -> dict[str, Any]:
    return {
        "time": round(time.time(), 3),
        "total": stats.total,
        "done": stats.done,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "steps": stats.steps,
        "steps_per_s": round(stats.steps_per_s, 3),
        "eta_s": _eta_s(stats, steps_per_sample),
        "generator_in_flight": stats.generator_in_flight,
        "generator_limit": stats.generator_limit,
        "score_queued": stats.score_queued,
        "faults": stats.faults,
        "generator_paused_until": stats.paused_until,
        "generator_requests": stats.usage.requests,
        "prompt_tokens": stats.usage.prompt_tokens,
        "completion_tokens": stats.usage.completion_tokens,
        "estimated_requests": stats.usage.estimated_requests,
        "cost": stats.cost,
    }


def print_results(rows: Iterable[Mapping[str, Any]], fmt: str, out: TextIO) -> None:
    """The best text per sample: tsv (id, score, text), a table, or the results lines."""
    rows = list(rows)
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    if fmt == "table":
        table = Table(show_edge=False, header_style="bold")
        table.add_column("sample", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True)
        table.add_column("best text (or error)")
        for row in rows:
            score = "FAILED" if row["status"] == "failed" else _score(row["best_score"])
            text = row["error"] if row["status"] == "failed" else row["best_text"] or ""
            table.add_row(row["sample_id"], score, text)
        Console(file=out, soft_wrap=False).print(table)
        return
    for row in rows:
        if row["status"] == "failed":
            out.write(f"{row['sample_id']}\tFAILED\t{row['error']}\n")
        elif row["best_text"] is not None:
            out.write(f"{row['sample_id']}\t{row['best_score']:.4f}\t{row['best_text']}\n")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_summary(summary: RunSummary, results: str, out: TextIO) -> None:
    """What the run did: a table on a terminal, plain lines elsewhere."""
    rate = summary.steps / summary.wall_s if summary.wall_s else 0.0
    counted = (
        (summary.replies_without_candidates, "reply", "replies", "without candidates"),
        (summary.replies_truncated, "reply", "replies", "cut off by --max-tokens"),
        (summary.candidates_too_long, "line", "lines", "too long to be candidates"),
        (summary.candidates_over_limit, "candidate", "candidates", "past --candidate-limit"),
        (summary.texts_unscorable, "text", "texts", "unscorable"),
    )
    notes = [f"{_count(n, one, many)} {what}" for n, one, many, what in counted if n]
    if summary.budget_reached:
        notes.append(f"stopped: budget {summary.budget_reached.replace('`', '')}")
    tokens = _tokens(summary.usage, summary.cost)
    if summary.run_usage != summary.usage:
        tokens += f"; whole run {_tokens(summary.run_usage, summary.run_cost)}"
    if summary.faults:
        notes.append(f"endpoint faults {summary.faults}")
    if out.isatty():
        table = Table(title="run summary", show_header=False, show_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("samples", f"{summary.done}/{summary.samples} done, {summary.failed} failed")
        table.add_row("steps", f"{summary.steps} in {summary.wall_s:.1f} s ({rate:.2f}/s)")
        table.add_row("candidates scored", str(summary.candidates_scored))
        table.add_row("texts embedded", str(summary.texts_evaluated))
        table.add_row("generator", f"{summary.usage.requests} requests, {tokens}")
        for note in notes:
            table.add_row("note", note)
        table.add_row("results", results)
        Console(file=out).print(table)
        return
    out.write(
        f"\n{summary.done}/{summary.samples} samples done, {summary.failed} failed, "
        f"{summary.steps} steps in {summary.wall_s:.1f} s ({rate:.2f} steps/s); "
        f"{summary.candidates_scored} candidates scored, {summary.texts_evaluated} texts embedded"
        f"; {summary.usage.requests} generator requests, {tokens}"
        + "".join(f"; {note}" for note in notes)
        + f"\nresults: {results}\n"
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
