"""The generation benchmark: its items are what it claims (prompts the renderer draws wrong,
style images one two-part edit away from their content), and `--quick` runs end to end on
the real local stack (Triton's renderer, editor and scorers, llama.cpp + SmolLM2) with
numbers that hold together and render-cache counts that hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.generation import style_pair, style_pool, t2i_items
from mils.tasks.scenes import (
    KINDS,
    Split,
    canonical,
    check_caption,
    edit_image,
    parse_prompt,
    render_text,
    scene_of_image,
    scenes,
)

REPO = Path(__file__).resolve().parents[2]


def test_t2i_prompts_render_wrong_and_their_truth_renders_right() -> None:
    """Each paraphrased prompt, drawn as written, is not its scene; the canonical description
    of the scene is (the ceiling row's premise)."""
    for scene, prompt in t2i_items(8).values():
        assert not check_caption(scene, canonical(parse_prompt(prompt, 0))).exact, prompt
        drawn = scene_of_image(render_text(canonical(scene), 0))
        assert check_caption(scene, canonical(drawn)).exact


def test_style_pairs_need_both_parts_of_their_instruction() -> None:
    """The style image is the content edited by the true instruction, and neither half of
    that instruction alone makes it (so the best single pool line is not the answer)."""
    for index, scene in zip(range(9), scenes(Split.HELD_OUT, 6_000), strict=False):
        instruction, content, style = style_pair(scene, index)
        assert scene_of_image(content) == scene
        assert edit_image(content, instruction, 0) == style
        first, _, second = instruction.partition(" and ")
        assert second, instruction
        for half in (first, second):
            assert edit_image(content, half, 0) != style, (instruction, half)


def test_style_pool_is_a_seeded_draw_of_the_task_pool() -> None:
    """The same lines every time, distinct, as many as asked."""
    assert style_pool(30) == style_pool(30)
    assert len(set(style_pool(30))) == 30


@pytest.mark.integration
def test_quick_benchmark_runs_and_its_numbers_hold_together(tmp_path: Path) -> None:
    """`python -m benchmarks.generation --quick`: every row of both tasks, steps that never
    lose the best, ceilings above the start, time read from the run's metrics and Triton's
    statistics, and renders between the distinct render keys and those plus the unscorable
    texts (the engine renders each key once); a table, JSON and a plot."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.generation", "--quick", "--out", tmp_path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "renderer's ceiling" in proc.stdout and "true edit instruction" in proc.stdout
    report = json.loads((tmp_path / "generation-quick.json").read_text())
    setup = report["setup"]
    for task, start_name, truth_name, better in (
        ("t2i-enhance", "prompt as written (step 0)",
         "canonical description (renderer's ceiling)", "alignment"),
        ("style-transfer", "best pool line (step 0)", "true edit instruction", "loss"),
    ):  # fmt: skip
        rows = {r["name"]: r for r in report["results"] if r["task"] == task}
        assert list(rows) == [start_name, "MILS smollm2 chat", "MILS smollm2 completion",
                              truth_name]  # fmt: skip
        start = rows[start_name]["per_step"]["0"]
        truth = rows[truth_name]["per_step"]["0"]
        sign = 1 if better == "alignment" else -1
        assert sign * truth[better] > sign * start[better]
        for mode in ("chat", "completion"):
            row = rows[f"MILS smollm2 {mode}"]
            steps = [row["per_step"][str(s)] for s in range(setup["steps"] + 1)]
            assert steps[0]["best"] == start["best"]  # same items, same start
            values = [sign * s[better] for s in steps]
            assert values == sorted(values), (task, mode)  # a step never loses the best
            counts = [s["candidates"] for s in steps]
            assert counts == sorted(counts) and counts[0] == 0, (task, mode)
            cache = row["cache"]
            assert cache["distinct"] <= cache["renders"] <= cache["distinct"] + cache["unscorable"]
            assert cache["distinct"] <= cache["scored"]
            assert row["render"]["requests"] == cache["renders"]
            assert row["render"]["busy_s"] > 0 and row["score"]["busy_s"] > 0
            assert row["requests"] > 0 and row["generate_s"] > 0
        if task == "t2i-enhance":
            assert truth["exact"] == 1.0 and set(truth["by_kind"]) == set(KINDS)
            assert start["exact"] < 1.0
        else:
            assert truth["match"] == 1.0 and truth["style"] < 1e-3
            pool = setup["style_pool_lines"] * setup["pairs"]
            assert all(rows[f"MILS smollm2 {m}"]["cache"]["scored"] >= pool
                       for m in ("chat", "completion"))  # fmt: skip
    with Image.open(tmp_path / "generation-quick.png") as plot:
        low, high = plot.convert("L").getextrema()
    assert high - low > 100  # lines drawn, not a blank canvas
