"""The quality benchmark: does the MILS loop make captions better, where the truth is known?

    python -m benchmarks.quality [--quick] [--world scenes|motion|sounds] [--scenes N]
                                 [--steps S] [--out benchmarks/results]

It captions held-out scenes of the closed world (`mils.tasks.scenes`; with `--world`, the
moving scenes of `mils.tasks.motion` as videos or the sounds of `mils.tasks.sounds`, each
with its own trained scorer and ground truth) on the offline local
stack (real Triton serving the trained scene scorer, real llama.cpp servers) and checks every
best caption against the scene's ground truth. In one run, on the same scenes and pool:

- pool: the best line of the initial pool (step 0, no LLM);
- one shot: each generator asked once with the step-1 prompt, the scores hidden (chat: the
  lines without scores, shuffled; completion: every line given the same score, shuffled);
- MILS: each offline generator in both prompting modes, steps 1..S (requested R), and one
  generator (the faster) with 2.5 x R requested;
- two controls with the loop's budget (R new candidates per step, no LLM): random further pool
  lines, and an editor that changes one attribute word of a top candidate;
- truth: the ground-truth description scored by the same scorer (the scorer's ceiling).

Per row and step, over the scenes: exact matches; per attribute kind (shape, colour, size,
position, count, background) the fraction of best captions that get that kind right for
every object ("kinds": their mean); "attrs", the fraction of object attributes (shape,
colour, size, position of each object) stated right, a finer measure; the mean scorer
similarity; candidates scored per scene; and "propd": the fraction of scenes where some
candidate scored so far was exactly right (what a perfect selector could have picked: it
separates a proposer that never wrote the answer from a scorer that did not rank it first).
It prints a table, writes `<out>/quality.json` and plots attributes right and score by step
to `<out>/quality.png` (`quality-motion.*`, `quality-sounds.*` for the other worlds, whose
sections run the pool, one shot and MILS rows with the default generator, no controls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from mils import (
    ConcurrencyConfig,
    GeneratorSettings,
    LoopConfig,
    MetricsConfig,
    ScorerSettings,
    open_run,
)
from mils._local import LOCAL_SCORERS, model_repository
from mils._worlds import WORLDS, World
from mils.adapters.local_stack import OFFLINE_GENERATORS, LlamaServer, TritonServer
from mils.adapters.openai_generator import OpenAIGenerator
from mils.engine import ConfigError
from mils.engine.protocols import ChatMessage, Generator, Reply
from mils.tasks.scenes import COLOURS, POSITIONS, SHAPES, SIZES, Split, Verdict

__all__ = ["Setup", "main", "run_benchmark"]

DEFAULT_OUT = Path("benchmarks/results")
FIRST_SCENE = 5_000
"""Held-out scenes from here on: past those the scorer's measurements and tests use."""
MAX_TOKENS = 256
"""Ten captions fit; a rambling chat reply stops here."""
TABLE_STEPS = (1, 3, 5, 10)


@dataclass(frozen=True, slots=True)
class Setup:
    """The size of one benchmark run: the full one fits 15 minutes on 2 cores."""

    scenes: int = 8
    steps: int = 10
    keep: int = 10
    requested: int = 10
    more_requested: int = 25
    pool_lines: int = 300
    generators: tuple[str, ...] = ("smollm2", "gemma3-270m")
    modes: tuple[str, ...] = ("chat", "completion")
    more_generator: str = "smollm2"
    more_mode: str = "completion"
    """The generator and mode also run with `more_requested` (the faster generator: the two
    run side by side)."""
    world: str = "scenes"
    controls: bool = True
    """Run the proposers without an LLM (the attribute editor knows the scene world's words)."""


FULL = Setup()
FULL_AV = Setup(more_requested=0, generators=("smollm2",), controls=False)
"""A video or audio section: the pool, one shot and MILS, with the default generator."""
QUICK = Setup(
    scenes=3,
    steps=2,
    more_requested=0,
    generators=("smollm2",),
    modes=("chat", "completion"),
)


# ---------------------------------------------------------------------------------------------
# Proposers without an LLM (the controls) and the one-shot wrapper, as engine Generators


_SCORED_HEADER = re.compile(
    r", each with a similarity score against the [a-z ]+? \(higher is better\), worst first"
)
"""The prompt's words about scores and their order (the image, video and audio tasks')."""
_SCORED_LINE = re.compile(r"^\s*[-+]?\d*\.\d+: (?P<text>.+)$", re.MULTILINE)
_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
            "diamond": "diamonds", "star": "stars", "cross": "crosses"}  # fmt: skip
_ATTRIBUTE_WORDS: dict[str, list[str]] = {
    "position": list(POSITIONS),  # two words first: "top left" before "left"
    "shape": list(SHAPES),
    "plural": list(_PLURALS.values()),
    "colour": list(COLOURS),
    "size": list(SIZES),
}
_ATTRIBUTE = re.compile(
    r"\b(" + "|".join(w for words in _ATTRIBUTE_WORDS.values() for w in words) + r")\b"
)
_KIND_OF = {w: kind for kind, words in _ATTRIBUTE_WORDS.items() for w in words}


def edit_one_attribute(text: str, rng: random.Random) -> str:
    """`text` with one attribute word (shape, colour, size, position) changed to another of
    its kind; unchanged when it has none."""
    found = list(_ATTRIBUTE.finditer(text))
    if not found:
        return text
    match = rng.choice(found)
    word = match.group(0)
    other = rng.choice([w for w in _ATTRIBUTE_WORDS[_KIND_OF[word]] if w != word])
    return text[: match.start()] + other + text[match.end() :]


class _Control:
    """A Generator that proposes without an LLM, from the candidates shown in the prompt."""

    prompt_mode = "chat"

    def __init__(self, name: str, propose: Callable[[list[str], random.Random], list[str]]):
        self._name = name
        self._propose = propose

    @property
    def endpoint(self) -> str:
        return f"control:{self._name}"

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        prompt = messages[-1]["content"]
        shown = [m.group("text") for m in _SCORED_LINE.finditer(prompt)]  # worst first
        lines = self._propose(shown, random.Random(prompt))
        return Reply("\n".join(f"{i}. {text}" for i, text in enumerate(lines, 1)))

    async def continue_text(self, prompt: str) -> Reply:
        raise NotImplementedError("controls answer chat prompts only")

    async def aclose(self) -> None:
        return None


def random_lines_control(extra: Sequence[str], requested: int) -> _Control:
    """Proposes `requested` further pool lines at random each step."""
    return _Control("random-lines", lambda _shown, rng: rng.sample(list(extra), requested))


def edit_control(requested: int) -> _Control:
    """Proposes one-attribute edits of the best shown candidates, best first."""

    def propose(shown: list[str], rng: random.Random) -> list[str]:
        best_first = shown[::-1]
        return [edit_one_attribute(best_first[i % len(best_first)], rng) for i in range(requested)]

    return _Control("edit-one-attribute", propose)


class _ScoresHidden:
    """Wraps a Generator: the prompt's candidate lines lose their scores and their order."""

    def __init__(self, inner: Generator) -> None:
        self._inner = inner

    @property
    def endpoint(self) -> str:
        return self._inner.endpoint

    @property
    def prompt_mode(self) -> str:
        return self._inner.prompt_mode

    @staticmethod
    def _hide(prompt: str, replace: Callable[[str], str]) -> str:
        lines = prompt.split("\n")
        scored = [i for i, line in enumerate(lines) if _SCORED_LINE.match(line)]
        texts = [replace(_SCORED_LINE.match(lines[i]).group("text")) for i in scored]  # type: ignore[union-attr]
        random.Random(prompt).shuffle(texts)
        for i, text in zip(scored, texts, strict=True):
            lines[i] = text
        return "\n".join(lines)

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        last = messages[-1]
        hidden = self._hide(last["content"], lambda text: f"- {text}")
        hidden = _SCORED_HEADER.sub("", hidden)
        hidden = hidden.replace(" that would score higher than all of the above", "")
        return await self._inner.complete([*messages[:-1], {**last, "content": hidden}])

    async def continue_text(self, prompt: str) -> Reply:
        body, _, start = prompt.rpartition("\n")
        return await self._inner.continue_text(
            self._hide(body, lambda text: f"0.500: {text}") + "\n" + start
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


# ---------------------------------------------------------------------------------------------
# Running and reading runs


@dataclass(slots=True)
class Result:
    """One row family: a proposer's best caption per scene at each step."""

    name: str
    kind: str  # "pool", "mils", "one-shot", "control", "truth"
    generator: str = ""
    mode: str = ""
    requested: int = 0
    wall_s: float = 0.0
    generate_s: float = 0.0
    """Seconds the generator took over all its requests (its requests one at a time)."""
    requests: int = 0
    per_step: dict[int, dict[str, Any]] = field(default_factory=dict)


def _metrics(
    world: World,
    truth: Sequence[Any],
    best: Sequence[tuple[str, float]],
    candidates: Sequence[int],
    proposed_exact: Sequence[bool],
) -> dict[str, Any]:
    checks = [world.check(item, text) for item, (text, _) in zip(truth, best, strict=True)]
    n = len(checks)
    return {
        "exact": sum(c.exact for c in checks) / n,
        "accuracy": sum(c.accuracy for c in checks) / n,
        "attributes": sum(c.attributes_right for c in checks) / n,
        "by_kind": {
            k: sum(c.verdicts[k] is Verdict.RIGHT for c in checks) / n for k in world.kinds
        },
        "score": float(np.mean([score for _, score in best])),
        "candidates": float(np.mean(candidates)),
        "proposed_exact": sum(proposed_exact) / n,
        "best": [text for text, _ in best],
    }


def read_run(world: World, run_dir: Path, truth: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per committed step: the metrics of the best captions over all items."""
    db = sqlite3.connect(run_dir / "run.db")
    try:
        steps = db.execute("SELECT sample_id, step, best_text, best_score FROM steps").fetchall()
        candidates = db.execute("SELECT sample_id, step, text FROM candidates").fetchall()
    finally:
        db.close()
    ids = sorted(truth)
    best = {(sid, step): (text, score) for sid, step, text, score in steps}
    last = max(step for _, step, _, _ in steps)
    out = {}
    for step in range(last + 1):
        counts, proposed = [], []
        for sid in ids:
            mine = [text for s, k, text in candidates if s == sid and 1 <= k <= step]
            counts.append(len(mine))
            seen = {best[sid, 0][0], *mine}  # the pool's best, then every new candidate
            proposed.append(any(world.check(truth[sid], text).exact for text in seen))
        if all((sid, step) in best for sid in ids):
            rows = [best[sid, step] for sid in ids]
            out[step] = _metrics(world, [truth[sid] for sid in ids], rows, counts, proposed)
    return out


async def _caption(
    task: str,
    generator: GeneratorSettings | Generator,
    files: dict[str, Path],
    pool: list[str],
    loop: LoopConfig,
    scorer: ScorerSettings,
    out: Path,
) -> tuple[float, int]:
    """Run the loop; the seconds its generator requests took, and how many there were."""
    registry = CollectorRegistry()
    async with open_run(
        task,
        files.values(),
        generator=generator,
        scorer=scorer,
        out=out,
        loop=loop,
        concurrency=ConcurrencyConfig(generator_in_flight=1),
        pool=pool,
        metrics=MetricsConfig(registry=registry),
    ) as run:
        summary = await run.wait()
        took = [  # read before the run ends: its metrics leave the registry then
            (sample.name, sample.value)
            for metric in registry.collect()
            if metric.name == "mils_generator_request_duration_seconds"
            for sample in metric.samples
        ]
    if summary.failed:
        raise RuntimeError(f"{summary.failed} samples failed in {out}; see {out}/log.jsonl")
    seconds = sum(value for name, value in took if name.endswith("_sum"))
    return seconds, int(sum(value for name, value in took if name.endswith("_count")))


async def _score_truth(
    world: World, scorer: ScorerSettings, truth: dict[str, Any], files: dict[str, Path]
) -> dict[int, dict[str, Any]]:
    ids = sorted(truth)
    async with scorer.build() as encoder:
        texts = await encoder.embed_texts([world.canonical(truth[sid]) for sid in ids])
        scores = []
        for sid, text in zip(ids, texts, strict=True):
            target = await encoder.embed_target(files[sid].read_bytes())
            scores.append(float(text @ target / np.linalg.norm(text) / np.linalg.norm(target)))
    best = [(world.canonical(truth[sid]), score) for sid, score in zip(ids, scores, strict=True)]
    items = [truth[sid] for sid in ids]
    return {0: _metrics(world, items, best, [0] * len(ids), [True] * len(ids))}


async def run_benchmark(
    setup: Setup, work: Path, log_dir: Path
) -> tuple[list[Result], dict[str, float]]:
    """Every row of the benchmark, and the media's decode and encode times; starts and
    stops the servers it needs."""
    world = WORLDS[setup.world]
    truth: dict[str, Any] = {}
    images: dict[str, Path] = {}
    held_out = world.items(Split.HELD_OUT, FIRST_SCENE)
    for index, item in zip(range(setup.scenes), held_out, strict=False):
        sid = f"{world.noun}-{index + 1:02d}"
        truth[sid], images[sid] = item, work / world.name / f"{sid}{world.suffix}"
        images[sid].parent.mkdir(parents=True, exist_ok=True)
        images[sid].write_bytes(world.encode(item))
    lines = world.pool(setup.pool_lines * 4)
    pool, extra = lines[: setup.pool_lines], lines[setup.pool_lines :]
    loop = LoopConfig(steps=setup.steps, keep=setup.keep, requested=setup.requested)
    models = LOCAL_SCORERS[world.task]

    with ExitStack() as servers:
        triton = servers.enter_context(
            TritonServer(
                model_repository=model_repository(),
                log_path=log_dir / "triton.log",
                models=(models.text, models.target),
            )
        )
        scorer = ScorerSettings(
            url=triton.grpc_url,
            text_model=models.text,
            target_model=models.target,
            target_input=models.target_input,
        )

        async def run(
            result: Result, generator: GeneratorSettings | Generator, loop: LoopConfig
        ) -> Result:
            out = work / "runs" / re.sub(r"[^a-z0-9]+", "-", result.name.lower())
            started = time.perf_counter()
            took = await _caption(world.task, generator, images, pool, loop, scorer, out)
            result.wall_s = time.perf_counter() - started
            result.generate_s, result.requests = took
            result.per_step = read_run(world, out, truth)
            print(f"  {result.name}: {result.wall_s:.0f} s", file=sys.stderr)
            return result

        async def lane(name: str, llama: LlamaServer) -> list[Result]:
            """One generator's rows, one run after another (its server serves one request at
            a time); generators run side by side, each server on llama.cpp's default threads
            (half the cores): on 2 cores that beat running them in turn on both cores."""
            rows = []
            for mode in setup.modes:
                settings = GeneratorSettings(
                    base_url=llama.base_url, model=name, max_tokens=MAX_TOKENS,
                    prompt_mode=mode,  # type: ignore[arg-type]
                )  # fmt: skip
                once = LoopConfig(steps=1, keep=setup.keep, requested=setup.requested)
                rows.append(await run(
                    Result(f"one shot {name} {mode}", "one-shot", name, mode, setup.requested),
                    _ScoresHidden(OpenAIGenerator(settings)),
                    once,
                ))  # fmt: skip
                rows.append(await run(
                    Result(f"MILS {name} {mode}", "mils", name, mode, setup.requested),
                    settings,
                    loop,
                ))  # fmt: skip
                more = setup.more_requested
                if more and (name, mode) == (setup.more_generator, setup.more_mode):
                    rows.append(await run(
                        Result(f"MILS {name} {mode} r{more}", "mils", name, mode, more),
                        settings,
                        LoopConfig(steps=setup.steps, keep=setup.keep, requested=more),
                    ))  # fmt: skip
            return rows

        llamas = {
            name: servers.enter_context(
                LlamaServer(
                    model_path=OFFLINE_GENERATORS[name].find(),
                    alias=name,
                    log_path=log_dir / f"llama-{name}.log",
                )
            )
            for name in setup.generators
        }
        results = []
        if setup.controls:
            print("controls (no LLM) ...", file=sys.stderr)
            results += [
                await run(
                    Result("random pool lines", "control", requested=setup.requested),
                    random_lines_control(extra, setup.requested),
                    loop,
                ),
                await run(
                    Result("edit one attribute", "control", requested=setup.requested),
                    edit_control(setup.requested),
                    loop,
                ),
            ]
        print(f"generators {', '.join(llamas)} side by side ...", file=sys.stderr)
        for rows in await asyncio.gather(*(lane(name, llama) for name, llama in llamas.items())):
            results.extend(rows)
        pool_best = Result("initial pool (best line)", "pool")
        pool_best.per_step = {0: next(r for r in results if r.kind != "one-shot").per_step[0]}
        ceiling = Result("ground truth (scorer's ceiling)", "truth")
        ceiling.per_step = await _score_truth(world, scorer, truth, images)
    return [pool_best, *results, ceiling], media_timings(world, list(images.values()))


def media_timings(world: World, files: Sequence[Path]) -> dict[str, float]:
    """Mean milliseconds per file to decode it and to encode it (one file at a time, one
    thread), in this process, with the code the world's Triton target model runs."""
    import torch

    # The models' shared code, found as the Triton models find it (by path).
    sys.path.insert(0, str(model_repository()))
    from _common import motion_network, scene_network, sound_network  # type: ignore[import-not-found]
    from _common.audio import decode_audio  # type: ignore[import-not-found]

    torch.set_num_threads(1)  # as the Triton models run
    if world.name == "sounds":
        sound = sound_network.load_network_module()
        decode: Callable[[bytes], np.ndarray] = lambda data: sound.fit(  # noqa: E731
            decode_audio(data, sound.RATE)
        )
        encoder = sound.load().audio
    else:
        network = (
            motion_network if world.name == "motion" else scene_network
        ).load_network_module()
        decode = network.decode_clip if world.name == "motion" else network.decode_image
        model = network.load()
        encoder = model.video if world.name == "motion" else model.image
    decode_s = encode_s = 0.0
    with torch.inference_mode():
        for path in files:
            data = path.read_bytes()
            started = time.perf_counter()
            decoded = decode(data)
            decoded_at = time.perf_counter()
            encoder(torch.from_numpy(decoded[None]))
            decode_s += decoded_at - started
            encode_s += time.perf_counter() - decoded_at
    return {"decode_ms": 1000 * decode_s / len(files), "encode_ms": 1000 * encode_s / len(files)}


# ---------------------------------------------------------------------------------------------
# Reporting


def table_rows(results: Sequence[Result], steps: int) -> list[tuple[str, int, dict[str, Any]]]:
    """(name, step, metrics) in print order: steps 1, 3, 5, 10 and the last of each loop."""
    shown = sorted({s for s in TABLE_STEPS if s <= steps} | {steps})
    rows = []
    for result in results:
        if result.kind in ("pool", "truth", "one-shot"):
            step = max(result.per_step)
            rows.append((result.name, step, result.per_step[step]))
            continue
        rows.extend((result.name, s, result.per_step[s]) for s in shown if s in result.per_step)
    return rows


def print_table(results: Sequence[Result], steps: int, world: World = WORLDS["scenes"]) -> None:
    kinds = " ".join(f"{k[:5]:>5}" for k in world.kinds)
    print(f"\n{'row':<34} {'step':>4} {'exact':>5} {kinds} {'kinds':>5} {'attrs':>5} "
          f"{'score':>6} {'cands':>6} {'propd':>5}")  # fmt: skip
    for name, step, m in table_rows(results, steps):
        by_kind = " ".join(f"{m['by_kind'][k]:5.2f}" for k in world.kinds)
        print(f"{name:<34} {step:>4} {m['exact']:5.2f} {by_kind} {m['accuracy']:5.2f} "
              f"{m['attributes']:5.2f} {m['score']:6.3f} {m['candidates']:6.1f} "
              f"{m['proposed_exact']:5.2f}")  # fmt: skip


def print_timings(results: Sequence[Result], timings: dict[str, float], items: int) -> None:
    """Per item of each MILS row: decoding and encoding the target (once), and the time its
    generator requests took, the part of its wall time that is the LLM's."""
    decode, encode = timings["decode_ms"], timings["encode_ms"]
    print(f"\nper item ({items} items): the target decoded in {decode:.1f} ms and encoded in "
          f"{encode:.1f} ms (once, one thread); the generator's time:")  # fmt: skip
    for r in results:
        if r.kind == "mils" and r.requests:
            print(f"  {r.name}: {r.generate_s / items:.1f} s in {r.requests / items:.1f} "
                  f"requests ({r.generate_s / r.requests:.2f} s each); "
                  f"wall {r.wall_s / items:.1f} s")  # fmt: skip


def plot(results: Sequence[Result], path: Path) -> None:
    """Attribute accuracy and score of the best caption by step, one line per loop row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, score_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for result in results:
        if result.kind not in ("mils", "control"):
            continue
        steps = sorted(result.per_step)
        style = "--" if result.kind == "control" else "-"
        for ax, key in ((acc_ax, "attributes"), (score_ax, "score")):
            ax.plot(steps, [result.per_step[s][key] for s in steps], style, marker="o",
                    markersize=3, label=result.name)  # fmt: skip
    for result in results:
        if result.kind == "truth":
            score_ax.axhline(result.per_step[0]["score"], color="black", linewidth=0.8,
                             linestyle=":", label=result.name)  # fmt: skip
    acc_ax.set(xlabel="step", ylabel="attributes right in the best caption", ylim=(0, 1))
    score_ax.set(xlabel="step", ylabel="scorer similarity of the best caption")
    handles = score_ax.get_legend_handles_labels()[0]  # every line, and the ceiling's
    acc_ax.legend(handles=handles, fontsize=7, loc="upper right")  # the plot's empty corner
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _installed(names: Sequence[str]) -> tuple[str, ...]:
    """The generators of `names` whose weights are installed; says which are left out."""
    found = []
    for name in names:
        try:
            OFFLINE_GENERATORS[name].find()
            found.append(name)
        except ConfigError as exc:
            print(f"left out {name}: {exc}", file=sys.stderr)
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="3 items, 2 steps, SmolLM2 only")
    parser.add_argument(
        "--world",
        choices=sorted(WORLDS),
        default="scenes",
        help="images (scenes), videos (motion) or sounds (default scenes)",
    )
    parser.add_argument("--scenes", type=int, help=f"held-out items (default {FULL.scenes})")
    parser.add_argument("--steps", type=int, help=f"loop steps (default {FULL.steps})")
    parser.add_argument("--generators", help="comma-separated: " + ", ".join(OFFLINE_GENERATORS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where JSON and PNG go")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL if args.world == "scenes" else FULL_AV
    overrides: dict[str, Any] = {"scenes": args.scenes, "steps": args.steps, "world": args.world}
    if args.world != "scenes":
        overrides["controls"] = False
    if args.generators:
        overrides["generators"] = tuple(args.generators.split(","))
    else:
        overrides["generators"] = _installed(setup.generators)
    setup = Setup(**{**asdict(setup), **{k: v for k, v in overrides.items() if v is not None}})
    logging.basicConfig(level=logging.ERROR)  # a tiny model's odd replies are logged as warnings
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mils-quality-") as tmp:
        results, timings = asyncio.run(run_benchmark(setup, Path(tmp), args.out / "logs"))
    wall = time.perf_counter() - started
    print_table(results, setup.steps, WORLDS[setup.world])
    print_timings(results, timings, setup.scenes)
    name = "quality" + ("" if args.world == "scenes" else f"-{args.world}")
    name += "-quick" if args.quick else ""
    report = {
        "setup": asdict(setup),
        "wall_s": wall,
        "media_ms": timings,
        "results": [asdict(r) for r in results],
    }
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot(results, args.out / f"{name}.png")
    print(f"\n{wall / 60:.1f} min; wrote {args.out / name}.json and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
