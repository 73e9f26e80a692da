"""`mils report RUN_DIR`: one self-contained HTML page of a run, to read, keep or share.

The page is one file with everything inline (thumbnails and plots as base64 `data:` URIs,
its style in the page, no script, nothing fetched): it can be attached to an issue, kept as a
CI artefact or mailed, and it still shows the images after the run's inputs are deleted.
The price is size, so the page is bounded: at most `limit` sample cards (chosen by `sort`;
the page says how many it leaves out and how to see them), thumbnails of 128 px JPEG and
small palette PNG plots, a few KB a card: a 10,000-sample run gives a page of about
1.3 MB with the default limit (`limit=0`, every card, about 60 MB).

Safety: captions are an LLM's output and paths and errors can hold anything, so every text
is HTML-escaped; and the page's Content-Security-Policy allows no script at all and images
only from `data:` URIs, so a caption "<script>...</script>" shows as text and would not run
even if an escape were missed.

Everything shown is read from the run directory (run.db read-only, config.json, log.jsonl):
what it does not record is shown as "not recorded", never as a number.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mils._eval import SampleCaptions, read_captions
from mils._references import References, load_references, shown
from mils._report_figures import (
    SamplePlotter,
    check_installed,
    overview_plot,
    thumbnail,
)
from mils._runlog import LogFacts, read_log
from mils.adapters.media import IMAGE_EXTENSIONS
from mils.engine import ConfigError, StoreError
from mils.engine.store import write_atomic
from mils.tasks import TASKS, InputKind, Task

__all__ = ["DEFAULT_LIMIT", "SORTS", "ReportWritten", "cmd_report", "write_report"]

DEFAULT_LIMIT = 200
SORTS = ("input", "best", "worst", "failed")
"""Card orders: the run's input order, best score first, worst first, failed first."""
_FAILED_SHOWN = 20
"""Distinct failure reasons listed; the rest are counted."""
_LARGE_PAGE = 50_000_000
"""Bytes past which the command suggests a smaller limit."""


@dataclass(frozen=True, slots=True)
class ReportWritten:
    """What `write_report` wrote."""

    path: Path
    bytes: int
    cards: int
    samples: int
    with_references: int
    """Samples that matched the references passed (0 when none were)."""


@dataclass(frozen=True, slots=True)
class _RunFacts:
    """What run.db says about the run as a whole."""

    steps: int
    """Committed steps, step 0 (the initial pool's ranking) not counted."""
    step_times: list[float]
    """When each of those steps was committed (unix time), sorted."""
    first: float | None
    """The earliest row of the steps table (step 0 included): when work began."""
    candidates: int
    """New candidates scored and committed."""


def write_report(
    run_dir: Path,
    out: Path,
    *,
    references: References | None = None,
    limit: int = DEFAULT_LIMIT,
    sort: str = "input",
) -> ReportWritten:
    """Write the HTML report of the run at `run_dir` to `out` (atomically).

    Args:
        references: ground-truth captions shown in each matched sample's card.
        limit: most sample cards on the page; 0 for every sample.
        sort: which cards come first, one of `SORTS`.

    Raises:
        StoreError: `run_dir` is not a run of ours, or its database cannot be read.
        ConfigError: matplotlib or Pillow is missing, a bad `limit` or `sort`, or `out`
            cannot be written.
    """
    if limit < 0:
        raise ConfigError(f"`limit` is {limit}; pass 0 or more (0: a card for every sample)")
    if sort not in SORTS:
        raise ConfigError(f"`sort` is {sort!r}; pass one of {', '.join(SORTS)}")
    check_installed()
    samples = read_captions(run_dir)
    config = _config(run_dir)
    task = TASKS.get(str(config.get("task")))
    chosen = _chosen(samples, sort, limit, task is None or task.higher_is_better)
    page = _Page(run_dir, samples, config, task, references)
    text = "".join(page.render(chosen, sort, _run_facts(run_dir), read_log(run_dir)))
    data = text.encode("utf-8")
    _write(out, data)
    return ReportWritten(
        path=out,
        bytes=len(data),
        cards=len(chosen),
        samples=len(samples),
        with_references=len(page.truth),
    )


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _run_facts(run_dir: Path) -> _RunFacts:
    try:
        db = sqlite3.connect((run_dir / "run.db").resolve().as_uri() + "?mode=ro", uri=True)
        try:
            times = [t for (t,) in db.execute("SELECT created_at FROM steps WHERE step > 0")]
            (first,) = db.execute("SELECT MIN(created_at) FROM steps").fetchone()
            (candidates,) = db.execute("SELECT COUNT(*) FROM candidates").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {run_dir / 'run.db'}: {exc}") from None
    return _RunFacts(len(times), sorted(times), first, candidates)


def _chosen(
    samples: Sequence[SampleCaptions], sort: str, limit: int, higher_is_better: bool
) -> list[SampleCaptions]:
    """The samples that get a card, in page order."""
    ordered = list(samples)
    if sort in ("best", "worst"):
        sign = -1 if (sort == "best") == higher_is_better else 1
        scored = [s for s in ordered if s.best_score is not None]
        scored.sort(key=lambda s: sign * (s.best_score or 0.0))
        ordered = scored + [s for s in ordered if s.best_score is None]
    elif sort == "failed":
        rank = {"failed": 0, "done": 2}
        ordered.sort(key=lambda s: rank.get(s.status, 1))
    return ordered[:limit] if limit else ordered


def _write(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report {path}: {exc.strerror or exc}; pass --out in a "
            "writable folder"
        ) from None


# -- the page ------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Any value as HTML text: every <, >, &, and quote escaped."""
    return html.escape(str(value), quote=True)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


class _Page:
    """Renders the page; one instance per report."""

    def __init__(
        self,
        run_dir: Path,
        samples: Sequence[SampleCaptions],
        config: Mapping[str, Any],
        task: Task | None,
        references: References | None,
    ) -> None:
        self.run_dir = run_dir
        self.samples = samples
        self.config = config
        self.task = task
        self.references = references
        self.truth = {
            s.id: found
            for s in samples
            if references is not None and (found := references.match(s.id, s.inputs))
        }

    def render(
        self, chosen: Sequence[SampleCaptions], sort: str, facts: _RunFacts, log: LogFacts
    ) -> Iterator[str]:
        yield _HEAD.format(title=_e(f"mils report: {self.run_dir.name}"))
        yield f"<h1>mils report: {_e(self.run_dir.name)}</h1>\n"
        yield "<section class='summary'><h2>Run</h2>\n<table class='facts'>\n"
        for label, value in self._summary(facts, log):
            yield f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>\n"
        yield "</table>\n"
        yield from self._failures()
        yield from self._overview(facts, log)
        yield "</section>\n"
        yield from self._cards(chosen, sort)
        yield "</body>\n</html>\n"

    # -- the summary --------------------------------------------------------------------

    def _summary(self, facts: _RunFacts, log: LogFacts) -> Iterator[tuple[str, str]]:
        status = Counter(s.status for s in self.samples)
        done, failed = status.pop("done", 0), status.pop("failed", 0)
        rest = f", {sum(status.values())} not finished ({_counts(status)})" if status else ""
        yield "run directory", str(self.run_dir.resolve())
        yield from self._settings()
        yield "samples", f"{len(self.samples)}: {done} done, {failed} failed{rest}"
        yield "steps committed", f"{facts.steps} (step 0, the initial pool's ranking, not counted)"
        if facts.step_times and facts.first is not None:
            span = facts.step_times[-1] - facts.first
            rate = f"; {facts.steps / span:.2f} steps/s" if span > 0 else ""
            yield (
                "committed",
                (
                    f"from {_when(facts.first)} to {_when(facts.step_times[-1])} "
                    f"({_seconds(span)} of wall clock, a pause before a resume included{rate})"
                ),
            )
        yield from self._sessions(log)
        yield "candidates scored", f"{facts.candidates} (new candidates committed, run.db)"
        yield from self._from_log(log)
        if self.references is not None:
            yield (
                "ground truth",
                (
                    f"{len(self.truth)} of {len(self.samples)} samples have references in "
                    f"{self.references.source}"
                ),
            )

    def _settings(self) -> Iterator[tuple[str, str]]:
        config = self.config
        if not config:
            yield "settings", "not recorded (config.json missing or unreadable)"
            return
        task = self.task
        order = "" if task is None else (
            ", higher scores are better" if task.higher_is_better else ", lower is better"
        )  # fmt: skip
        yield "task", f"{config.get('task', 'not recorded')}{order}"
        tasks = config.get("tasks")
        if isinstance(tasks, dict) and tasks:  # a run of several tasks: each its own loop
            yield "tasks", ", ".join(map(str, tasks))
            for name, own in tasks.items():
                loop, scorer = (own or {}).get("loop") or {}, (own or {}).get("scorer") or {}
                yield f"loop ({name})", ", ".join(f"{k} {v}" for k, v in loop.items())
                yield (
                    f"scorer ({name})",
                    f"{scorer.get('text_model', '?')} / {scorer.get('target_model', '?')}",
                )
        loop = config.get("loop")
        if isinstance(loop, dict) and not tasks:
            yield "loop", ", ".join(f"{k} {v}" for k, v in loop.items())
        endpoints = config.get("endpoints")
        if isinstance(endpoints, dict):
            gen, scorer = endpoints.get("generator") or {}, endpoints.get("scorer") or {}
            urls = ", ".join(map(str, gen.get("base_urls") or []))
            yield "generator", f"{gen.get('model', '?')} at {urls or '?'}"
            yield (
                "scorer",
                (
                    f"{scorer.get('text_model', '?')} / {scorer.get('target_model', '?')} at "
                    f"{scorer.get('url', '?')}"
                ),
            )

    def _sessions(self, log: LogFacts) -> Iterator[tuple[str, str]]:
        if not log.sessions:
            return
        finished = log.finished
        wall = sum(float(s.get("wall_s", 0)) for s in finished)
        unfinished = len(log.sessions) - len(finished)
        more = f"; {unfinished} more did not log an end (killed, or running)" if unfinished else ""
        yield (
            "engine time",
            (f"{_seconds(wall)} over {len(finished)} finished session(s) (log.jsonl){more}"),
        )

    def _from_log(self, log: LogFacts) -> Iterator[tuple[str, str]]:
        if not log.found:
            missing = "not recorded: no log.jsonl (the CLI writes one; a program logs its own way)"
            for label in ("texts embedded", "generator requests", "retries", "generator limit"):
                yield label, missing
            return
        missing = "not recorded (no run_finished line in log.jsonl)"
        partial = " (sessions that finished)" if len(log.finished) < len(log.sessions) else ""
        embedded = log.total("texts_evaluated")
        yield "texts embedded", missing if embedded is None else (
            f"{embedded} sent to the scorer{partial}; each unique text once per session"
        )  # fmt: skip
        requests = log.total("generator_requests")
        yield "generator requests", missing if requests is None else f"{requests}{partial}"
        retries = sum(log.retries.values())
        yield "retries", f"{retries}: {_counts(log.retries)}" if retries else "none"
        faults = log.faults()
        if faults is not None:
            yield "transient faults", f"{_counts(faults)}" if faults else "none"
        if log.cooldowns:
            yield "endpoints cooled down", _counts(log.cooldowns)
        for name, label in _NOTES.items():
            if count := log.total(name):
                yield "note", f"{count} {label}"
        if log.warnings:
            yield "warnings (by event)", _counts(log.warnings)
        if log.limit:
            values = [v for _, v in log.limit]
            yield (
                "generator limit",
                (
                    f"{min(values)} to {max(values)}, last {values[-1]} "
                    f"({len(values)} progress lines; plotted below)"
                ),
            )
        else:
            yield "generator limit", "not recorded (log.jsonl has no progress lines with it)"
        if log.unreadable:
            yield "log", f"{log.unreadable} lines of log.jsonl are not JSON (cut off?)"

    def _failures(self) -> Iterator[str]:
        reasons: dict[str, list[str]] = {}
        for s in self.samples:
            if s.status == "failed":
                reasons.setdefault(s.error or "no reason recorded", []).append(s.id)
        if not reasons:
            return
        yield "<h3>Failed samples by reason</h3>\n<table class='failures'>\n"
        yield "<tr><th>samples</th><th>reason</th><th>which</th></tr>\n"
        ranked = sorted(reasons.items(), key=lambda kv: -len(kv[1]))
        for reason, ids in ranked[:_FAILED_SHOWN]:
            yield f"<tr><td>{len(ids)}</td><td>{_e(reason)}</td><td>{_e(shown(ids))}</td></tr>\n"
        yield "</table>\n"
        if len(ranked) > _FAILED_SHOWN:
            more = sum(len(ids) for _, ids in ranked[_FAILED_SHOWN:])
            yield f"<p>{len(ranked) - _FAILED_SHOWN} more reasons ({more} samples).</p>\n"

    def _overview(self, facts: _RunFacts, log: LogFacts) -> Iterator[str]:
        by_step: dict[int, list[float]] = {}
        for s in self.samples:
            for step, score in s.scores.items():
                by_step.setdefault(step, []).append(score)
        if not by_step:
            yield "<p>No step committed yet: nothing to plot.</p>\n"
            return
        uri = overview_plot(by_step, facts.step_times, log.limit)
        yield f"<img class='overview' alt='the run over steps and time' src='{uri}'>\n"

    # -- the cards ----------------------------------------------------------------------

    def _cards(self, chosen: Sequence[SampleCaptions], sort: str) -> Iterator[str]:
        total = len(self.samples)
        yield f"<h2>Samples</h2>\n<p class='note'>{len(chosen)} of {total} samples, "
        yield f"{_e(_SORT_WORDS[sort])}."
        if len(chosen) < total:
            yield (
                f" {total - len(chosen)} not shown: <code>mils report {_e(self.run_dir)} "
                f"--limit 0</code> shows every sample (a larger page), <code>--sort "
                "worst</code> or <code>--sort failed</code> other ones first; results.jsonl "
                "has every sample."
            )
        yield "</p>\n<div class='cards'>\n"
        plotter = SamplePlotter()
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            media = pool.map(self._media, chosen)  # thumbnails decode in parallel
            for sample, shown_media in zip(chosen, media, strict=True):
                yield self._card(sample, shown_media, plotter)
        yield "</div>\n"

    def _media(self, sample: SampleCaptions) -> str:
        names = sample.input_names or ("input",) * len(sample.inputs)
        shown = "".join(self._input(n, v) for n, v in zip(names, sample.inputs, strict=False))
        if sample.artefact is not None:  # the render of the best text
            shown += self._input("best render", str(self.run_dir / sample.artefact))
        return shown

    def _input(self, name: str, source: str) -> str:
        kind = self._kind(name, source)
        label = f"<figcaption>{_e(name)}: {_e(source)}</figcaption>"
        if kind is InputKind.TEXT:
            return f"<figure class='text'><blockquote>{_e(source)}</blockquote>{label}</figure>"
        if kind is not InputKind.IMAGE:
            there = (
                "not previewed" if os.path.isfile(source) else "missing: no file at this path now"
            )
            return f"<figure><p class='missing'>{_e(there)}</p>{label}</figure>"
        preview = thumbnail(source)
        if preview.uri is None:
            return f"<figure><p class='missing'>{_e(preview.note)}</p>{label}</figure>"
        return (
            f"<figure><img src='{preview.uri}' width='{preview.width}' "
            f"height='{preview.height}' alt='{_e(name)}'"
            f"{' class=enlarged' if preview.enlarged else ''}>{label}</figure>"
        )

    def _kind(self, name: str, source: str) -> InputKind | None:
        """The input's kind as the task declares it; by file extension for unknown tasks."""
        if self.task is not None and name in {i.name for i in self.task.inputs}:
            return self.task.input(name).kind
        return InputKind.IMAGE if Path(source).suffix.lower() in IMAGE_EXTENSIONS else None

    def _card(self, sample: SampleCaptions, media: str, plotter: SamplePlotter) -> str:
        score = "" if sample.best_score is None else f" · best {sample.best_score:.4f}"
        parts = [
            f"<article class='card {_e(sample.status)}' id='sample-{_e(sample.id)}'>",
            f"<header><h3>{_e(sample.id)}</h3><span class='status'>{_e(sample.status)}</span>"
            + (f"<span class='task'>{_e(sample.task)}</span>" if sample.task else "")
            + f"<span class='score'>{len([k for k in sample.steps if k > 0])} steps{score}</span>"
            "</header>",
            f"<div class='top'><div class='media'>{media}</div>",
        ]
        if sample.scores:
            parts.append(
                f"<img class='plot' alt='best score by step' src='{plotter.plot(sample.scores)}'>"
            )
        parts.append("</div>")
        if sample.error:
            parts.append(f"<p class='error'>failed: {_e(sample.error)}</p>")
        parts.append(self._steps(sample))
        if (truth := self.truth.get(sample.id)) is not None:
            items = "".join(f"<li>{_e(t)}</li>" for t in truth)
            parts.append(f"<div class='truth'><h4>ground truth</h4><ul>{items}</ul></div>")
        parts.append("</article>\n")
        return "".join(parts)

    def _steps(self, sample: SampleCaptions) -> str:
        if not sample.steps:
            return "<p class='note'>no committed step yet</p>"
        rows, last = [], None
        for step in sorted(sample.steps):
            text = sample.steps[step]
            same = " class='same'" if text == last else ""
            rows.append(
                f"<tr{same}><td>{step}</td><td class='text'>{_e(text)}</td>"
                f"<td>{sample.scores.get(step, float('nan')):.4f}</td></tr>"
            )
            last = text
        return (
            "<table class='steps'><tr><th>step</th><th>best text after it</th>"
            f"<th>score</th></tr>{''.join(rows)}</table>"
        )


_NOTES = {
    "replies_without_candidates": "generator replies held no new candidate",
    "replies_truncated": "replies cut off by the token limit (last line dropped)",
    "candidates_too_long": "reply lines too long to be candidates",
    "candidates_over_limit": "candidates past the per-step limit, not scored",
    "texts_unscorable": "texts the scorer could not score",
    "cancelled": "samples cancelled",
}
_SORT_WORDS = {
    "input": "in the run's input order",
    "best": "best score first",
    "worst": "worst score first",
    "failed": "failed first, then unfinished, then done, each in input order",
}
_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fafafa; }}
h1 {{ font-size: 1.5em; margin: 0 0 .5em; }}
table {{ border-collapse: collapse; }}
th, td {{ text-align: left; vertical-align: top; padding: 2px 8px 2px 0; }}
.facts th {{ white-space: nowrap; color: #555; font-weight: 600; }}
.failures td, .failures th {{ border-bottom: 1px solid #ddd; }}
.overview {{ display: block; max-width: 100%; margin: 1em 0; }}
.note {{ color: #555; }}
.cards {{ display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); }}
.card {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }}
.card.failed {{ border-color: #d33; }}
.card header {{ display: flex; gap: 10px; align-items: baseline; }}
.card h3 {{ margin: 0; font-size: 1.1em; overflow-wrap: anywhere; }}
.status {{ font-size: .8em; padding: 0 6px; border-radius: 8px; background: #e6eefc; }}
.failed .status {{ background: #fde2e2; }}
.score {{ margin-left: auto; color: #555; white-space: nowrap; }}
.top {{ display: flex; gap: 12px; align-items: flex-start; margin: 6px 0; }}
.media {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; max-width: 180px; }}
figcaption {{ font-size: .75em; color: #666; overflow-wrap: anywhere; }}
.missing {{ width: 128px; margin: 0; padding: 30px 4px; background: #f3f3f3; color: #a22;
  font-size: .85em; text-align: center; }}
.plot {{ width: 260px; height: 120px; }}
img.enlarged {{ image-rendering: pixelated; }}
.error {{ color: #a22; overflow-wrap: anywhere; }}
.steps {{ width: 100%; font-size: .9em; }}
.steps td:first-child, .steps td:last-child {{ white-space: nowrap; color: #555; }}
.steps .text {{ overflow-wrap: anywhere; }}
.steps tr.same .text {{ color: #999; }}
.truth h4 {{ margin: 6px 0 0; font-size: .9em; }}
.truth ul {{ margin: 2px 0; padding-left: 1.2em; color: #1a5c2a; }}
</style>
</head>
<body>
"""


# -- the command -----------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    """`mils report`: write the page, say where it is and how large."""
    references = load_references(args.references) if args.references else None
    out = args.out or args.run_dir / "report.html"
    started = time.monotonic()
    written = write_report(
        args.run_dir, out, references=references, limit=args.limit, sort=args.sort
    )
    if references is not None and not written.with_references:
        print(
            f"mils report: no sample of {args.run_dir} has references in {references.source}; "
            "a sample matches by its id or its input's file name or stem",
            file=sys.stderr,
        )
    size = (
        f"{written.bytes / 1e6:.1f} MB" if written.bytes >= 1e6 else f"{written.bytes // 1000} KB"
    )
    print(
        f"wrote {out} ({size}, {written.cards} of {written.samples} samples, "
        f"{time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    if written.bytes > _LARGE_PAGE:
        print(
            f"mils report: {out} is large for a browser; a smaller --limit makes it lighter",
            file=sys.stderr,
        )
    return 0
