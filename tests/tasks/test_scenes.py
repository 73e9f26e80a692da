"""The closed world: deterministic scenes, descriptions true to them, a caption checker."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from mils.tasks.scenes import (
    BACKGROUNDS,
    COLOURS,
    GRAMMAR,
    KINDS,
    PARAPHRASE,
    SIDE,
    Scene,
    SceneObject,
    Split,
    Verdict,
    canonical,
    change_one,
    check_caption,
    describe,
    near_miss,
    scenes,
)

_CENTRES = {
    "top left": (16, 16),
    "top right": (48, 16),
    "center": (32, 32),
    "bottom left": (16, 48),
    "bottom right": (48, 48),
}


def first(split: Split, n: int) -> list[Scene]:
    return list(itertools.islice(scenes(split), n))


def test_scenes_and_pixels_are_the_same_on_every_call() -> None:
    """The same split gives the same scenes and byte-identical PNGs; the splits differ."""
    assert first(Split.HELD_OUT, 20) == first(Split.HELD_OUT, 20)
    assert [s.png() for s in first(Split.DEMO, 3)] == [s.png() for s in first(Split.DEMO, 3)]
    assert first(Split.TRAIN, 20) != first(Split.HELD_OUT, 20)
    assert list(itertools.islice(scenes(Split.TRAIN, start=5), 3)) == first(Split.TRAIN, 8)[5:]


def test_every_object_is_drawn_where_and_in_the_colour_its_ground_truth_says() -> None:
    """Around each object's position (give or take its jitter) pixels take its colour; the
    corners show the background (no object reaches a corner)."""
    palette = {**COLOURS, **BACKGROUNDS}
    for scene in first(Split.HELD_OUT, 200):
        pixels = np.asarray(scene.render(), dtype=np.float32)
        assert pixels.shape == (SIDE, SIDE, 3)

        def nearest(y: int, x: int, pixels: np.ndarray = pixels) -> str:
            return min(palette, key=lambda c: float(np.sum((pixels[y, x] - palette[c]) ** 2)))

        for obj in scene.objects:
            x, y = _CENTRES[obj.position]
            window = [nearest(y + dy, x + dx) for dy in range(-2, 3) for dx in range(-2, 3)]
            assert window.count(obj.colour) >= 5, (scene, obj)
        assert nearest(0, 0) == nearest(SIDE - 1, SIDE - 1) == scene.background


def test_descriptions_from_both_grammars_check_as_exactly_right() -> None:
    """Every generated description (training grammar and paraphrases) is true of its scene,
    and its near miss is not."""
    for index, scene in enumerate(first(Split.HELD_OUT, 400)):
        rng = random.Random(index)
        for text in (describe(scene, rng), describe(scene, rng, PARAPHRASE), canonical(scene)):
            check = check_caption(scene, text)
            assert check.exact and check.mentioned == len(scene.objects), (scene, text)
        for grammar in (GRAMMAR, PARAPHRASE):
            true, changed = near_miss(scene, index, grammar)
            assert true != changed
            assert not check_caption(scene, changed).exact, (scene, changed)


def test_change_one_changes_exactly_one_attribute() -> None:
    """A near miss differs from its scene in one attribute of one object, or the background."""
    for index, scene in enumerate(first(Split.HELD_OUT, 300)):
        other = change_one(scene, random.Random(index))
        changes = int(other.background != scene.background) + sum(
            getattr(a, k) != getattr(b, k)
            for a, b in zip(scene.objects, other.objects, strict=True)
            for k in ("shape", "colour", "size", "position")
        )
        assert changes == 1, (scene, other)
        assert len({o.position for o in other.objects}) == len(other.objects)


SCENE = Scene(
    (
        SceneObject("circle", "red", "large", "top left"),
        SceneObject("square", "blue", "small", "center"),
    ),
    background="white",
    seed=1,
)


def verdicts(caption: str) -> dict[str, str]:
    return {k: v.value for k, v in check_caption(SCENE, caption).verdicts.items()}


@pytest.mark.parametrize(
    "caption",
    [
        "a large red circle in the top left and a small blue square in the middle, white bg",
        "In the centre sits a tiny blue box, and at the upper left a huge crimson disc. "
        "The background is white.",
        "Top-left: big red circle; center: little blue square (white backdrop)",
    ],
)
def test_hand_written_true_captions_are_exact(caption: str) -> None:
    """Other word orders, synonyms and position-first sentences are read as right."""
    check = check_caption(SCENE, caption)
    assert check.exact and check.accuracy == 1.0, verdicts(caption)


def test_attributes_bound_to_the_wrong_object_are_wrong() -> None:
    """Swapped colours are wrong colours even though both colour words are in the scene."""
    assert verdicts("a big blue circle in the top left and a small red square in the center") == {
        "shape": "right",
        "colour": "wrong",
        "size": "right",
        "position": "right",
        "count": "right",
        "background": "missing",
    }


def test_partial_and_wrong_captions_get_their_verdicts() -> None:
    """Unsaid attributes are missing, contradicted ones wrong, off-world text says nothing."""
    assert verdicts("a red circle") == {
        "shape": "missing",
        "colour": "missing",
        "size": "missing",
        "position": "missing",
        "count": "wrong",
        "background": "missing",
    }
    wrong_place = verdicts("a red circle at the bottom right and a blue square, black background")
    assert wrong_place["position"] == wrong_place["background"] == "wrong"
    assert wrong_place["shape"] == wrong_place["colour"] == wrong_place["count"] == "right"
    assert set(verdicts("two dogs playing on a sunny beach").values()) == {"missing"}
    outlined = verdicts("a red circle and a blue square, black outlines, on a white background")
    assert outlined["background"] == "right"  # the colour beside "background" is the one
    three = check_caption(SCENE, "three red circles in the top left, center and bottom right")
    assert three.verdicts["count"] is Verdict.WRONG and three.verdicts["shape"] is Verdict.WRONG
    assert not three.exact and three.mentioned == 3


def test_counts_and_plurals_expand_to_objects() -> None:
    """ "two small red stars in the top left and the center" is two objects, each right."""
    scene = Scene(
        (
            SceneObject("star", "red", "small", "top left"),
            SceneObject("star", "red", "small", "center"),
        ),
        background="gray",
        seed=2,
    )
    assert check_caption(scene, "two small red stars in the top left and the center").exact
    assert check_caption(scene, "a pair of tiny red stars, upper left and middle, grey").exact
    assert list(check_caption(scene, "").verdicts) == list(KINDS)


def test_attributes_right_counts_each_object_attribute_stated_right() -> None:
    """The finer measure: of SCENE's 8 object attributes, a true caption states 8, one with a
    swapped colour 6, one naming one object fully 4, off-world text 0."""
    assert check_caption(SCENE, canonical(SCENE)).attributes_right == 1.0
    swapped = "a big blue circle in the top left and a small red square in the center"
    assert check_caption(SCENE, swapped).attributes_right == 6 / 8
    assert check_caption(SCENE, "a large red circle in the top left").attributes_right == 4 / 8
    assert check_caption(SCENE, "two dogs playing on a sunny beach").attributes_right == 0.0
