"""`mils caption FOLDER` on a folder of images, videos and sounds, end to end on real servers:
one run, each file captioned by its kind's task and scored by the local stack's scorer of its
kind (scene_*, motion_*, sound_* on one Triton), with no model flags; the load-model LLM
generates. A bad file of one kind fails alone; a stopped mixed run resumes to the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, inferences, log_events, mils, on_local_stack, results

from benchmarks.llm_server import LoadLLMServer
from mils._demo import write_demo_items
from mils._local import LOCAL_SCORERS
from mils._worlds import world_for_task
from mils.adapters.local_stack import TritonServer
from mils.tasks.motion import write_motion_clips
from mils.tasks.sounds import write_sounds

pytestmark = pytest.mark.integration

STEPS = 2
IMAGE, VIDEO, AUDIO = "image-caption", "video-caption", "audio-caption"


def mixed_folder(dest: Path) -> dict[str, set[str]]:
    """Two scenes, a clip, a sound and a garbled sound; the good sample ids by task."""
    scenes = write_demo_items(world_for_task(IMAGE), dest, 2)
    clips = write_motion_clips(dest, 1)
    sounds = write_sounds(dest, 1)
    (dest / "garbled.ogg").write_bytes(b"OggS" + bytes(range(256)) * 8)
    return {
        IMAGE: {p.stem for p in scenes},
        VIDEO: {Path(p).stem for p in clips},
        AUDIO: {Path(p).stem for p in sounds},
    }


def caption(folder: Path, out: Path, llm: LoadLLMServer, *extra: str) -> list[str]:
    return [
        "caption", str(folder), "--steps", str(STEPS), *SMALL_LOOP, "--out", str(out),
        "--no-progress", "--generator-url", llm.base_url, "--generator-model", "load-llm",
        *extra,
    ]  # fmt: skip


def test_a_mixed_folder_is_one_run_each_file_scored_by_its_kind(
    local_triton: TritonServer, load_llm: LoadLLMServer, tmp_path: Path
) -> None:
    """Scenes, a clip and a sound are captioned for 2 steps in one run: stderr says which
    task each kind goes to, every good sample is done with its task in results.jsonl, each
    kind's target model was sent exactly its own kind's files (Triton's statistics), the
    garbled sound fails alone naming itself, and config.json records each task's scorer pair."""
    good = mixed_folder(tmp_path / "media")
    on_local_stack(tmp_path, local_triton, load_llm)
    before = inferences(local_triton)
    run = tmp_path / "run"
    proc = mils(caption(tmp_path / "media", run, load_llm), tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the garbled sound failed
    assert (
        "tasks: image-caption (for 2 image file(s)), video-caption (for 1 video file(s)), "
        "audio-caption (for 2 audio file(s)), in one run" in proc.stderr
    )
    rows = results(run)
    done = {sid: row["task"] for sid, row in rows.items() if row["status"] == "done"}
    assert done == {sid: task for task, ids in good.items() for sid in ids}
    assert all(rows[sid]["steps"] == STEPS for sid in done)
    failed = {sid: row for sid, row in rows.items() if row["status"] == "failed"}
    assert list(failed) == ["garbled"] and failed["garbled"]["task"] == AUDIO
    assert "garbled.ogg" in failed["garbled"]["error"]

    after = inferences(local_triton)
    used = {name: after[name] - before.get(name, 0) for name in after}
    kinds = {IMAGE: 2, VIDEO: 1, AUDIO: 2}  # the garbled sound reaches the sound model too
    for task, files in kinds.items():
        pair = LOCAL_SCORERS[task]
        assert used[pair.target] == files, (task, used)  # one target per file of its kind
        assert used[pair.text] > 0, (task, used)
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "mixed"
    assert {name: own["scorer"]["text_model"] for name, own in config["tasks"].items()} == {
        task: LOCAL_SCORERS[task].text for task in (IMAGE, VIDEO, AUDIO)
    }
    assert all(own["loop"]["steps"] == STEPS for own in config["tasks"].values())
    inferred = [e for e in log_events(run) if e["event"] == "task_inferred"]
    assert inferred and inferred[0]["tasks"] == [IMAGE, VIDEO, AUDIO]

    status = mils(["status", str(run)], tmp_path)
    assert status.returncode == 0, status.stderr
    assert "image-caption: 2/2 done" in status.stdout and "audio-caption: 1/2 done" in status.stdout
    report = mils(["report", str(run), "--out", str(tmp_path / "report.html")], tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report.html").read_text()
    assert "video-caption" in page and "motion_text" in page


def test_a_stopped_mixed_run_resumes_to_the_end(
    local_triton: TritonServer, load_llm: LoadLLMServer, tmp_path: Path
) -> None:
    """A mixed run stopped by --max-requests 3 (exit 3) is continued by `mils resume`: every
    sample of every task ends done with its steps, each task still with its own scorer."""
    (tmp_path / "media").mkdir()
    write_demo_items(world_for_task(IMAGE), tmp_path / "media", 2)
    write_motion_clips(tmp_path / "media", 1)
    write_sounds(tmp_path / "media", 2)
    on_local_stack(tmp_path, local_triton, load_llm)
    run = tmp_path / "run"
    first = mils(caption(tmp_path / "media", run, load_llm, "--max-requests", "3"), tmp_path)
    assert first.returncode == 3, first.stderr[-3000:]
    assert sum(row["status"] == "done" for row in results(run).values()) < 5
    config = (run / "config.json").read_text()
    again = mils(["resume", str(run), "--no-progress", "--max-requests", "1000"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = results(run)
    assert len(rows) == 5 and all(r["status"] == "done" for r in rows.values()), rows
    assert all(r["steps"] == STEPS for r in rows.values())
    assert {r["task"] for r in rows.values()} == {IMAGE, VIDEO, AUDIO}
    tasks = json.loads((run / "config.json").read_text())["tasks"]
    assert tasks == json.loads(config)["tasks"]  # each task's loop and scorer kept


def test_mixed_files_refuse_one_task_and_one_model(tmp_path: Path) -> None:
    """--task with files of another kind, and a --text-model for a folder of several kinds,
    are refused (exit 2) before anything is written, saying what to do."""
    scene = next(iter(write_demo_items(world_for_task(IMAGE), tmp_path / "media", 1)))
    (clip,) = write_motion_clips(tmp_path / "media", 1)
    named = mils(
        ["caption", str(scene), str(clip), "--task", "video-caption", "--out", "r1"], tmp_path
    )
    assert named.returncode == 2
    assert f"--task video-caption reads video files, but {scene} is an image file" in named.stderr
    assert "leave out --task to caption every kind in one run" in named.stderr
    model = mils(["caption", str(tmp_path / "media"), "--text-model", "x", "--out", "r2"], tmp_path)
    assert model.returncode == 2
    assert "--text-model gives one model to a run of 2 tasks" in model.stderr
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
