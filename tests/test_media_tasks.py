"""The task follows the input files: readers of video and audio check containers by their
first bytes, and a run without --task captions the one kind of media it was given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mils._media import describe, other_kinds, tasks_for_files
from mils.adapters.media import VIDEO, AudioReader, VideoReader, expand_inputs, media_kind
from mils.engine import ConfigError, InputError
from mils.tasks import AUDIO_CAPTION, IMAGE_CAPTION, VIDEO_CAPTION

HEADS = {
    "clip.mp4": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00",
    "clip.webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81",
    "clip.avi": b"RIFF\x00\x00\x00\x00AVI LIST",
    "beep.wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    "beep.flac": b"fLaC\x00\x00\x00\x22\x10\x00\x10\x00\x00\x00\x00\x00",
    "beep.ogg": b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    "beep.mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00\x00\x00",
    "cat.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, head in HEADS.items():
        (path := tmp_path / name).write_bytes(head + b"\x00" * 64)
        paths[name] = path
    return paths


async def test_readers_accept_their_containers_by_first_bytes(files: dict[str, Path]) -> None:
    """Each video and audio container named by the issue passes its reader untouched."""
    for name in ("clip.mp4", "clip.webm", "clip.avi"):
        assert await VideoReader().read(str(files[name])) == files[name].read_bytes()
    for name in ("beep.wav", "beep.flac", "beep.ogg", "beep.mp3"):
        assert await AudioReader().read(str(files[name])) == files[name].read_bytes()


@pytest.mark.parametrize(
    ("reader", "name", "message"),
    [
        (VideoReader, "beep.wav", "is not a video file in an accepted format (MP4/MOV"),
        (AudioReader, "clip.mp4", "is not an audio file in an accepted format (WAV, FLAC"),
    ],
)
async def test_a_wrong_container_is_refused_naming_the_file(
    files: dict[str, Path], reader: type[VideoReader] | type[AudioReader], name: str, message: str
) -> None:
    """A sound given as a video (and a video as a sound) fails with the path and the formats."""
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        await reader().read(str(files[name]))
    assert str(files[name]) in str(caught.value)


async def test_empty_and_oversized_media_get_clear_errors(tmp_path: Path) -> None:
    """A zero-length sound and a video over the size limit are refused before anything is
    sent, saying what to do."""
    (empty := tmp_path / "silence.wav").write_bytes(b"")
    with pytest.raises(InputError, match=r"audio file .*silence.wav' is empty \(0 bytes\)"):
        await AudioReader().read(str(empty))
    (big := tmp_path / "movie.mp4").write_bytes(HEADS["clip.mp4"] + b"\x00" * 2000)
    with pytest.raises(InputError, match="over the 1,000-byte limit; cut the clip"):
        await VideoReader(max_bytes=1000).read(str(big))


def test_the_task_follows_the_kind_of_the_files(files: dict[str, Path]) -> None:
    """Videos give video-caption, sounds audio-caption, images image-caption; a file with
    an unknown name is told by its first bytes."""
    videos = [str(files["clip.mp4"]), str(files["clip.avi"])]
    assert tasks_for_files(videos) == {VIDEO_CAPTION.name: videos}
    beep = tasks_for_files([str(files["beep.ogg"])])
    assert list(beep) == [AUDIO_CAPTION.name] and describe(beep) == "1 audio file(s)"
    assert list(tasks_for_files([str(files["cat.png"])])) == [IMAGE_CAPTION.name]
    renamed = files["beep.flac"].rename(files["beep.flac"].with_suffix(".bin"))
    kind = media_kind(renamed)
    assert kind is not None and kind.name == "audio"


def test_mixed_kinds_go_each_to_its_task(files: dict[str, Path], tmp_path: Path) -> None:
    """A folder of images, videos and sounds is expanded whole and split by kind, each file
    to its kind's task; expanded for the video task it holds the videos only, and a video
    task named for a sound is refused, naming the file."""
    paths = expand_inputs([str(tmp_path)])
    assert len(paths) == len(HEADS)
    groups = tasks_for_files(paths)
    assert list(groups) == [IMAGE_CAPTION.name, VIDEO_CAPTION.name, AUDIO_CAPTION.name]
    assert describe(groups) == "1 image file(s), 3 video file(s), 4 audio file(s)"
    assert sorted(p for group in groups.values() for p in group) == sorted(paths)
    videos = expand_inputs([str(tmp_path)], [VIDEO])
    assert len(videos) == 3
    other_kinds(VIDEO_CAPTION, videos)  # all videos: nothing to refuse
    with pytest.raises(ConfigError, match=r"beep.ogg is an audio file; leave out `task`"):
        other_kinds(VIDEO_CAPTION, [*videos, str(files["beep.ogg"])])
