"""The moving closed world: deterministic clips, descriptions true to them, a caption checker."""

from __future__ import annotations

import io
import itertools
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mils.tasks.motion import (
    FORMATS,
    FRAMES,
    GRAMMAR,
    KINDS,
    PARAPHRASE,
    SIDE,
    MotionScene,
    MovingObject,
    Split,
    Verdict,
    canonical,
    change_one,
    check_motion_caption,
    describe,
    motion_pool,
    motion_scenes,
    near_miss,
    render_video,
    write_motion_clips,
)
from mils.tasks.scenes import BACKGROUNDS, CaptionCheck


def first(split: Split, n: int) -> list[MotionScene]:
    return list(itertools.islice(motion_scenes(split), n))


def test_clips_and_pixels_are_the_same_on_every_call() -> None:
    """The same split gives the same clips and identical frames and GIFs; the splits differ."""
    assert first(Split.HELD_OUT, 20) == first(Split.HELD_OUT, 20)
    a, b = first(Split.DEMO, 3), first(Split.DEMO, 3)
    assert all(np.array_equal(x.frames(), y.frames()) for x, y in zip(a, b, strict=True))
    assert [x.gif() for x in a] == [y.gif() for y in b]
    assert first(Split.TRAIN, 20) != first(Split.HELD_OUT, 20)
    assert (
        list(itertools.islice(motion_scenes(Split.TRAIN, start=5), 3)) == first(Split.TRAIN, 8)[5:]
    )
    frames = a[0].frames()
    assert frames.shape == (FRAMES, SIDE, SIDE, 3) and frames.dtype == np.uint8
    assert np.array_equal(a[0].frames([0, 7, 15]), frames[[0, 7, 15]])


def _object_pixels(frame: np.ndarray, background: str) -> np.ndarray:
    """(y, x) of the pixels far from the background colour."""
    distance = np.abs(frame.astype(np.float32) - BACKGROUNDS[background]).sum(axis=-1)
    return np.argwhere(distance > 90)


def test_one_object_moves_appears_and_disappears_as_its_ground_truth_says() -> None:
    """In clips of one object, its pixels travel the stated way (about 12 px when slow, 30
    px when fast, none when still) and are absent from the frames before it appears or
    after it disappears."""
    single = [s for s in first(Split.HELD_OUT, 400) if len(s.objects) == 1]
    assert len(single) > 60
    for scene in single:
        obj = scene.objects[0]
        frames = scene.frames()
        seen = [i for i, f in enumerate(frames) if len(_object_pixels(f, scene.background)) > 8]
        if obj.presence == "throughout":
            assert seen == list(range(FRAMES)), scene
        elif obj.presence == "appears":
            assert seen[0] >= 4 and seen == list(range(seen[0], FRAMES)), scene
        else:
            assert seen[0] == 0 and seen[-1] <= 11 and seen == list(range(len(seen))), scene
        start = _object_pixels(frames[seen[0]], scene.background).mean(axis=0)
        end = _object_pixels(frames[seen[-1]], scene.background).mean(axis=0)
        dy, dx = (end - start) / max(1, seen[-1] - seen[0]) * (FRAMES - 1)
        expected = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
        travel = {"slow": 12.0, "fast": 30.0}
        if obj.speed is None:
            assert abs(dy) < 2 and abs(dx) < 2, scene
        else:
            ey, ex = expected[obj.motion]
            along = dy * ey + dx * ex
            assert abs(along - travel[obj.speed]) < 4, (scene, along)
            assert abs(dy * ex) + abs(dx * ey) < 2, scene  # nothing across the track


def test_descriptions_from_both_grammars_check_as_exactly_right() -> None:
    """Every generated description (training grammar, paraphrases, the canonical one) is
    true of its clip, and its near miss is not."""
    for index, scene in enumerate(first(Split.HELD_OUT, 400)):
        rng = random.Random(index)
        for text in (describe(scene, rng), describe(scene, rng, PARAPHRASE), canonical(scene)):
            check = check_motion_caption(scene, text)
            assert check.exact and check.mentioned == len(scene.objects), (scene, text)
            assert check.attributes_right == 1.0
        for grammar in (GRAMMAR, PARAPHRASE):
            true, changed = near_miss(scene, index, grammar)
            assert true != changed
            assert not check_motion_caption(scene, changed).exact, (scene, changed)


def test_change_one_changes_exactly_one_attribute() -> None:
    """A near miss differs from its clip in one attribute of one object (a moving object's
    direction and speed count as one change when it becomes still), or the background."""
    kinds = ("shape", "colour", "size", "motion", "presence")
    for index, scene in enumerate(first(Split.HELD_OUT, 300)):
        other = change_one(scene, random.Random(index))
        changes = int(other.background != scene.background) + sum(
            getattr(a, k) != getattr(b, k)
            for a, b in zip(scene.objects, other.objects, strict=True)
            for k in kinds
        )
        speed_only = sum(
            a.speed != b.speed and a.motion == b.motion
            for a, b in zip(scene.objects, other.objects, strict=True)
        )
        assert changes + speed_only == 1, (scene, other)


CLIP = MotionScene(
    (
        MovingObject("circle", "red", "large", "left", "fast"),
        MovingObject("square", "blue", "small", "still", None, "disappears"),
    ),
    background="white",
    seed=1,
)


def verdicts(caption: str) -> dict[str, str]:
    return {k: v.value for k, v in check_motion_caption(CLIP, caption).verdicts.items()}


@pytest.mark.parametrize(
    "caption",
    [
        "a large red circle moving left quickly and a small blue square that stays still and "
        "then disappears, white background",
        "There is a big crimson disc, which rapidly drifts leftward. A tiny blue box remains "
        "motionless, then vanishes. The background is white.",
        "small blue square: stationary, disappearing later; big red circle: heads left at a "
        "fast pace (white backdrop)",
        "Quickly, a big red circle slides to the left; a still little blue block vanishes. "
        "White background.",
    ],
)
def test_hand_written_true_captions_are_exact(caption: str) -> None:
    """Other word orders, synonyms, pace phrases and adverbs before the object read as right."""
    check = check_motion_caption(CLIP, caption)
    assert isinstance(check, CaptionCheck)
    assert check.exact and check.accuracy == 1.0, verdicts(caption)


def test_wrong_motion_is_wrong_and_unsaid_motion_is_missing() -> None:
    """A reversed direction, a wrong speed or a missed disappearance are each WRONG; a
    caption that names the objects but not how they move leaves motion and speed MISSING."""
    reversed_ = verdicts(
        "a large red circle moving right quickly and a small blue square staying still, "
        "then disappearing"
    )
    assert reversed_["motion"] == "wrong" and reversed_["speed"] == "right"
    slow = verdicts("a large red circle moving left slowly, a small blue square, disappearing")
    assert slow["speed"] == "wrong" and slow["presence"] == "right"
    stays = verdicts("a large red circle moving left fast and a small blue square staying still")
    assert stays["presence"] == "wrong" and stays["motion"] == "right"
    plain = verdicts("a large red circle and a small blue square on a white background")
    assert plain["motion"] == plain["speed"] == "missing"
    assert plain["shape"] == plain["colour"] == plain["size"] == plain["count"] == "right"
    assert set(verdicts("two dogs playing on a sunny beach").values()) == {"missing"}


def test_attributes_right_counts_each_object_attribute_stated_right() -> None:
    """Of CLIP's 12 object attributes (6 per object), the canonical caption states 12, one
    with the circle going the wrong way 11, off-world text 0; the kinds are KINDS."""
    assert check_motion_caption(CLIP, canonical(CLIP)).attributes_right == 1.0
    wrong_way = canonical(CLIP).replace("moving left", "moving right")
    assert check_motion_caption(CLIP, wrong_way).attributes_right == 11 / 12
    off_world = check_motion_caption(CLIP, "two dogs playing on a sunny beach")
    assert off_world.attributes_right == 0.0 and list(off_world.verdicts) == list(KINDS)
    assert off_world.verdicts["count"] is Verdict.MISSING


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_to_a_file_pyav_reads_frame_for_frame(fmt: str) -> None:
    """Each container holds FRAMES frames of SIDE x SIDE, close to the rendered pixels (lossy
    codecs within a few grey levels), the same bytes on every call."""
    import av

    scene = first(Split.HELD_OUT, 1)[0]
    data = render_video(scene, fmt)
    assert data == render_video(scene, fmt)
    with av.open(io.BytesIO(data)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (FRAMES, SIDE, SIDE, 3)
    error = np.abs(frames.astype(np.float32) - scene.frames()).mean()
    assert error < 6.0, (fmt, error)


def test_unknown_format_is_refused() -> None:
    """A format outside FORMATS is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="mp4, webm, avi, mkv, gif"):
        render_video(first(Split.HELD_OUT, 1)[0], "mov")


def test_write_motion_clips_writes_held_out_clips(tmp_path: Path) -> None:
    """N files of the chosen format, named clip-1.., each mapped to its clip of the split."""
    written = write_motion_clips(tmp_path, 3, "gif")
    assert [p.name for p in written] == ["clip-1.gif", "clip-2.gif", "clip-3.gif"]
    assert list(written.values()) == first(Split.HELD_OUT, 3)
    assert all(p.read_bytes().startswith(b"GIF8") for p in written)


def test_pool_is_single_object_lines_stable_under_growth() -> None:
    """The default pool: distinct lines, each describing one object; the first n lines do
    not depend on how many are asked for."""
    pool = motion_pool(120)
    assert len(pool) == len(set(pool)) == 120
    assert motion_pool(40) == pool[:40]
    from mils.tasks.motion import _mentions

    assert all(len(_mentions(line)[0]) == 1 for line in pool)


def test_module_imports_and_renders_gifs_without_pyav() -> None:
    """The engine process can import the module and make GIFs with numpy and Pillow alone."""
    code = (
        "import sys; sys.modules['av'] = None\n"
        "from mils.tasks.motion import motion_scenes, Split, render_video\n"
        "scene = next(motion_scenes(Split.HELD_OUT))\n"
        "assert render_video(scene, 'gif').startswith(b'GIF8')\n"
        "try:\n    render_video(scene, 'mp4')\nexcept ImportError:\n    print('no av')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no av"
