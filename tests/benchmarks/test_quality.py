"""The quality benchmark: its controls do what they claim, and `--quick` runs end to end on
the real local stack (Triton + the scene scorer, llama.cpp + SmolLM2) with checked output."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.quality import (
    _SCORED_LINE,
    _ScoresHidden,
    edit_control,
    edit_one_attribute,
    random_lines_control,
)
from mils.engine.prompt import build_continuation, build_messages, parse_candidates
from mils.engine.protocols import ChatMessage, Reply
from mils.tasks import IMAGE_CAPTION
from mils.tasks.scenes import Split, canonical, check_caption, scenes

REPO = Path(__file__).resolve().parents[2]
SHOWN = [(0.41, "a red circle in the center"), (0.52, "two blue squares in the top left"),
         (0.47, "a small green star at the bottom right")]  # fmt: skip


def test_edit_one_attribute_changes_exactly_one_attribute() -> None:
    """On true descriptions: one word replaced, and the result is no longer exactly right."""
    rng = random.Random(0)
    for scene in itertools.islice(scenes(Split.HELD_OUT), 100):
        text = canonical(scene)
        edited = edit_one_attribute(text, rng)
        assert edited != text
        assert not check_caption(scene, edited).exact
        before, after = text.split(), edited.split()
        assert len(before) - 1 <= len(after) <= len(before) + 1  # "center" <-> "top left"
    assert edit_one_attribute("nothing to see here", rng) == "nothing to see here"


def test_controls_answer_with_requested_lines_from_the_prompt() -> None:
    """The edit control edits the shown candidates (best first); the random control draws
    further pool lines; both as a numbered list the engine parses."""
    messages = build_messages(IMAGE_CAPTION, SHOWN, 4)
    reply = asyncio.run(edit_control(4).complete(messages))
    edited = parse_candidates(reply.text)
    assert len(edited) == 4
    best = "two blue squares in the top left"
    assert sum(len(set(e.split()) ^ set(best.split())) <= 4 for e in edited[::3]) == 2
    extra = [f"line {i}" for i in range(50)]
    drawn = parse_candidates(asyncio.run(random_lines_control(extra, 6).complete(messages)).text)
    assert len(set(drawn)) == 6 and set(drawn) <= set(extra)


class _Recorder:
    endpoint = "recorder"

    def __init__(self, mode: str) -> None:
        self.prompt_mode = mode
        self.seen: list[str] = []

    async def complete(self, messages: list[ChatMessage]) -> Reply:
        self.seen.append(messages[-1]["content"])
        return Reply("1. x")

    async def continue_text(self, prompt: str) -> Reply:
        self.seen.append(prompt)
        return Reply(" x")

    async def aclose(self) -> None:
        return None


def test_one_shot_hides_the_scores_and_their_order() -> None:
    """Chat: the same texts, no score lines, no word of scores; completion: every line the
    same score, the reply still pre-started."""
    chat = _Recorder("chat")
    asyncio.run(_ScoresHidden(chat).complete(build_messages(IMAGE_CAPTION, SHOWN, 5)))  # type: ignore[arg-type]
    prompt = chat.seen[0]
    assert not _SCORED_LINE.search(prompt) and "score" not in prompt
    assert Counter(line[2:] for line in prompt.splitlines() if line.startswith("- ")) == Counter(
        text for _, text in SHOWN
    )
    completion = _Recorder("completion")
    continuation, start = build_continuation(IMAGE_CAPTION, SHOWN)
    asyncio.run(_ScoresHidden(completion).continue_text(continuation))  # type: ignore[arg-type]
    lines = completion.seen[0].splitlines()
    assert lines[-1] == start
    assert {m.group(0)[:6] for m in _SCORED_LINE.finditer("\n".join(lines[:-1]))} == {"0.500:"}


@pytest.mark.integration
@pytest.mark.parametrize("world", ["scenes", "motion", "sounds"])
def test_quick_benchmark_runs_and_its_numbers_hold_together(tmp_path: Path, world: str) -> None:
    """`python -m benchmarks.quality --quick` for images, videos and sounds: every row,
    per-step numbers consistent with the loop's rules, the scorer's ceiling above the pool,
    the media's decode and encode times, a table, JSON and a plot."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.quality",
            "--quick",
            "--world",
            world,
            "--out",
            tmp_path,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ground truth (scorer's ceiling)" in proc.stdout
    name = "quality-quick" if world == "scenes" else f"quality-{world}-quick"
    report = json.loads((tmp_path / f"{name}.json").read_text())
    assert report["media_ms"]["decode_ms"] > 0 and report["media_ms"]["encode_ms"] > 0
    rows = {r["name"]: r for r in report["results"]}
    controls = ["random pool lines", "edit one attribute"] if world == "scenes" else []
    assert list(rows) == [
        "initial pool (best line)",
        *controls,
        "one shot smollm2 chat",
        "MILS smollm2 chat",
        "one shot smollm2 completion",
        "MILS smollm2 completion",
        "ground truth (scorer's ceiling)",
    ]
    pool = rows["initial pool (best line)"]["per_step"]["0"]
    for row in rows.values():
        steps = [row["per_step"][k] for k in sorted(row["per_step"], key=int)]
        if row["kind"] in ("mils", "control", "one-shot"):
            assert steps[0]["best"] == pool["best"]  # same scenes, pool and scorer
            scores = [s["score"] for s in steps]
            assert scores == sorted(scores), row["name"]  # a step never loses the best
            counts = [s["candidates"] for s in steps]
            assert counts == sorted(counts) and counts[-1] > 0, row["name"]
        for step in steps:
            assert 0 <= step["exact"] <= step["proposed_exact"] <= 1  # the best was proposed
            assert all(0 <= v <= 1 for v in step["by_kind"].values())
    if controls:
        requested = report["setup"]["requested"]
        assert rows["random pool lines"]["per_step"]["1"]["candidates"] == requested
    assert all(rows[n]["requests"] > 0 for n in rows if n.startswith("MILS"))
    ceiling = rows["ground truth (scorer's ceiling)"]["per_step"]["0"]
    assert ceiling["exact"] == 1.0 and ceiling["score"] > pool["score"]
    with Image.open(tmp_path / f"{name}.png") as plot:
        low, high = plot.convert("L").getextrema()
    assert high - low > 100  # lines drawn, not a blank canvas
