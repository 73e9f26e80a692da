"""The generation benchmark: does the MILS loop find prompts a renderer draws right, and edits
that give an image another's style, where the truth is known?

    python -m benchmarks.generation [--quick] [--task t2i|style|both] [--scenes N]
                                    [--pairs N] [--steps S] [--out benchmarks/figures]

Both tasks run on the closed world (`mils.tasks.scenes`) on the offline local stack: real
Triton serving the world's renderer (`scene_render`), editor (`scene_edit`), scene scorer
(`scene_text`/`scene_image`) and style/content losses (`scene_style`), real llama.cpp with
SmolLM2 in both prompting modes.

t2i-enhance: each prompt is a held-out scene described with the PARAPHRASE grammar, whose
words ("rhombus", "violet", "upper-right corner") the scorer reads and the renderer does not
(it ignores unknown words), so the prompt as written renders wrong. Each candidate rewrite is
rendered with a fixed seed and scored against the ORIGINAL prompt (alignment). Per step, over
the prompts: the alignment of the best prompt's render (step 0: the prompt as written), and
what that render shows (the scene inside the PNG) against the intended scene: per attribute
kind (shape, colour, size, position, count, background) the fraction of renders right for
every object, "kinds" their mean, "attrs" the fraction of object attributes right, "exact".
A last row renders the canonical description of the truth: the renderer's ceiling.

style-transfer: each pair is a held-out scene (content) and the same scene edited by a
two-part instruction in the editor's words (another background and stripes or noise, or a
recoloured object and blur): the style image. Per step: the loss of the best instruction
(1000 x style + content, the task's), its two terms, and "match": the fraction of pairs
whose best edit shows exactly the style image's scene. Step 0 is the best line of the pool;
a last row scores the instruction that made the style image (the "true" edit).

Per MILS row: where the time went. Generating: the run's generator request durations (its
Prometheus histogram, as `benchmarks.quality` reads it). Rendering and scoring: Triton's
per-model statistics (`/v2/models/<model>/stats` on the HTTP port) read before and after the
run: the busy time of the model's executions (a batch counted once) and its requests. And
the render cache: candidates scored (rows of the run's store), distinct render keys among
them (texts; for the editor, texts per content image) and the renders Triton executed,
never more than the distinct keys (the engine renders a key once).

It prints tables, writes `<out>/generation.json` and plots the loss and alignment by step
to `<out>/generation.png` (`generation-quick.*` with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from mils import (
    ConcurrencyConfig,
    GeneratorSettings,
    LoopConfig,
    MetricsConfig,
    RendererSettings,
    Sample,
    ScorerSettings,
    open_run,
)
from mils._local import LOCAL_RENDERERS, LOCAL_SCORERS, model_repository
from mils.adapters import AlignmentScorer, TritonStyleScorer
from mils.adapters.local_stack import OFFLINE_GENERATORS, LlamaServer, TritonServer
from mils.tasks import STYLE_TRANSFER
from mils.tasks.scenes import (
    BACKGROUNDS,
    COLOURS,
    KINDS,
    PARAPHRASE,
    POSITIONS,
    Scene,
    Split,
    Verdict,
    canonical,
    check_caption,
    describe,
    edit_image,
    scene_of_image,
    scenes,
)

__all__ = ["Setup", "main", "run_benchmark", "style_pair"]

DEFAULT_OUT = Path("benchmarks/figures")
LOG_DIR = Path("benchmarks/results/logs/generation")
FIRST_SCENE = 5_000
"""Held-out scenes from here on, as in `benchmarks.quality`."""
FIRST_PAIR = 6_000
"""The style pairs' content scenes: held out, and not the t2i prompts' scenes."""
MAX_TOKENS = 256
TABLE_STEPS = (1, 3, 5, 10)
GENERATOR = "smollm2"
T2I, STYLE = "t2i-enhance", "style-transfer"


@dataclass(frozen=True, slots=True)
class Setup:
    """The size of one benchmark run."""

    scenes: int = 8
    """t2i prompts."""
    pairs: int = 6
    """Style-transfer content/style pairs."""
    steps: int = 10
    keep: int = 10
    requested: int = 10
    style_pool_lines: int = 100
    """Lines of the style-transfer task's pool (a seeded draw): each is an edit and a style
    scoring per pair at step 0."""
    modes: tuple[str, ...] = ("chat", "completion")
    tasks: tuple[str, ...] = (T2I, STYLE)


FULL = Setup()
QUICK = Setup(scenes=2, pairs=2, steps=2, style_pool_lines=20)


# ---------------------------------------------------------------------------------------------
# The items: paraphrased prompts, and content/style pairs with a known edit


def t2i_items(n: int) -> dict[str, tuple[Scene, str]]:
    """Sample id -> (the intended scene, its PARAPHRASE description: the prompt)."""
    held_out = zip(range(n), scenes(Split.HELD_OUT, FIRST_SCENE), strict=False)
    return {
        f"prompt-{i + 1:02d}": (scene, describe(scene, random.Random(i), PARAPHRASE))
        for i, scene in held_out
    }


def style_pair(scene: Scene, index: int) -> tuple[str, bytes, bytes]:
    """(the true instruction, the content PNG, the style PNG): the style image is the content
    edited by a two-part instruction the editor parses (kind by `index`: background and
    stripes, a recolour and blur, background and noise).

    Raises:
        ValueError: the instruction leaves the scene unchanged (a bug of this function).
    """
    rng = random.Random(index)
    other_background = rng.choice([b for b in BACKGROUNDS if b != scene.background])
    first = min(scene.objects, key=lambda o: POSITIONS.index(o.position))
    other_colour = rng.choice([c for c in COLOURS if c != first.colour])
    instruction = (
        f"make the background {other_background} and add stripes",
        f"make the {first.colour} {first.shape} {other_colour} and blur the image",
        f"make the background {other_background} and add noise",
    )[index % 3]
    content = scene.png()
    style = edit_image(content, instruction, 0)
    if style == content:
        raise ValueError(f"style pair {index}: {instruction!r} does not change {scene}")
    return instruction, content, style


def style_items(n: int, folder: Path) -> dict[str, tuple[str, Path, Path]]:
    """Sample id -> (true instruction, content file, style file), written under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    items = {}
    for i, scene in zip(range(n), scenes(Split.HELD_OUT, FIRST_PAIR), strict=False):
        sid = f"pair-{i + 1:02d}"
        instruction, content, style = style_pair(scene, i)
        (folder / f"{sid}-content.png").write_bytes(content)
        (folder / f"{sid}-style.png").write_bytes(style)
        items[sid] = (instruction, folder / f"{sid}-content.png", folder / f"{sid}-style.png")
    return items


def style_pool(lines: int) -> list[str]:
    """A seeded draw of `lines` lines of the style-transfer task's pool file."""
    assert STYLE_TRANSFER.pool_file is not None
    text = STYLE_TRANSFER.pool_file.read_text(encoding="utf-8")
    pool = [line.strip() for line in text.splitlines() if line.strip()]
    return sorted(random.Random(0).sample(pool, min(lines, len(pool))))


# ---------------------------------------------------------------------------------------------
# Triton's per-model statistics


def triton_stats(http_url: str, model: str) -> dict[str, float]:
    """A model's cumulative counters: requests (ok, failed), executions, busy seconds (the
    executions' input + infer + output time, each batch once: a request's own compute time
    counts its whole batch) and seconds requests queued."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as r:
        [stats] = json.load(r)["model_stats"]
    inference = stats["inference_stats"]
    busy_ns = sum(
        batch[phase]["ns"]
        for batch in stats["batch_stats"]
        for phase in ("compute_input", "compute_infer", "compute_output")
    )
    return {
        "requests": inference["success"]["count"],
        "failed": inference["fail"]["count"],
        "executions": stats["execution_count"],
        "busy_s": busy_ns / 1e9,
        "queue_s": inference["queue"]["ns"] / 1e9,
    }


def settled_stats(http_url: str, model: str, *, wait_s: float = 0.2) -> dict[str, float]:
    """`triton_stats` once two reads `wait_s` apart agree: Triton adds a request to its
    statistics just after its response is sent, so a read right after the last response
    can miss it (seen: one render counted in the next run's window)."""
    last = triton_stats(http_url, model)
    for _ in range(20):
        time.sleep(wait_s)
        now = triton_stats(http_url, model)
        if now == last:
            return now
        last = now
    return last


def _delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


def _summed(stats: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {key: sum(s[key] for s in stats) for key in stats[0]}


# ---------------------------------------------------------------------------------------------
# Running and reading runs


@dataclass(slots=True)
class Result:
    """One row family: a proposer's best text per item at each step."""

    name: str
    task: str
    kind: str  # "mils", "start" (step 0: the prompt as written / the best pool line), "truth"
    mode: str = ""
    wall_s: float = 0.0
    generate_s: float = 0.0
    """Seconds the generator's requests took (one at a time)."""
    requests: int = 0
    render: dict[str, float] = field(default_factory=dict)
    """The renderer model's Triton statistics over the run (`triton_stats`, differences)."""
    score: dict[str, float] = field(default_factory=dict)
    """The scorer models' Triton statistics over the run, summed."""
    cache: dict[str, int] = field(default_factory=dict)
    """Candidates scored, distinct render keys among them, texts sent but not scored, and
    the renders Triton executed."""
    per_step: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Row:
    sample_id: str
    step: int
    text: str
    score: float
    terms: dict[str, float]
    artefact: bytes


def _best_rows(run_dir: Path) -> Iterator[_Row]:
    """Per sample and committed step: the best text, its value, terms and render (the
    candidate row where that text was first scored)."""
    db = sqlite3.connect(run_dir / "run.db")
    try:
        steps = db.execute("SELECT sample_id, step, best_text, best_score FROM steps").fetchall()
        found = db.execute(
            "SELECT sample_id, text, terms, artefact FROM candidates ORDER BY step DESC, pos DESC"
        ).fetchall()
    finally:
        db.close()
    first = {(sid, text): (terms, artefact) for sid, text, terms, artefact in found}
    for sid, step, text, score in sorted(steps):
        if (sid, text) not in first:  # the store records every best text's render
            raise RuntimeError(
                f"{run_dir}/run.db: the best text of sample {sid!r} at step {step} has no "
                f"candidate row (no terms, no render): {text[:80]!r}"
            )
        terms, artefact = first[sid, text]
        yield _Row(sid, step, text, score, json.loads(terms), (run_dir / artefact).read_bytes())


def cache_counts(run_dir: Path, task: str, pool: Sequence[str]) -> dict[str, int]:
    """Candidates scored and the distinct render keys among them: texts for a renderer that
    reads no input, (sample, text) for the editor (each sample its own content image).

    The store keeps step 0's own texts and the pool's best, not every pool line: each
    sample scored the whole pool at step 0, counted here from `pool`.
    """
    db = sqlite3.connect(run_dir / "run.db")
    try:
        rows = db.execute("SELECT sample_id, step, text FROM candidates").fetchall()
        samples = [sid for (sid,) in db.execute("SELECT id FROM samples")]
    finally:
        db.close()
    pooled = set(pool)
    keys = {(sid, text) for sid, _, text in rows} | {(sid, t) for sid in samples for t in pool}
    if task == T2I:
        keys = {("", text) for _, text in keys}
    return {
        "scored": len(samples) * len(pool)
        + sum(step > 0 or text not in pooled for _, step, text in rows),
        "distinct": len(keys),
    }


def t2i_metrics(truth: Mapping[str, Scene], rows: Sequence[_Row]) -> dict[str, Any]:
    """What the best prompts' renders show against the intended scenes, and their alignment."""
    rendered = [scene_of_image(row.artefact) for row in rows]
    checks = [
        check_caption(truth[row.sample_id], canonical(scene))
        for row, scene in zip(rows, rendered, strict=True)
    ]
    n = len(checks)
    return {
        "exact": sum(c.exact for c in checks) / n,
        "accuracy": sum(c.accuracy for c in checks) / n,
        "attributes": sum(c.attributes_right for c in checks) / n,
        "by_kind": {k: sum(c.verdicts[k] is Verdict.RIGHT for c in checks) / n for k in KINDS},
        "alignment": float(np.mean([row.score for row in rows])),
        "best": [row.text for row in rows],
        "rendered": [canonical(scene).strip() for scene in rendered],
    }


def style_metrics(styles: Mapping[str, Scene], rows: Sequence[_Row]) -> dict[str, Any]:
    """The best instructions' losses, and how many edits show the style image's scene."""
    rendered = [scene_of_image(row.artefact) for row in rows]
    return {
        "loss": float(np.mean([row.score for row in rows])),
        "style": float(np.mean([row.terms["style"] for row in rows])),
        "content": float(np.mean([row.terms["content"] for row in rows])),
        "match": sum(
            _same(scene, styles[row.sample_id]) for row, scene in zip(rows, rendered, strict=True)
        )
        / len(rows),
        "best": [row.text for row in rows],
    }


def _same(a: Scene, b: Scene) -> bool:
    """The same picture: objects (in any order), background, effects (in order), seed."""
    return replace(a, objects=tuple(sorted(a.objects, key=str))) == replace(
        b, objects=tuple(sorted(b.objects, key=str))
    )


def read_run(
    run_dir: Path, task: str, truth: Mapping[str, Scene], candidates: Mapping[int, float]
) -> dict[int, dict[str, Any]]:
    """Per step every sample committed: the metrics of the best texts over all samples."""
    by_step: dict[int, list[_Row]] = {}
    for row in _best_rows(run_dir):
        by_step.setdefault(row.step, []).append(row)
    measure = t2i_metrics if task == T2I else style_metrics
    return {
        step: {**measure(truth, rows), "candidates": candidates.get(step, 0.0)}
        for step, rows in sorted(by_step.items())
        if len(rows) == len(truth)
    }


def _candidates_by_step(run_dir: Path, samples: int) -> dict[int, float]:
    """Mean candidates the loop scored per sample up to each step (0 at step 0)."""
    db = sqlite3.connect(run_dir / "run.db")
    try:
        counts = dict(
            db.execute("SELECT step, count(*) FROM candidates WHERE step > 0 GROUP BY step")
        )
    finally:
        db.close()
    total, out = 0, {}
    for step in range(max(counts, default=0) + 1):  # a step without candidates adds 0
        total += counts.get(step, 0)
        out[step] = total / samples
    return out


@dataclass(frozen=True, slots=True)
class _Stack:
    """The servers' endpoints and the models of the task being run."""

    triton: TritonServer
    generator_url: str
    work: Path


async def _loop_run(
    stack: _Stack,
    task: str,
    samples: list[Sample],
    mode: str,
    loop: LoopConfig,
    pool: list[str] | None,
    out: Path,
) -> Result:
    """One MILS run, with its generator time from the run's metrics and Triton's counters
    read around it."""
    scorers, renderer_model = LOCAL_SCORERS[task], LOCAL_RENDERERS[task]
    scorer_models = [m for m in (scorers.text, scorers.target, scorers.style) if m]
    http = stack.triton.http_url

    async def stats() -> tuple[dict[str, float], dict[str, float]]:
        render = await asyncio.to_thread(settled_stats, http, renderer_model)
        scored = [await asyncio.to_thread(settled_stats, http, m) for m in scorer_models]
        return render, _summed(scored)

    settings = GeneratorSettings(
        base_url=stack.generator_url, model=GENERATOR, max_tokens=MAX_TOKENS,
        prompt_mode=mode,  # type: ignore[arg-type]
    )  # fmt: skip
    registry = CollectorRegistry()
    render_before, score_before = await stats()
    started = time.perf_counter()
    async with open_run(
        task,
        samples,
        generator=settings,
        scorer=ScorerSettings(
            url=stack.triton.grpc_url,
            text_model=scorers.text,
            target_model=scorers.target,
            style_model=scorers.style,
        ),
        renderer=RendererSettings(
            kind="triton",
            url=stack.triton.grpc_url,
            model=renderer_model,
            image_input="content" if task == STYLE else None,
        ),
        out=out,
        loop=loop,
        pool=pool,
        concurrency=ConcurrencyConfig(generator_in_flight=1),
        metrics=MetricsConfig(registry=registry),
    ) as run:
        summary = await run.wait()
        took = [  # read before the run ends: its metrics leave the registry then
            (sample.name, sample.value)
            for metric in registry.collect()
            if metric.name == "mils_generator_request_duration_seconds"
            for sample in metric.samples
        ]
    wall = time.perf_counter() - started
    render_after, score_after = await stats()
    if summary.failed:
        raise RuntimeError(f"{summary.failed} samples failed in {out}; see {out}/log.jsonl")
    render = _delta(render_after, render_before)
    return Result(
        name=f"MILS {GENERATOR} {mode}",
        task=task,
        kind="mils",
        mode=mode,
        wall_s=wall,
        generate_s=sum(value for name, value in took if name.endswith("_sum")),
        requests=int(sum(value for name, value in took if name.endswith("_count"))),
        render=render,
        score=_delta(score_after, score_before),
        cache={
            **cache_counts(out, task, pool or []),
            # Sent but not scored (refused by the renderer, or a score not finite): Triton
            # counts a refused request as an inference too.
            "unscorable": summary.texts_unscorable,
            "renders": int(render["requests"]),
        },
    )


async def _t2i_truth(
    stack: _Stack, items: Mapping[str, tuple[Scene, str]]
) -> dict[int, dict[str, Any]]:
    """The canonical description of each intended scene, rendered and scored against the
    prompt as the loop scores its candidates."""
    settings = ScorerSettings(url=stack.triton.grpc_url, text_model="scene_text",
                              target_model="scene_image")  # fmt: skip
    renderer = RendererSettings(kind="triton", url=stack.triton.grpc_url, model="scene_render")
    rows = []
    async with AlignmentScorer(settings) as scorer, renderer.build() as render:
        for sid, (scene, prompt) in items.items():
            text = canonical(scene)
            image = await render.render(text, {})
            terms = await scorer.score(image, text, {"prompt": prompt.encode()})
            rows.append(_Row(sid, 0, text, terms["alignment"], dict(terms), image))
    truth = {sid: scene for sid, (scene, _) in items.items()}
    return {0: {**t2i_metrics(truth, rows), "candidates": 1.0}}


async def _style_truth(
    stack: _Stack, items: Mapping[str, tuple[str, Path, Path]]
) -> dict[int, dict[str, Any]]:
    """The instruction that made each style image, rendered and scored like a candidate."""
    url = stack.triton.grpc_url
    renderer = RendererSettings(kind="triton", url=url, model="scene_edit", image_input="content")
    rows = []
    async with TritonStyleScorer(url, model="scene_style") as scorer, renderer.build() as render:
        for sid, (instruction, content, style) in items.items():
            inputs = {"content": content.read_bytes(), "style": style.read_bytes()}
            image = await render.render(instruction, inputs)
            terms = dict(await scorer.score(image, instruction, inputs))
            loss = STYLE_TRANSFER.objective.weights["style"] * terms["style"] + terms["content"]  # type: ignore[union-attr]
            rows.append(_Row(sid, 0, instruction, loss, terms, image))
    styles = {sid: scene_of_image(style.read_bytes()) for sid, (_, _, style) in items.items()}
    return {0: {**style_metrics(styles, rows), "candidates": 1.0}}


async def _task_rows(stack: _Stack, setup: Setup, task: str) -> list[Result]:
    """The start row (step 0), a MILS row per prompting mode, and the ceiling."""
    loop = LoopConfig(steps=setup.steps, keep=setup.keep, requested=setup.requested)
    if task == T2I:
        t2i = t2i_items(setup.scenes)
        samples = [Sample(sid, {"prompt": prompt}) for sid, (_, prompt) in t2i.items()]
        truth = {sid: scene for sid, (scene, _) in t2i.items()}
        pool = None
    else:
        pairs = style_items(setup.pairs, stack.work / "pairs")
        samples = [
            Sample(sid, {"content": str(content), "style": str(style)})
            for sid, (_, content, style) in pairs.items()
        ]
        truth = {sid: scene_of_image(style.read_bytes()) for sid, (_, _, style) in pairs.items()}
        pool = style_pool(setup.style_pool_lines)
    rows = []
    for mode in setup.modes:
        out = stack.work / "runs" / f"{task}-{mode}"
        result = await _loop_run(stack, task, samples, mode, loop, pool, out)
        result.per_step = read_run(out, task, truth, _candidates_by_step(out, len(samples)))
        print(f"  {task} {result.name}: {result.wall_s:.0f} s", file=sys.stderr)
        rows.append(result)
    start_name = "prompt as written" if task == T2I else "best pool line"
    start = Result(f"{start_name} (step 0)", task, "start")
    start.per_step = {0: rows[0].per_step[0]}
    if task == T2I:
        ceiling = Result("canonical description (renderer's ceiling)", task, "truth")
        ceiling.per_step = await _t2i_truth(stack, t2i)
    else:
        ceiling = Result("true edit instruction", task, "truth")
        ceiling.per_step = await _style_truth(stack, pairs)
    return [start, *rows, ceiling]


async def run_benchmark(setup: Setup, work: Path, log_dir: Path) -> list[Result]:
    """Every row of the benchmark; starts and stops the servers it needs."""
    models = {
        m
        for task in setup.tasks
        for m in (
            LOCAL_RENDERERS[task],
            LOCAL_SCORERS[task].text,
            LOCAL_SCORERS[task].target,
            LOCAL_SCORERS[task].style,
        )
        if m
    }
    with ExitStack() as servers:
        triton = servers.enter_context(
            TritonServer(
                model_repository=model_repository(),
                log_path=log_dir / "triton.log",
                models=tuple(sorted(models)),
            )
        )
        llama = servers.enter_context(
            LlamaServer(
                model_path=OFFLINE_GENERATORS[GENERATOR].find(),
                alias=GENERATOR,
                log_path=log_dir / f"llama-{GENERATOR}.log",
            )
        )
        stack = _Stack(triton, llama.base_url, work)
        results = []
        for task in setup.tasks:
            print(f"{task} ...", file=sys.stderr)
            results += await _task_rows(stack, setup, task)
    return results


# ---------------------------------------------------------------------------------------------
# Reporting


def table_rows(results: Sequence[Result], steps: int) -> list[tuple[Result, int, dict[str, Any]]]:
    """(row, step, metrics) in print order: steps 1, 3, 5, 10 and the last of each loop."""
    shown = sorted({s for s in TABLE_STEPS if s <= steps} | {steps})
    rows = []
    for result in results:
        if result.kind != "mils":
            rows.append((result, 0, result.per_step[0]))
            continue
        rows.extend((result, s, result.per_step[s]) for s in shown if s in result.per_step)
    return rows


def print_tables(results: Sequence[Result], steps: int) -> None:
    t2i = [r for r in results if r.task == T2I]
    if t2i:
        kinds = " ".join(f"{k[:5]:>5}" for k in KINDS)
        print(f"\nt2i-enhance (rendered scene vs intended; alignment with the prompt)\n"
              f"{'row':<44} {'step':>4} {'exact':>5} {kinds} {'kinds':>5} {'attrs':>5} "
              f"{'align':>6} {'cands':>6}")  # fmt: skip
        for r, step, m in table_rows(t2i, steps):
            by_kind = " ".join(f"{m['by_kind'][k]:5.2f}" for k in KINDS)
            print(f"{r.name:<44} {step:>4} {m['exact']:5.2f} {by_kind} "
                  f"{m['accuracy']:5.2f} {m['attributes']:5.2f} {m['alignment']:6.3f} "
                  f"{m['candidates']:6.1f}")  # fmt: skip
    style = [r for r in results if r.task == STYLE]
    if style:
        print(f"\nstyle-transfer (loss = 1000 x style + content, lower is better)\n"
              f"{'row':<44} {'step':>4} {'loss':>7} {'style':>7} {'content':>7} {'match':>5} "
              f"{'cands':>6}")  # fmt: skip
        for r, step, m in table_rows(style, steps):
            print(f"{r.name:<44} {step:>4} {m['loss']:7.2f} {m['style']:7.4f} "
                  f"{m['content']:7.4f} {m['match']:5.2f} {m['candidates']:6.1f}")  # fmt: skip


def print_timings(results: Sequence[Result], steps: int) -> None:
    """Per MILS row: seconds generating, rendering and scoring per step (all items), and
    the render cache."""
    print(f"\ntime per step (all items; {steps} steps): generate (LLM requests), render and "
          f"score (Triton busy time); the render cache\n"
          f"{'task':<15} {'row':<24} {'wall':>6} {'gen':>6} {'render':>6} {'score':>6} "
          f"{'reqs':>5} {'scored':>6} {'distinct':>8} {'renders':>7} {'unscorable':>7} "
          f"{'hits':>5}")  # fmt: skip
    for r in results:
        if r.kind != "mils":
            continue
        c = r.cache
        print(f"{r.task:<15} {r.name:<24} {r.wall_s / steps:6.2f} {r.generate_s / steps:6.2f} "
              f"{r.render['busy_s'] / steps:6.3f} {r.score['busy_s'] / steps:6.3f} "
              f"{r.requests:>5} {c['scored']:>6} {c['distinct']:>8} {c['renders']:>7} "
              f"{c['unscorable']:>10} "
              f"{c['scored'] + c['unscorable'] - c['renders']:>5}")  # fmt: skip


def plot(results: Sequence[Result], path: Path) -> None:
    """Alignment and attributes right (t2i) and the loss (style transfer) of the best text
    by step, one line per MILS row, the ceilings dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(T2I, "alignment", "alignment of the best prompt's render"),
              (T2I, "attributes", "attributes right in the render"),
              (STYLE, "loss", "loss of the best edit (lower is better)")]  # fmt: skip
    panels = [p for p in panels if any(r.task == p[0] for r in results)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (task, key, label) in zip(axes[0], panels, strict=True):
        for r in results:
            if r.task != task:
                continue
            if r.kind == "mils":
                steps = sorted(r.per_step)
                ax.plot(steps, [r.per_step[s][key] for s in steps], marker="o", markersize=3,
                        label=r.name)  # fmt: skip
            elif r.kind == "truth":
                ax.axhline(r.per_step[0][key], color="black", linewidth=0.8, linestyle=":",
                           label=r.name)  # fmt: skip
        ax.set(xlabel="step", ylabel=label, title=task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2 items, 2 steps per task")
    parser.add_argument("--task", choices=("t2i", "style", "both"), default="both")
    parser.add_argument("--scenes", type=int, help=f"t2i prompts (default {FULL.scenes})")
    parser.add_argument("--pairs", type=int, help=f"style pairs (default {FULL.pairs})")
    parser.add_argument("--steps", type=int, help=f"loop steps (default {FULL.steps})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where JSON and PNG go")
    args = parser.parse_args(argv)
    tasks = {"t2i": (T2I,), "style": (STYLE,), "both": (T2I, STYLE)}[args.task]
    overrides = {"scenes": args.scenes, "pairs": args.pairs, "steps": args.steps}
    setup = replace(
        QUICK if args.quick else FULL,
        tasks=tasks,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    logging.basicConfig(level=logging.ERROR)  # a tiny model's odd replies are logged as warnings
    args.out.mkdir(parents=True, exist_ok=True)
    name = "generation" + ("-quick" if args.quick else "")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mils-generation-") as tmp:
        results = asyncio.run(run_benchmark(setup, Path(tmp), LOG_DIR / name))
    wall = time.perf_counter() - started
    print_tables(results, setup.steps)
    print_timings(results, setup.steps)
    report = {"setup": asdict(setup), "wall_s": wall, "results": [asdict(r) for r in results]}
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot(results, args.out / f"{name}.png")
    print(f"\n{wall / 60:.1f} min; wrote {args.out / name}.json and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
