"""The closed world's text-to-image renderer and image editor (`render_text`, `edit_image`)."""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from mils.tasks.scenes import (
    BACKGROUNDS,
    MAX_PROMPT_CHARS,
    SCENE_CHUNK,
    Scene,
    SceneObject,
    Split,
    canonical,
    check_caption,
    edit_image,
    parse_prompt,
    render_text,
    scene_of_image,
    scenes,
)

HELD = list(itertools.islice(scenes(Split.HELD_OUT), 100))
START = Scene(
    (
        SceneObject("circle", "red", "small", "top left"),
        SceneObject("star", "blue", "large", "center"),
    ),
    "gray",
    7,
)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def edited(instruction: str, scene: Scene = START, seed: int = 0) -> Scene:
    return scene_of_image(edit_image(scene.png(), instruction, seed))


def test_the_same_text_and_seed_give_the_same_bytes() -> None:
    """Rendering is deterministic; the seed decides what the text leaves out."""
    text = "a circle"
    assert render_text(text, 3) == render_text(text, 3)
    drawn = {parse_prompt(text, seed) for seed in range(20)}
    assert len({(s.objects, s.background) for s in drawn}) > 1
    assert all(s.objects[0].shape == "circle" and len(s.objects) == 1 for s in drawn)


def test_a_canonical_description_renders_the_scene_it_describes() -> None:
    """For held-out scenes, the ground truth in canonical words renders a scene with the same
    objects and background, whose checker verdicts on that text are all right."""
    for index, scene in enumerate(HELD):
        text = canonical(scene)
        drawn = scene_of_image(render_text(text, index))
        assert set(drawn.objects) == set(scene.objects), text
        assert drawn.background == scene.background, text
        assert check_caption(drawn, text).exact, text


def test_the_png_carries_its_scene_and_the_same_pixels() -> None:
    """The scene chunk round-trips, and the pixels are those `Scene.render` draws."""
    scene = parse_prompt("two red circles in the top left and the center", 5)
    data = render_text("two red circles in the top left and the center", 5)
    assert scene_of_image(data) == scene
    assert len(scene.objects) == 2 and {o.colour for o in scene.objects} == {"red"}
    np.testing.assert_array_equal(pixels(data), np.asarray(scene.render()))
    np.testing.assert_array_equal(pixels(HELD[0].png()), np.asarray(HELD[0].render()))


def test_synonyms_the_scorer_reads_render_wrong() -> None:
    """The checker (like the scorer) reads "crimson", "box" and "upper left"; the renderer
    does not, so the rendering is not the scene the text means, under any seed."""
    text = "a large crimson box in the upper left on a grey background"
    meant = Scene((SceneObject("square", "red", "large", "top left"),), "gray", 0)
    assert check_caption(meant, text).exact
    for seed in range(10):
        drawn = scene_of_image(render_text(text, seed))
        assert not check_caption(drawn, text).exact
        assert drawn.objects == ()  # no shape word it knows: the background alone
    right = "a large red square in the top left on a gray background"
    assert scene_of_image(render_text(right, 0)).objects == meant.objects


def test_counts_and_plurals_are_read() -> None:
    """one/two/three and plural shape words give that many objects, at most three."""
    assert len(parse_prompt("three small blue stars", 0).objects) == 3
    assert len(parse_prompt("blue stars", 0).objects) == 2
    assert len(parse_prompt("a circle, a square, a star and a cross", 0).objects) == 3
    assert [o.shape for o in parse_prompt("a cross and a diamond", 1).objects] == [
        "cross",
        "diamond",
    ]


def test_a_text_without_a_known_shape_is_a_bare_background() -> None:
    """Nothing to draw: no objects, on the background named, else a seeded one."""
    assert parse_prompt("a crimson blob on a white background", 4).objects == ()
    assert parse_prompt("a crimson blob on a white background", 4).background == "white"
    assert {parse_prompt("hello", seed).background for seed in range(30)} == set(BACKGROUNDS)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("   ", "empty"), ("a red circle " * 30, f"at most {MAX_PROMPT_CHARS}")],
)
def test_empty_and_overlong_texts_are_refused(text: str, message: str) -> None:
    """The renderer and the editor say why they refuse a text."""
    with pytest.raises(ValueError, match=message):
        render_text(text, 0)
    with pytest.raises(ValueError, match=message):
        edit_image(START.png(), text, 0)
    render_text("a red circle".ljust(MAX_PROMPT_CHARS), 0)  # the limit itself is fine


def test_negative_seeds_render() -> None:
    """Any int64 seed works (Triton's SEED is signed)."""
    assert render_text("a red circle", -5) == render_text("a red circle", -5)


def test_recolour_resize_reshape_move_and_background_edits() -> None:
    """Each edit changes what it names and nothing else."""
    star = START.objects[1]
    assert edited("make the red circle blue").objects == (
        SceneObject("circle", "blue", "small", "top left"),
        star,
    )
    assert edited("make the circle large").objects[0].size == "large"
    assert edited("turn the circle into a star").objects[0] == SceneObject(
        "star", "red", "small", "top left"
    )
    assert edited("make the background white") == Scene(START.objects, "white", START.seed)
    moved = edited("move the star to the top left")
    assert moved.objects == (
        SceneObject("circle", "red", "small", "center"),  # was there: swapped
        SceneObject("star", "blue", "large", "top left"),
    )
    both = edited("make the circle green and move the star to the bottom right")
    assert [(o.colour, o.position) for o in both.objects] == [
        ("green", "top left"),
        ("blue", "bottom right"),
    ]


def test_add_and_remove_edits() -> None:
    """Adding draws what the text says (the rest from the seed); removing takes the object."""
    added = edited("add a small blue star at the bottom right")
    assert added.objects == (*START.objects, SceneObject("star", "blue", "small", "bottom right"))
    assert edited("remove the circle").objects == START.objects[1:]
    crowded = edited("add a triangle in the center", seed=1)  # the center is taken
    assert crowded.objects[2].shape == "triangle"
    assert crowded.objects[2].position not in ("top left", "center")


def test_pixel_effects_stay_through_later_edits() -> None:
    """Blur, stripes and noise change the pixels, are recorded, and a later edit keeps them."""
    plain = pixels(START.png())
    for instruction, effect in [
        ("blur the image", "blur"),
        ("add stripes", "stripes"),
        ("add noise", "noise"),
    ]:
        data = edit_image(START.png(), instruction, 0)
        assert scene_of_image(data).effects == (effect,)
        assert np.abs(pixels(data).astype(int) - plain).mean() > 1.0, instruction
        later = edit_image(data, "make the background white", 0)
        assert scene_of_image(later).effects == (effect,)
        expected = Scene(START.objects, "white", START.seed, (effect,)).render()
        np.testing.assert_array_equal(pixels(later), np.asarray(expected))


def test_an_instruction_it_cannot_read_returns_the_image_unchanged() -> None:
    """Unknown words or a selector matching nothing: the same bytes back."""
    data = START.png()
    for instruction in ("do something nice", "make the crimson box azure", "remove the cross"):
        assert edit_image(data, instruction, 0) == data


def test_images_that_are_not_scenes_are_refused() -> None:
    """An image without the scene chunk, bytes that are no image, and a chunk that is no
    scene all raise ValueError saying so."""
    buffer = io.BytesIO()
    START.render().save(buffer, format="PNG")
    with pytest.raises(ValueError, match="not a closed-world scene image"):
        edit_image(buffer.getvalue(), "make the circle blue", 0)
    with pytest.raises(ValueError, match="not an image"):
        edit_image(b"not an image at all", "make the circle blue", 0)
    info = PngInfo()
    info.add_text(SCENE_CHUNK, json.dumps({"objects": [["blob", "red", "small", "center"]]}))
    buffer = io.BytesIO()
    START.render().save(buffer, format="PNG", pnginfo=info)
    with pytest.raises(ValueError, match="not a scene"):
        edit_image(buffer.getvalue(), "make the circle blue", 0)
