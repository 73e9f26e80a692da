"""What a run's log.jsonl says beyond its database: sessions, retries, faults, warnings.

The CLI writes the log (`configure_logging(log_file=...)`): every level, one structlog JSON
object a line. A run driven from Python may have none, and a session that was killed has no
`run_finished` line; so every fact here is what the log holds and no more: totals come from
the sessions that finished, and a figure no event carried stays None, which a report shows
as "not recorded", never as 0.

The generator's adaptive in-flight limit is read from `progress` events (`gen_limit`), which
a run logs at most every 5 s while steps commit; a very short run may hold one or none.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["LogFacts", "Session", "read_log"]

_TOTALS = (
    "candidates_scored",
    "texts_evaluated",
    "generator_requests",
    "replies_without_candidates",
    "replies_truncated",
    "candidates_too_long",
    "candidates_over_limit",
    "texts_unscorable",
    "cancelled",
)
_WANTED = {"run_started", "run_finished", "endpoint_retry", "endpoint_cooling_down", "progress"}
_EVENT = re.compile(r'"event": ?"(\w+)"')
_LOUD = re.compile(r'"level": ?"(warning|error|critical)"')


@dataclass(frozen=True, slots=True)
class Session:
    """One `mils caption` or `mils resume` of the run, as its log lines tell it."""

    started: float | None
    """Unix time of its `run_started` line."""
    finished: Mapping[str, Any] | None
    """The fields of its `run_finished` line (a `RunSummary`), or None: killed, or running."""
    ended: float | None
    """Unix time of its `run_finished` line."""


@dataclass(frozen=True, slots=True)
class LogFacts:
    """What log.jsonl holds about a run."""

    found: bool
    """Whether the run directory has a log.jsonl at all."""
    sessions: list[Session] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    """Fault kind (timeout, 429, 5xx, connect, ...) -> endpoint calls retried for it."""
    cooldowns: Counter[str] = field(default_factory=Counter)
    """Generator endpoint -> times it was cooled down after repeated failures."""
    warnings: Counter[str] = field(default_factory=Counter)
    """Event name -> lines logged at warning level or above."""
    limit: list[tuple[float, int]] = field(default_factory=list)
    """(unix time, the generators' in-flight limit) from `progress` lines, in log order."""
    unreadable: int = 0
    """Lines that are not JSON objects (a line cut off when a process was killed)."""

    @property
    def finished(self) -> list[Mapping[str, Any]]:
        return [s.finished for s in self.sessions if s.finished is not None]

    def total(self, name: str) -> int | float | None:
        """`name` (a `RunSummary` field) summed over the finished sessions, or None if none."""
        values = [s[name] for s in self.finished if isinstance(s.get(name), int | float)]
        return sum(values) if values else None

    def faults(self) -> Counter[str] | None:
        """Transient faults by kind over the finished sessions, or None if none finished."""
        if not self.finished:
            return None
        counts: Counter[str] = Counter()
        for summary in self.finished:
            counts.update({str(k): int(v) for k, v in dict(summary.get("faults") or {}).items()})
        return counts


def read_log(run_dir: Path) -> LogFacts:
    """The facts of `run_dir`/log.jsonl (an empty `LogFacts` with found=False if absent).

    Reading is line by line and skips lines that name no event of interest before decoding
    them, so the log of a long run (many MB of per-step lines) reads in seconds.
    """
    path = run_dir / "log.jsonl"
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            return _facts(lines)
    except FileNotFoundError:
        return LogFacts(found=False)


def _facts(lines: Iterable[str]) -> LogFacts:
    facts = LogFacts(found=True)
    unreadable = 0
    for line in lines:
        name = _EVENT.search(line)
        loud = _LOUD.search(line)
        if not loud and (name is None or name[1] not in _WANTED):
            unreadable += name is None and bool(line.strip())
            continue
        try:
            event = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if isinstance(event, dict):
            _take(facts, event, loud is not None)
    return replace(facts, unreadable=unreadable)


def _take(facts: LogFacts, event: dict[str, Any], loud: bool) -> None:
    name = str(event.get("event"))
    when = _time(event.get("timestamp"))
    if loud:
        facts.warnings[name] += 1
    if name == "run_started":
        facts.sessions.append(Session(started=when, finished=None, ended=None))
    elif name == "run_finished":
        summary = {k: v for k, v in event.items() if k in (*_TOTALS, "faults", "wall_s", "steps")}
        summary |= {k: event[k] for k in ("samples", "done", "failed", "skipped") if k in event}
        last = facts.sessions[-1] if facts.sessions else None
        started = last.started if last is not None and last.finished is None else None
        if last is not None and last.finished is None:
            facts.sessions.pop()
        facts.sessions.append(Session(started=started, finished=summary, ended=when))
    elif name == "endpoint_retry":
        facts.retries[str(event.get("fault", "unknown"))] += 1
    elif name == "endpoint_cooling_down":
        facts.cooldowns[str(event.get("endpoint", "unknown"))] += 1
    elif name == "progress" and isinstance(event.get("gen_limit"), int) and when is not None:
        facts.limit.append((when, event["gen_limit"]))


def _time(value: Any) -> float | None:
    """Unix time of an ISO timestamp ("2026-01-01T12:00:00.5Z"), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
