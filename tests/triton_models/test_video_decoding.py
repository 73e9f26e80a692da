"""Video decoding shared by the video models (triton_models/_common/video.py), in-process:
every container, frames sampled evenly, and each kind of bad input refused with its reason."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from video_files import audio_only, long_clip, undecodable_clip

from mils.tasks.motion import FORMATS, FRAMES, Split, motion_scenes, render_video

VIDEO = Path(__file__).resolve().parents[2] / "triton_models" / "_common" / "video.py"


@pytest.fixture(scope="module")
def video() -> ModuleType:
    """_common/video.py as a module (it runs inside Triton; its folder is not a package)."""
    spec = importlib.util.spec_from_file_location("mils_common_video", VIDEO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_sample_indices_spread_evenly_and_repeat_for_short_clips(video: ModuleType) -> None:
    """First and last frames included, even steps between; fewer frames than asked repeat."""
    assert video.sample_indices(16, 8) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert video.sample_indices(300, 4) == [0, 100, 199, 299]
    assert video.sample_indices(2, 4) == [0, 0, 1, 1]
    assert video.sample_indices(1, 3) == [0, 0, 0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_container_decodes_to_the_sampled_frames(video: ModuleType, fmt: str) -> None:
    """mp4, webm, avi, mkv and gif each give the clip's evenly sampled frames, close to the
    rendered pixels, resized when asked."""
    scene = next(motion_scenes(Split.HELD_OUT, start=3))
    data = render_video(scene, fmt)
    frames = np.stack(video.decode_video(data, 8))
    expected = scene.frames(video.sample_indices(FRAMES, 8)).astype(np.float32)
    assert frames.shape == expected.shape and frames.dtype == np.uint8
    assert np.abs(frames - expected).mean() < 6.0, fmt
    small = video.decode_video(data, 3, size=(32, 24))
    assert [f.shape for f in small] == [(24, 32, 3)] * 3


def test_bad_inputs_are_refused_with_their_reason(video: ModuleType, tmp_path: Path) -> None:
    """Garbage, a truncated mp4, a truncated mkv, an audio file, a clip with no decodable
    frame and an over-long clip each raise ValueError saying what is wrong."""
    scene = next(motion_scenes(Split.HELD_OUT))
    mp4, mkv = render_video(scene, "mp4"), render_video(scene, "mkv")
    cases = {
        b"definitely not a video" * 10: "not a video file FFmpeg can open",
        mp4[: len(mp4) // 2]: "not a video file FFmpeg can open (an unknown format, or a trunc",
        mkv[: len(mkv) * 3 // 4]: "the file is truncated",
        audio_only(tmp_path / "a.wav"): "no video stream (streams: audio)",
        undecodable_clip(): "no video frame decodes",
        long_clip(90): "is 90.0 s long; the limit is 60 s",
        b"": "0 bytes",
    }
    for data, reason in cases.items():
        with pytest.raises(ValueError, match=r"VIDEO \(\d+ bytes\)") as caught:
            video.decode_video(data, 8)
        assert reason in str(caught.value), (reason, str(caught.value))
    assert len(video.decode_video(long_clip(59), 8)) == 8


def test_over_long_clip_is_refused_from_its_header_before_any_decoding(
    video: ModuleType,
) -> None:
    """A 90 s clip whose frames are junk is refused for its length, not for its frames:
    the limit is read from the container before anything is decoded; a lower limit applies."""
    with pytest.raises(ValueError, match=r"is 90\.0 s long; the limit is 60 s"):
        video.decode_video(long_clip(90, garbage=True), 8)
    with pytest.raises(ValueError, match=r"the limit is 1\.5 s"):
        video.decode_video(render_video(next(motion_scenes(Split.HELD_OUT))), 8, limit=1.5)


def test_max_seconds_parameter(video: ModuleType) -> None:
    """The config's max_seconds parameter sets the limit; absent, 60 s."""
    assert video.max_seconds({"max_seconds": {"string_value": "12.5"}}) == 12.5
    assert video.max_seconds({}) == video.DEFAULT_MAX_SECONDS == 60.0


def test_frames_held_longer_are_sampled_by_time(video: ModuleType) -> None:
    """A GIF stores a run of unchanged frames once, with a longer duration (here: a clip
    whose only object disappears early); sampling by time still gives the clip's frames."""
    from PIL import Image

    scene = next(
        s
        for s in motion_scenes(Split.HELD_OUT)
        if s.objects[0].presence == "disappears"
        and len(s.objects) == 1
        and s.objects[0].motion == "still"
    )
    data = render_video(scene, "gif")
    assert Image.open(io.BytesIO(data)).n_frames < FRAMES
    frames = np.stack(video.decode_video(data, 8))
    np.testing.assert_array_equal(frames, scene.frames(video.sample_indices(FRAMES, 8)))
