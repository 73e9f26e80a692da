"""`mils eval` on a real run (`mils caption` of demo scenes on the real load-model LLM server
and Triton): the table, the JSON, the rows per step, samples without references, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_harness import SMALL_LOOP, endpoint_args, mils, query, results

from benchmarks.llm_server import LoadLLMServer
from mils._demo import write_demo_scenes, write_scene_references
from mils._eval import METRICS
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

STEPS = 2


@pytest.fixture(scope="module")
def scene_run(
    load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A finished run of 3 demo scenes for STEPS steps, and the scenes' COCO references."""
    root = tmp_path_factory.mktemp("eval")
    truth = write_demo_scenes(root / "samples", count=3)
    run = root / "run"
    proc = mils(
        [
            "caption",
            *map(str, truth),
            "--steps",
            str(STEPS),
            *SMALL_LOOP,
            "--out",
            str(run),
            "--no-progress",
            *endpoint_args(load_llm.base_url, rel_triton),
        ],
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    return run, write_scene_references(root / "samples" / "references.json", truth)


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["row"]: row for row in report["rows"]}


def test_eval_prints_final_and_every_step_and_writes_json(
    scene_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """Against the scenes' COCO references: a row for the final captions and for every
    committed step, scores in range, the final row equal to the last step's (every sample
    ran to the end), the JSON the same numbers; SPICE says why it is missing."""
    run, references = scene_run
    out = tmp_path / "eval.json"
    proc = mils(["eval", str(run), "--references", str(references), "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    header, *lines = proc.stdout.splitlines()
    assert header.split()[:9] == ["row", "samples", *METRICS]
    committed = {step for (step,) in query(run, "SELECT DISTINCT step FROM steps")}
    assert committed == set(range(STEPS + 1))
    assert [line.split("  ")[0].strip() for line in lines] == [
        "final",
        *(f"step {s}" for s in sorted(committed)),
    ]
    report = json.loads(out.read_text())
    rows = _rows(report)
    assert report["samples"]["scored"] == ["scene-1", "scene-2", "scene-3"]
    assert rows["final"]["captions"] == {sid: r["best_text"] for sid, r in results(run).items()}
    assert rows["final"]["scores"] == rows[f"step {STEPS}"]["scores"]
    for row in report["rows"]:
        assert row["samples"] == 3
        scores = row["scores"]
        assert all(0 <= scores[m] <= 1 for m in scores if m != "CIDEr") and scores["CIDEr"] >= 0
        assert set(row["per_sample"]) == {"scene-1", "scene-2", "scene-3"}
    final_line = lines[0].split()
    assert final_line[2:9] == [f"{rows['final']['scores'][m]:.3f}" for m in METRICS]
    if "SPICE" not in report["metrics"]:
        assert "SPICE not computed" in proc.stderr and "offline" in proc.stderr
        assert report["spice"].startswith("SPICE not computed")


def test_an_identical_caption_scores_highest_and_unmatched_samples_are_named(
    scene_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """References in a folder: scene-1's reference is its own final caption (BLEU-4 1, the
    higher CIDEr), scene-2's an unrelated one, scene-3 has none and is named as unscored."""
    run, _ = scene_run
    final = {sid: row["best_text"] for sid, row in results(run).items()}
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "scene-1.txt").write_text(final["scene-1"] + "\n")
    (refs / "scene-2.txt").write_text("two people riding horses in a snowy forest at dawn\n")
    out = tmp_path / "eval.json"
    proc = mils(
        ["eval", str(run), "--references", str(refs), "--json", str(out), "--no-spice"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 captioned samples have no references" in proc.stderr
    assert "not scored: scene-3" in proc.stderr and "SPICE" not in proc.stderr
    report = json.loads(out.read_text())
    assert report["samples"]["without_references"] == ["scene-3"]
    each = _rows(report)["final"]["per_sample"]
    assert each["scene-1"]["BLEU-4"] > 0.99 and each["scene-2"]["BLEU-4"] < 0.1
    assert each["scene-1"]["CIDEr"] > each["scene-2"]["CIDEr"]


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ("missing.json", "missing.json do not exist; pass a COCO captions JSON"),
        ("broken.json", "broken.json are not JSON (Expecting"),
        ("empty-folder", "has no .txt file"),
        ("other.json", "none of the 3 captioned samples of"),
    ],
)
def test_bad_references_exit_2_naming_the_input_and_the_fix(
    scene_run: tuple[Path, Path], tmp_path: Path, refs: str, expected: str
) -> None:
    """Nothing is scored; the message names the references (and, when nothing matches,
    the run's samples and the references' names too)."""
    run, _ = scene_run
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "empty-folder").mkdir()
    other = {
        "images": [{"id": 7, "file_name": "cat.jpg"}],
        "annotations": [{"image_id": 7, "caption": "a cat"}],
    }
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = mils(["eval", str(run), "--references", str(tmp_path / refs)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and proc.stdout == ""
    if refs == "other.json":
        assert "(scene-1, scene-2, scene-3)" in proc.stderr and "cat.jpg" in proc.stderr


def test_eval_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    """Exit 2, naming the folder and what to pass instead."""
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "a.txt").write_text("a cat\n")
    proc = mils(["eval", str(tmp_path), "--references", str(tmp_path / "refs")], tmp_path)
    assert proc.returncode == 2
    assert f"{tmp_path} is not a mils run directory" in proc.stderr
