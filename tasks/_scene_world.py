"""The closed world's pixels: scenes as values and their drawing, scenes read from text, and
scenes edited by instruction.

This half of `scenes.py` (which re-exports it) imports nothing from mils and needs only Pillow
and numpy, so the Triton models `scene_render` and `scene_edit` load this one file by path
(`triton_models/_common/scene_world.py`) in a server that has no mils installed: the renderer
the engine's tests call and the one Triton serves are the same code.

The renderer and the editor read a deliberately narrow vocabulary: only the words `canonical`
descriptions use (the names of SHAPES, COLOURS, SIZES, POSITIONS and BACKGROUNDS, their
plurals, "a"/"an"/"one"/"two"/"three", "background"). The scorer reads far more ("crimson",
"box", "upper-left", "a couple of"); a prompt in those words renders wrong (unknown words are
ignored), so an optimiser scored by the scorer on the rendering must find the wordings the
renderer understands, which is what prompt optimisation for a real text-to-image model is.

A rendered PNG carries its scene as JSON in a PNG text chunk (`SCENE_CHUNK`), so the editor
edits the scene, not the pixels, and re-renders it; pixel effects (blur, stripes, noise) are
part of the scene too, so a later edit keeps them.
"""

from __future__ import annotations

import io
import json
import random
import re
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

SIDE = 64
"""Width and height of a rendered scene in pixels."""

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 215, 30),
    "green": (40, 165, 60),
    "blue": (40, 90, 225),
    "purple": (135, 55, 185),
    "pink": (245, 145, 195),
    "brown": (125, 80, 40),
}
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "center", "bottom left", "bottom right")
# Background colours share no name with object colours, so a caption's colour words are
# unambiguous: black, gray and white always speak of the background.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 24),
    "gray": (128, 128, 128),
    "white": (238, 238, 235),
}
EFFECTS = ("blur", "stripes", "noise")
"""Pixel effects the editor applies after drawing, each at most once, in the order asked."""
SCENE_CHUNK = "mils-scene"
"""Key of the PNG text chunk holding a rendered scene as JSON."""
MAX_PROMPT_CHARS = 300
"""The longest text `render_text` and `edit_image` take."""
MAX_OBJECTS = 3
"""`render_text` draws at most this many objects (the world's scenes have 1-3); further
objects in the text are ignored. Edits may add up to one object per position."""

_CENTRES = {
    "top left": (16, 16),
    "top right": (48, 16),
    "center": (32, 32),
    "bottom left": (16, 48),
    "bottom right": (48, 48),
}
_RADIUS = {"small": 6.5, "large": 11.5}
_JITTER = 2
_NOISE = 6.0  # grey levels of pixel noise: the background is a texture, not a flat fill
_BLUR_RADIUS = 1.5
_STRIPE = 4  # pixels per diagonal band
_STRIPE_CONTRAST = 40.0  # grey levels added to one band and taken from the next
_GRAIN = 28.0  # grey levels of the "noise" effect, per channel


@dataclass(frozen=True, slots=True)
class SceneObject:
    """One object of a scene."""

    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True, slots=True)
class Scene:
    """A scene: its objects (at distinct positions), its background, and the seed of its pixels.

    The seed only places the small jitter and the background noise; two scenes with the same
    attributes and different seeds show the same thing. `effects` (names from EFFECTS) are
    applied to the pixels after drawing; the generated scenes have none.
    """

    objects: tuple[SceneObject, ...]
    background: str
    seed: int
    effects: tuple[str, ...] = field(default=())

    def render(self) -> Image.Image:
        """The scene as a SIDE x SIDE RGB image (drawn at 4x, then downsampled: smooth edges)."""
        rng = np.random.default_rng(self.seed)
        scale = 4
        image = Image.new("RGB", (SIDE * scale, SIDE * scale), BACKGROUNDS[self.background])
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            cx, cy = _CENTRES[obj.position]
            dx, dy = rng.integers(-_JITTER, _JITTER + 1, size=2)
            radius = _RADIUS[obj.size] * scale
            _draw_shape(
                draw, obj.shape, (cx + dx) * scale, (cy + dy) * scale, radius, COLOURS[obj.colour]
            )
        small = image.resize((SIDE, SIDE), Image.Resampling.BOX)
        pixels = np.asarray(small, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, _NOISE, size=(SIDE, SIDE, 1)).astype(np.float32)
        result = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        for effect in self.effects:
            result = _apply_effect(result, effect, self.seed)
        return result

    def png(self) -> bytes:
        """The rendered scene, PNG-encoded, carrying the scene itself in a text chunk
        (`SCENE_CHUNK`; the pixels are the same with or without it)."""
        info = PngInfo()
        info.add_text(SCENE_CHUNK, json.dumps(_scene_json(self), separators=(",", ":")))
        buffer = io.BytesIO()
        self.render().save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, int, int],
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = r * 0.85
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        w = r * 0.75
        draw.polygon([(cx, cy - r), (cx + w, cy), (cx, cy + r), (cx - w, cy)], fill=fill)
    elif shape == "star":
        points = []
        for i in range(10):
            angle = -np.pi / 2 + i * np.pi / 5
            radius = r if i % 2 == 0 else r * 0.45
            points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        w = r * 0.33
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _apply_effect(image: Image.Image, effect: str, seed: int) -> Image.Image:
    """One pixel effect: a Gaussian blur, diagonal light/dark bands, or strong grain."""
    if effect == "blur":
        return image.filter(ImageFilter.GaussianBlur(_BLUR_RADIUS))
    pixels = np.asarray(image, dtype=np.float32)
    if effect == "stripes":
        y, x = np.mgrid[0:SIDE, 0:SIDE]
        sign = np.where(((x + y) // _STRIPE) % 2 == 0, 1.0, -1.0).astype(np.float32)
        pixels = pixels + _STRIPE_CONTRAST * sign[:, :, None]
    elif effect == "noise":
        grain = np.random.default_rng([seed, 1]).normal(0.0, _GRAIN, size=pixels.shape)
        pixels = pixels + grain.astype(np.float32)
    else:
        raise ValueError(f"unknown effect {effect!r}; choose one of {', '.join(EFFECTS)}")
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# A scene inside its PNG


def _scene_json(scene: Scene) -> dict[str, object]:
    return {
        "objects": [[o.shape, o.colour, o.size, o.position] for o in scene.objects],
        "background": scene.background,
        "seed": scene.seed,
        "effects": list(scene.effects),
    }


def _scene_from_json(text: str) -> Scene:
    """The scene of a SCENE_CHUNK, or ValueError when any part of it is not of this world."""
    try:
        data = json.loads(text)
        objects = tuple(SceneObject(*map(str, o)) for o in data["objects"])
        scene = Scene(objects, str(data["background"]), int(data["seed"]), tuple(data["effects"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the {SCENE_CHUNK!r} PNG text chunk is not a scene: {exc}") from exc
    bad = [
        value
        for o in scene.objects
        for value, known in zip(
            (o.shape, o.colour, o.size, o.position),
            (SHAPES, COLOURS, SIZES, POSITIONS),
            strict=True,
        )
        if value not in known
    ]
    bad += [scene.background] if scene.background not in BACKGROUNDS else []
    bad += [e for e in scene.effects if e not in EFFECTS]
    if bad or len({o.position for o in scene.objects}) < len(scene.objects) or scene.seed < 0:
        raise ValueError(f"the {SCENE_CHUNK!r} PNG text chunk is not a scene of this world: {text}")
    return scene


def scene_of_image(image: bytes) -> Scene:
    """The scene a closed-world PNG (`Scene.png`, `render_text`, `edit_image`) carries.

    Raises:
        ValueError: the bytes are not an image, or an image without the scene chunk (not
            rendered by this world: edit only images `render_text` or the editor made).
    """
    try:
        with Image.open(io.BytesIO(image)) as opened:
            opened.load()
            text = getattr(opened, "text", {}).get(SCENE_CHUNK)
    except UnidentifiedImageError as exc:
        raise ValueError(f"image ({len(image)} bytes) is not an image format Pillow reads") from exc
    except Exception as exc:  # Pillow raises several types for bad bytes
        raise ValueError(f"cannot decode image ({len(image)} bytes): {exc}") from exc
    if text is None:
        raise ValueError(
            f"image ({len(image)} bytes) is not a closed-world scene image: it has no "
            f"{SCENE_CHUNK!r} PNG text chunk; edit images made by render_text or edit_image"
        )
    return _scene_from_json(text)


# ---------------------------------------------------------------------------------------------
# Reading objects out of text (shared with `scenes.check_caption`, which reads more words)


@dataclass(frozen=True, slots=True)
class _Vocabulary:
    """Words (or two words joined by a space) -> (kind, value), and which shape words are
    plurals."""

    words: dict[str, tuple[str, str]]
    plurals: frozenset[str]


def _vocabulary(words: dict[str, tuple[str, str]]) -> _Vocabulary:
    # A plural is a shape word that is another shape word plus "s" or "es" ("plus" is not).
    plurals = frozenset(
        w
        for w, (kind, _) in words.items()
        if kind == "shape" and (w[:-1] in words or (w.endswith("es") and w[:-2] in words))
    )
    return _Vocabulary(words, plurals)


def _canonical_words() -> dict[str, tuple[str, str]]:
    """The words `canonical` descriptions use, and nothing else."""
    words: dict[str, tuple[str, str]] = {}
    for shape in SHAPES:
        words[shape] = words[shape + ("es" if shape.endswith(("s", "x")) else "s")] = (
            "shape",
            shape,
        )
    words |= {c: ("colour", c) for c in COLOURS} | {b: ("background", b) for b in BACKGROUNDS}
    words |= {s: ("size", s) for s in SIZES} | {p: ("position", p) for p in POSITIONS}
    words |= {"a": ("count", "1"), "an": ("count", "1"), "one": ("count", "1")}
    words |= {"two": ("count", "2"), "three": ("count", "3"), "background": ("background_word", "")}
    return words


CANONICAL = _vocabulary(_canonical_words())


@dataclass(slots=True)
class _Mention:
    shape: str
    colour: str | None
    size: str | None
    count: int | None  # None: a plural without a number ("red circles")
    positions: list[str]

    def full(self) -> bool:
        return len(self.positions) >= (self.count or 3)


@dataclass(frozen=True, slots=True)
class _Partial:
    shape: str
    colour: str | None
    size: str | None
    position: str | None


def _items(text: str, vocabulary: _Vocabulary) -> list[tuple[str, str]]:
    """The text's attribute words in order, as (kind, value); two-word entries first."""
    tokens = re.findall(r"[a-z]+|\d+", text.lower())
    items, i = [], 0
    while i < len(tokens):
        pair = " ".join(tokens[i : i + 2])
        word = pair if pair in vocabulary.words else tokens[i]
        if word in vocabulary.words:
            kind, value = vocabulary.words[word]
            if kind == "shape" and word in vocabulary.plurals:
                kind = "plural_shape"
            items.append((kind, value))
        i += 1 + (word == pair)
    return items


def _mentions(text: str, vocabulary: _Vocabulary) -> tuple[list[_Mention], str | None]:
    """The objects a text describes, and the background it names (a background colour
    next to the word "background" or "backdrop" wins over one elsewhere).

    Adjectives and a count bind to the next shape word. A position binds to the last object
    when that object still lacks one ("a red circle in the top left"), else to the next
    ("... and in the center a blue star").
    """
    mentions: list[_Mention] = []
    colour = size = background = None
    named = False  # the background found so far stands next to "background"
    count: int | None = None
    waiting: list[str] = []  # positions said before their object
    items = _items(text, vocabulary)
    for i, (kind, value) in enumerate(items):
        if kind in ("shape", "plural_shape"):
            plural = kind == "plural_shape"
            n = count if count is not None and (plural or count == 1) else (None if plural else 1)
            mentions.append(_Mention(value, colour, size, n, waiting))
            colour = size = count = None
            waiting = []
        elif kind == "position":
            if mentions and not mentions[-1].full() and not (colour or size or count):
                mentions[-1].positions.append(value)
            else:
                waiting.append(value)
        elif kind == "colour":
            colour = value
        elif kind == "size":
            size = value
        elif kind == "count":
            count = int(value)
        elif kind == "background":
            beside = {items[j][0] for j in (i - 1, i + 1) if 0 <= j < len(items)}
            if background is None or "background_word" in beside or not named:
                named = "background_word" in beside
                background = value
    return mentions, background


def _expand(mentions: list[_Mention]) -> list[_Partial]:
    """One partial object per object the mentions describe ("two circles" is two)."""
    objects: list[_Partial] = []
    for m in mentions:
        n = m.count if m.count is not None else max(2, len(m.positions))
        for i in range(n):
            position = m.positions[i] if i < len(m.positions) else None
            objects.append(_Partial(m.shape, m.colour, m.size, position))
    return objects


# ---------------------------------------------------------------------------------------------
# Text to scene


def _check_text(text: str, what: str, example: str) -> None:
    if not text.strip():
        raise ValueError(f"{what} is empty; give one such as {example!r}")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"{what} is {len(text)} characters; this renderer takes at most {MAX_PROMPT_CHARS}"
        )


def _pixel_seed(seed: int) -> int:
    """Any integer as a seed numpy takes (non-negative, below 2**63)."""
    return seed % (1 << 63)


def _place(
    partials: list[_Partial], rng: random.Random, existing: tuple[SceneObject, ...] = ()
) -> tuple[SceneObject, ...]:
    """`existing` plus the partials as full objects, each at its own position: stated free
    positions first, then the rest at free positions drawn from `rng`, unstated colours and
    sizes drawn too. Partials with no position left are dropped."""
    taken = {o.position for o in existing}
    positions: list[str | None] = []
    for p in partials:
        free = p.position is not None and p.position not in taken
        positions.append(p.position if free else None)
        taken |= {p.position} if free and p.position else set()
    objects = list(existing)
    for p, position in zip(partials, positions, strict=True):
        colour = p.colour or rng.choice(list(COLOURS))
        size = p.size or rng.choice(SIZES)
        if position is None:
            free_positions = [q for q in POSITIONS if q not in taken]
            if not free_positions:
                continue
            position = rng.choice(free_positions)
            taken.add(position)
        objects.append(SceneObject(p.shape, colour, size, position))
    return tuple(objects)


def parse_prompt(text: str, seed: int) -> Scene:
    """The scene `render_text` draws for `text`: what the text says in canonical words, the
    rest drawn from `seed`.

    Unknown words are ignored. At most MAX_OBJECTS objects are drawn (the first ones the text
    names); an object whose position is taken or unstated goes to a free position drawn from
    the seed. A text naming no shape gives a scene with no objects: just the background (the
    one it names, else a seeded one), which any description scores badly against.

    Raises:
        ValueError: `text` is empty or longer than MAX_PROMPT_CHARS.
    """
    _check_text(text, "text", "a small red circle in the top left on a white background")
    rng = random.Random(seed)
    mentions, background = _mentions(text, CANONICAL)
    objects = _place(_expand(mentions)[:MAX_OBJECTS], rng)
    return Scene(objects, background or rng.choice(list(BACKGROUNDS)), _pixel_seed(seed))


def render_text(text: str, seed: int) -> bytes:
    """`text` drawn as a scene (`parse_prompt`), PNG-encoded with its scene chunk; the same
    text and seed give the same bytes.

    Raises:
        ValueError: `text` is empty or longer than MAX_PROMPT_CHARS.
    """
    return parse_prompt(text, seed).png()


# ---------------------------------------------------------------------------------------------
# Editing

_VERBS = {
    **dict.fromkeys(("make", "turn", "change", "paint"), "make"),
    **dict.fromkeys(("move", "put", "place", "shift"), "move"),
    **dict.fromkeys(("add", "draw", "insert"), "add"),
    **dict.fromkeys(("remove", "delete", "erase"), "remove"),
}
_EFFECT_WORDS = {
    **dict.fromkeys(("blur", "blurry", "blurred"), "blur"),
    **dict.fromkeys(("stripes", "striped", "stripy"), "stripes"),
    **dict.fromkeys(("noise", "noisy", "grain", "grainy"), "noise"),
}


@dataclass(frozen=True, slots=True)
class _Selector:
    """Which objects an edit speaks of: every stated attribute must match; a plural shape
    means all the matches, else only the first in reading order."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    position: str | None = None
    plural: bool = False

    def pick(self, objects: tuple[SceneObject, ...]) -> list[int]:
        if self.shape is None and self.colour is None and self.size is None:
            return []  # "make the top left blue" names no object
        wanted = {
            k: v
            for k, v in (
                ("shape", self.shape),
                ("colour", self.colour),
                ("size", self.size),
                ("position", self.position),
            )
            if v
        }
        hits = sorted(
            (
                i
                for i, o in enumerate(objects)
                if all(getattr(o, k) == v for k, v in wanted.items())
            ),
            key=lambda i: POSITIONS.index(objects[i].position),
        )
        return hits if self.plural else hits[:1]


def _selector(items: list[tuple[str, str]]) -> _Selector:
    found: dict[str, str] = {}
    plural = False
    for kind, value in items:
        if kind in ("shape", "plural_shape"):
            plural = kind == "plural_shape"
            kind = "shape"
        if kind in ("shape", "colour", "size", "position"):
            found.setdefault(kind, value)
    return _Selector(plural=plural, **found)


_CHANGEABLE = ("colour", "size", "shape", "plural_shape")


def _clauses(instruction: str) -> list[tuple[str, list[str]]]:
    """(verb, words) per clause: a clause starts at each edit verb or after . ; ! ?"""
    clauses: list[tuple[str, list[str]]] = []
    verb = ""
    words: list[str] = []  # the clause being read
    for token in re.findall(r"[a-z]+|\d+|[.;!?]", instruction.lower()):
        if token in _VERBS or token in ".;!?":
            clauses.append((verb, words))
            verb, words = _VERBS.get(token, ""), []
        else:
            words.append(token)
    clauses.append((verb, words))
    return [(v, w) for v, w in clauses if v or w]


def _edit_objects(
    scene: Scene, verb: str, words: list[str], rng: random.Random
) -> tuple[SceneObject, ...]:
    objects = scene.objects
    if verb == "add":
        mentions, _ = _mentions(" ".join(words), CANONICAL)
        return _place(_expand(mentions), rng, objects)
    if verb == "remove":
        gone = set(_selector(_items(" ".join(words), CANONICAL)).pick(objects))
        return tuple(o for i, o in enumerate(objects) if i not in gone)
    if verb == "move":
        cut = words.index("to") if "to" in words else len(words)
        target = [v for k, v in _items(" ".join(words[cut:]), CANONICAL) if k == "position"]
        items = _items(" ".join(words[:cut]), CANONICAL)
        if not target:  # "move the star top left": the last position is the destination
            positions = [i for i, (k, _) in enumerate(items) if k == "position"]
            target = [items.pop(positions[-1])[1]] if positions else []
        return _move(objects, _selector(items).pick(objects)[:1], target[-1]) if target else objects
    if verb == "make":
        items = _items(" ".join(words), CANONICAL)
        shape_at = next((i for i, (k, _) in enumerate(items) if k.endswith("shape")), None)
        if shape_at is None:
            return objects
        after = items[shape_at + 1 :]
        new = {k.removeprefix("plural_"): v for k, v in after if k in _CHANGEABLE}
        said = items[: shape_at + 1] + [(k, v) for k, v in after if k == "position"]
        chosen = set(_selector(said).pick(objects))
        return tuple(replace(o, **new) if i in chosen else o for i, o in enumerate(objects))
    return objects


def _move(
    objects: tuple[SceneObject, ...], chosen: list[int], target: str
) -> tuple[SceneObject, ...]:
    """The chosen object at `target`; an object already there swaps places with it."""
    if not chosen:
        return objects
    source = objects[chosen[0]].position
    return tuple(
        replace(o, position=target)
        if i == chosen[0]
        else replace(o, position=source)
        if o.position == target
        else o
        for i, o in enumerate(objects)
    )


def edit_scene(scene: Scene, instruction: str, seed: int) -> Scene:
    """`scene` with the edits of `instruction` applied, clause by clause.

    Understood (canonical words only, like `render_text`): recolour, resize or reshape
    ("make the red circle blue", "make the square large", "turn the circle into a star"),
    move ("move the star to the top left"; an object already there swaps places), add ("add
    a small blue star at the center"; unstated attributes and a taken or unstated position
    are drawn from `seed`; no free position: not added), remove ("remove the triangle";
    "remove the circles" removes all of them), the background ("make the background white")
    and pixel effects anywhere in the text ("blur the image", "add stripes", "add noise").
    A singular object means the first match in reading order. Anything not understood
    changes nothing.

    Raises:
        ValueError: `instruction` is empty or longer than MAX_PROMPT_CHARS.
    """
    _check_text(instruction, "instruction", "make the red circle blue")
    rng = random.Random(seed)
    objects, background = scene.objects, scene.background
    for verb, words in _clauses(instruction):
        objects = _edit_objects(replace(scene, objects=objects), verb, words, rng)
        if verb == "make" and "background" in words:
            named = [v for k, v in _items(" ".join(words), CANONICAL) if k == "background"]
            background = named[-1] if named else background
    asked = [
        _EFFECT_WORDS[w] for w in re.findall(r"[a-z]+", instruction.lower()) if w in _EFFECT_WORDS
    ]
    effects = tuple(dict.fromkeys((*scene.effects, *asked)))
    return replace(scene, objects=objects, background=background, effects=effects)


def edit_image(image: bytes, instruction: str, seed: int) -> bytes:
    """A closed-world PNG edited by `instruction` (see `edit_scene`) and rendered again;
    the same bytes back when the instruction changes nothing.

    Raises:
        ValueError: `image` is not a closed-world scene image (no scene chunk), or the
            instruction is empty or longer than MAX_PROMPT_CHARS.
    """
    scene = scene_of_image(image)
    edited = edit_scene(scene, instruction, seed)
    return image if edited == scene else edited.png()
