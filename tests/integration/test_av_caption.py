"""`mils caption` on videos and sounds, end to end on real servers: llama.cpp with SmolLM2 and
a Triton serving the closed-world video and audio scorers. The task follows the files; a bad
file fails alone, naming itself, while the rest of the run finishes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import assert_complete, log_events, mils, results
from video_files import long_clip, undecodable_clip

from mils._local import LOCAL_SCORERS
from mils.adapters.local_stack import LlamaServer, TritonServer
from mils.tasks.motion import write_motion_clips
from mils.tasks.sounds import encode_samples, write_sounds

pytestmark = pytest.mark.integration

STEPS = 2
LOOP = ("--steps", str(STEPS), "--keep", "6", "--requested", "5", "--max-tokens", "200")


def caption(inputs: list[Path], out: Path, llama: LlamaServer, triton: TritonServer) -> list[str]:
    """A short run on the local stack's servers, the scorer pair left to the task."""
    return [
        "caption",
        *map(str, inputs),
        *LOOP,
        "--out",
        str(out),
        "--no-progress",
        "--generator-url",
        llama.base_url,
        "--scorer-url",
        triton.grpc_url,
    ]


def local_models(task: str) -> list[str]:
    models = LOCAL_SCORERS[task]
    return ["--text-model", models.text, "--target-model", models.target]


def test_caption_two_videos_the_task_following_the_files(
    llama_server: LlamaServer, video_triton: TritonServer, tmp_path: Path
) -> None:
    """Two generated clips (mp4, webm) are captioned for 2 steps as video-caption, chosen
    from the files and said so on stderr and in the log."""
    clips = [*write_motion_clips(tmp_path / "clips", 1), *write_motion_clips(
        tmp_path / "clips", 1, fmt="webm", start=1)]  # fmt: skip
    run = tmp_path / "run"
    args = caption(clips, run, llama_server, video_triton) + local_models("video-caption")
    proc = mils(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task: video-caption (for 2 video file(s)" in proc.stderr
    assert_complete(run, [p.stem for p in clips], STEPS)
    assert all(row["best_text"] for row in results(run).values())
    inferred = [e for e in log_events(run) if e["event"] == "task_inferred"]
    assert inferred and inferred[0]["task"] == "video-caption"


def test_caption_two_sounds(
    llama_server: LlamaServer, audio_triton: TritonServer, tmp_path: Path
) -> None:
    """Two generated sounds (wav, mp3) are captioned for 2 steps as audio-caption."""
    sounds = [*write_sounds(tmp_path / "a", 1), *write_sounds(
        tmp_path / "b", 1, fmt="mp3", prefix="beep")]  # fmt: skip
    run = tmp_path / "run"
    args = caption(sounds, run, llama_server, audio_triton) + local_models("audio-caption")
    proc = mils(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task: audio-caption" in proc.stderr
    assert_complete(run, [p.stem for p in sounds], STEPS)


def test_bad_videos_fail_alone_naming_the_file(
    llama_server: LlamaServer, video_triton: TritonServer, tmp_path: Path
) -> None:
    """Among good clips: a truncated mp4, a clip with no decodable frame, a sound renamed
    .mp4 and an hour-long clip each fail with a clear reason naming the file; the good
    clips finish (exit 1: some failed)."""
    folder = tmp_path / "clips"
    good = list(write_motion_clips(folder, 2))
    (folder / "truncated.mp4").write_bytes(good[0].read_bytes()[:600])
    (folder / "nothing.mkv").write_bytes(undecodable_clip())
    wav = next(iter(write_sounds(tmp_path / "s", 1)))
    (folder / "sound.mp4").write_bytes(wav.read_bytes())
    (folder / "hour.mp4").write_bytes(long_clip(3600))
    run = tmp_path / "run"
    args = caption([folder], run, llama_server, video_triton) + local_models("video-caption")
    args += ["--task", "video-caption"]
    proc = mils(args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = results(run)
    assert {sid for sid, row in rows.items() if row["status"] == "done"} == {p.stem for p in good}
    errors = {sid: row["error"] for sid, row in rows.items() if row["status"] == "failed"}
    assert set(errors) == {"truncated", "nothing", "sound", "hour"}, errors
    for sid, error in errors.items():
        assert sid in error, error
    assert "not a video file in an accepted format" in errors["sound"]
    assert "3600" in errors["hour"] and "limit" in errors["hour"], errors["hour"]


def test_bad_sounds_fail_alone_and_a_clip_is_refused_for_the_audio_task(
    llama_server: LlamaServer, audio_triton: TritonServer, tmp_path: Path
) -> None:
    """A zero-length sound, a garbled one and an hour of silence fail alone beside a good
    sound; a clip named beside them with --task audio-caption is refused before anything
    runs (exit 2). (A folder of both kinds is one run: tests/integration/test_mixed_caption.py.)"""
    folder = tmp_path / "sounds"
    good = list(write_sounds(folder, 1))
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbled.ogg").write_bytes(b"OggS" + bytes(range(256)) * 8)
    import numpy as np

    silence = np.zeros(8000 * 3600, np.float32)  # an hour at 8 kHz
    (folder / "hour.flac").write_bytes(encode_samples(silence, "flac", rate=8000))
    run = tmp_path / "run"
    args = caption([folder], run, llama_server, audio_triton) + local_models("audio-caption")
    proc = mils(args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = results(run)
    assert {sid for sid, row in rows.items() if row["status"] == "done"} == {p.stem for p in good}
    errors = {sid: row["error"] for sid, row in rows.items() if row["status"] == "failed"}
    assert set(errors) == {"empty", "garbled", "hour"}, errors
    assert "is empty (0 bytes)" in errors["empty"]
    assert "limit" in errors["hour"], errors["hour"]

    (clip,) = write_motion_clips(tmp_path / "clips", 1)
    args = caption([folder, clip], tmp_path / "mixed", llama_server, audio_triton)
    mixed = mils([*args, "--task", "audio-caption"], tmp_path)
    assert mixed.returncode == 2
    assert f"--task audio-caption reads audio files, but {clip} is a video file" in mixed.stderr
    assert not (tmp_path / "mixed").exists()
