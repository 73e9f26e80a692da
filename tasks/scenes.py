"""The closed world: generated scenes whose ground truth is known, and captions checked against it.

No real CLIP-family weights can be downloaded where the offline stack runs, so its scorer is
trained here on this world, and the demo and the quality benchmark use it to say not only how
a caption scores but whether it is *right*. A scene is one to three objects, each a shape, a
colour, a size and a position from small fixed sets, on a background colour; it is a pure value,
rendered deterministically from its own seed, so the same scene is the same image on every
machine. Descriptions come from a small grammar (word order, synonyms, counts); a second grammar,
never used for training (`PARAPHRASE`), measures how the scorer reads phrasings it has not seen.

The world also runs the other way (`render_text`, `edit_image`, from `_scene_world.py`): a
text-to-image renderer and an image editor that read only the canonical words, so the
generation tasks have a closed world whose renderings can be checked like captions.

Needs only Pillow and numpy, so the torch-free engine process can import it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from mils.tasks._checks import CaptionCheck, Split, Verdict

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "EFFECTS",
    "GRAMMAR",
    "KINDS",
    "MAX_OBJECTS",
    "MAX_PROMPT_CHARS",
    "PARAPHRASE",
    "POSITIONS",
    "SCENE_CHUNK",
    "SHAPES",
    "SIDE",
    "SIZES",
    "CaptionCheck",
    "Grammar",
    "Scene",
    "SceneObject",
    "Split",
    "Verdict",
    "canonical",
    "change_one",
    "check_caption",
    "describe",
    "edit_image",
    "edit_scene",
    "make_scene",
    "near_miss",
    "parse_prompt",
    "render_text",
    "scene_of_image",
    "scenes",
]

# The pixel half of the world (objects, drawing, the renderer and editor) lives in
# `_scene_world.py`, which imports nothing from mils so the Triton models load it by path.
from mils.tasks._scene_world import (
    _CENTRES as _CENTRES,
)
from mils.tasks._scene_world import (
    _JITTER as _JITTER,
)
from mils.tasks._scene_world import (
    _NOISE as _NOISE,
)
from mils.tasks._scene_world import (
    _RADIUS as _RADIUS,
)
from mils.tasks._scene_world import (
    BACKGROUNDS,
    COLOURS,
    EFFECTS,
    MAX_OBJECTS,
    MAX_PROMPT_CHARS,
    POSITIONS,
    SCENE_CHUNK,
    SHAPES,
    SIDE,
    SIZES,
    Scene,
    SceneObject,
    _expand,
    _mentions,
    _Partial,
    _vocabulary,
    edit_image,
    edit_scene,
    parse_prompt,
    render_text,
    scene_of_image,
)
from mils.tasks._scene_world import (
    _draw_shape as _draw_shape,
)

KINDS = ("shape", "colour", "size", "position", "count", "background")
"""The attribute kinds a caption is checked on."""


def make_scene(rng: random.Random) -> Scene:
    """A random scene: 1-3 objects at distinct positions, any background."""
    count = rng.choice((1, 2, 2, 3, 3))
    positions = rng.sample(POSITIONS, count)
    objects = tuple(
        SceneObject(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES), position)
        for position in positions
    )
    return Scene(objects, rng.choice(list(BACKGROUNDS)), rng.getrandbits(63))


def scenes(split: Split, start: int = 0) -> Iterator[Scene]:
    """The scenes of `split`, from index `start` on: the same sequence on every call."""
    for index in itertools.count(start):
        yield make_scene(random.Random(f"{split.name}:{index}"))


# ---------------------------------------------------------------------------------------------
# Descriptions


@dataclass(frozen=True, slots=True)
class _Words:
    """The words one grammar picks from, per attribute value."""

    shapes: dict[str, tuple[tuple[str, str], ...]]  # shape -> (singular, plural) choices
    colours: dict[str, tuple[str, ...]]
    sizes: dict[str, tuple[str, ...]]
    positions: dict[str, tuple[str, ...]]
    backgrounds: dict[str, tuple[str, ...]]


_TRAIN_WORDS = _Words(
    shapes={
        "circle": (("circle", "circles"), ("disc", "discs"), ("dot", "dots")),
        "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
        "triangle": (("triangle", "triangles"),),
        "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
        "star": (("star", "stars"),),
        "cross": (("cross", "crosses"), ("plus sign", "plus signs"), ("plus", "pluses")),
    },
    colours={c: (c,) for c in COLOURS} | {"purple": ("purple", "violet"), "gray": ("gray",)},
    sizes={"small": ("small", "little", "tiny"), "large": ("large", "big")},
    positions={
        "top left": ("top left", "upper left", "top-left"),
        "top right": ("top right", "upper right", "top-right"),
        "center": ("center", "middle"),
        "bottom left": ("bottom left", "lower left", "bottom-left"),
        "bottom right": ("bottom right", "lower right", "bottom-right"),
    },
    backgrounds={"black": ("black",), "gray": ("gray", "grey"), "white": ("white",)},
)
# The paraphrase grammar adds words the training grammar never uses, each sharing character
# n-grams with a training word (centre/center, smallish/small, corner). A synonym that shares
# none ("huge" for large) cannot be read by any n-gram model and is left out.
_PARAPHRASE_WORDS = replace(
    _TRAIN_WORDS,
    sizes={"small": ("small", "smallish", "tiny"), "large": ("large", "big")},
    positions={
        "top left": ("top left corner", "upper-left corner", "top left"),
        "top right": ("top right corner", "upper-right corner", "top right"),
        "center": ("centre", "very middle", "center"),
        "bottom left": ("bottom left corner", "lower-left corner", "bottom left"),
        "bottom right": ("bottom right corner", "lower-right corner", "bottom right"),
    },
    backgrounds={"black": ("black",), "gray": ("grey", "gray"), "white": ("white",)},
)
_COUNTS = {1: "one", 2: "two", 3: "three"}


def _groups(scene: Scene) -> list[tuple[SceneObject, list[str]]]:
    """Objects alike in shape, colour and size, grouped: (example, their positions)."""
    groups: dict[tuple[str, str, str], tuple[SceneObject, list[str]]] = {}
    for obj in scene.objects:
        key = (obj.shape, obj.colour, obj.size)
        groups.setdefault(key, (obj, []))[1].append(obj.position)
    return list(groups.values())


def _noun(words: _Words, obj: SceneObject, rng: random.Random, plural: bool) -> str:
    singular, plural_form = rng.choice(words.shapes[obj.shape])
    return plural_form if plural else singular


def _adjectives(words: _Words, obj: SceneObject, rng: random.Random) -> str:
    size, colour = rng.choice(words.sizes[obj.size]), rng.choice(words.colours[obj.colour])
    return f"{size} {colour}" if rng.random() < 0.75 else f"{colour} {size}"


def _places(words: _Words, positions: Sequence[str], rng: random.Random) -> str:
    names = [f"the {rng.choice(words.positions[p])}" for p in positions]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _phrase(
    words: _Words,
    obj: SceneObject,
    positions: list[str],
    rng: random.Random,
    place_first: bool = False,
) -> str:
    """One group as a noun phrase with its position(s): "two small red circles in the ...",
    or, `place_first`, "in the top left, a small red circle"."""
    n = len(positions)
    det = _COUNTS[n] if n > 1 else rng.choice(("a", "a", "one"))
    noun = _noun(words, obj, rng, plural=n > 1)
    prep = rng.choice(("in", "at")) if n == 1 or rng.random() < 0.5 else "in"
    thing, places = f"{det} {_adjectives(words, obj, rng)} {noun}", _places(words, positions, rng)
    if place_first:
        return f"{prep} {places}{rng.choice((',', ''))} {thing}"
    return f"{thing} {prep} {places}"


def _join(parts: Sequence[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    if rng.random() < 0.5:
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return rng.choice((", ", "; ")).join(parts)


def _train_template(scene: Scene, rng: random.Random) -> str:
    words = _TRAIN_WORDS
    groups = _groups(scene)
    rng.shuffle(groups)
    place_first = rng.random() < 0.2
    phrases = [_phrase(words, obj, places, rng, place_first) for obj, places in groups]
    body = _join(phrases, rng)
    bg = rng.choice(words.backgrounds[scene.background])
    prefix = rng.choice(("", "", "a picture of ", "an image of ", "there is ", "a photo of "))
    style = rng.random()
    if style < 0.15:  # one sentence per group
        sentences = [p[0].upper() + p[1:] + "." for p in phrases]
        return " ".join(sentences) + rng.choice(("", f" {bg.capitalize()} background."))
    if place_first:
        return body + rng.choice((f", {bg} background", f" on a {bg} background", ""))
    if style < 0.45:
        text = f"{prefix}{body} on a {bg} background"
    elif style < 0.65:
        text = f"a {bg} background with {body}"
    elif style < 0.8:
        text = f"{prefix}{body}"
    else:
        text = f"{prefix}{body}, {bg} background"
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def _paraphrase_template(scene: Scene, rng: random.Random) -> str:
    """Sentence shapes the training grammar never produces: position first, lists, chat."""
    words = _PARAPHRASE_WORDS
    groups = _groups(scene)
    rng.shuffle(groups)
    bg = rng.choice(words.backgrounds[scene.background])
    style = rng.randrange(4)
    if style == 0:  # "In the top left corner there is a small red circle. ..."
        sentences = []
        for obj, places in groups:
            n = len(places)
            det = _COUNTS[n] if n > 1 else "a"
            verb = "there are" if n > 1 else rng.choice(("there is", "you can see", "sits"))
            noun = _noun(words, obj, rng, plural=n > 1)
            where = _places(words, places, rng)
            sentences.append(f"In {where} {verb} {det} {_adjectives(words, obj, rng)} {noun}.")
        return " ".join(sentences) + f" The background is {bg}."
    if style == 1:  # "top left: small red circle; centre: big blue star (grey background)"
        items = [
            f"{rng.choice(words.positions[o.position])}: {_adjectives(words, o, rng)} "
            f"{_noun(words, o, rng, plural=False)}"
            for o in scene.objects
        ]
        return "; ".join(items) + f" ({bg} background)"
    phrases = [_phrase(words, obj, places, rng) for obj, places in groups]
    if style == 2:
        opener = rng.choice(("I think this image shows", "It looks like", "Honestly, I see"))
        return f"{opener} {_join(phrases, rng)}, all on a plain {bg} backdrop."
    return f"Against a {bg} backdrop: {_join(phrases, rng)}. Nothing else is visible."


Grammar = Callable[[Scene, random.Random], str]
GRAMMAR: Grammar = _train_template
"""The grammar the scorer trains on."""
PARAPHRASE: Grammar = _paraphrase_template
"""A grammar never used in training: how the scorer reads unseen phrasings."""


def canonical(scene: Scene) -> str:
    """The plain ground truth: objects in reading order, every attribute, the background."""
    order = sorted(scene.objects, key=lambda o: POSITIONS.index(o.position))
    parts = [f"a {o.size} {o.colour} {o.shape} in the {o.position}" for o in order]
    return ", ".join(parts) + f" on a {scene.background} background"


def describe(scene: Scene, rng: random.Random, grammar: Grammar = GRAMMAR) -> str:
    """One true description of `scene`; `rng` picks the phrasing."""
    return grammar(scene, rng)


def change_one(scene: Scene, rng: random.Random) -> Scene:
    """`scene` with exactly one attribute changed: an object's shape, colour, size or position,
    or the background. Described with the same phrasing, it is a near miss."""
    kind = rng.choice(("shape", "colour", "size", "position", "background"))
    if kind == "background":
        other = rng.choice([b for b in BACKGROUNDS if b != scene.background])
        return replace(scene, background=other)
    index = rng.randrange(len(scene.objects))
    obj = scene.objects[index]
    if kind == "shape":
        obj = replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    elif kind == "colour":
        obj = replace(obj, colour=rng.choice([c for c in COLOURS if c != obj.colour]))
    elif kind == "size":
        obj = replace(obj, size=next(s for s in SIZES if s != obj.size))
    else:
        taken = {o.position for o in scene.objects}
        obj = replace(obj, position=rng.choice([p for p in POSITIONS if p not in taken]))
    objects = (*scene.objects[:index], obj, *scene.objects[index + 1 :])
    return replace(scene, objects=objects)


def near_miss(scene: Scene, seed: int, grammar: Grammar = GRAMMAR) -> tuple[str, str]:
    """A true description of `scene` and, in the same phrasing, one of a `change_one` of it.

    A changed background is invisible to a phrasing that leaves the background out; such
    changes are drawn again, so the two texts always differ.
    """
    rng = random.Random(seed)
    true = describe(scene, random.Random(seed), grammar)
    while True:
        changed = describe(change_one(scene, rng), random.Random(seed), grammar)
        if changed != true:
            return true, changed


# ---------------------------------------------------------------------------------------------
# Checking a free-text caption


def _lexicon() -> dict[str, tuple[str, str]]:
    """Word (or two words joined by a space) -> (kind, value)."""
    lex: dict[str, tuple[str, str]] = {}
    for shape, forms in {
        "circle": "circle circles disc discs disk disks dot dots ball balls ring rings",
        "square": "square squares box boxes block blocks rectangle rectangles cube cubes",
        "triangle": "triangle triangles pyramid pyramids",
        "diamond": "diamond diamonds rhombus rhombuses lozenge lozenges",
        "star": "star stars",
        "cross": "cross crosses plus pluses plus_sign plus_signs",
    }.items():
        for form in forms.split():
            lex[form.replace("_", " ")] = ("shape", shape)
    for colour, forms in {
        "red": "red crimson scarlet",
        "orange": "orange",
        "yellow": "yellow golden gold",
        "green": "green lime",
        "blue": "blue navy azure",
        "purple": "purple violet lilac",
        "pink": "pink magenta",
        "brown": "brown",
        "black": "black",
        "gray": "gray grey",
        "white": "white",
    }.items():
        for form in forms.split():
            kind = "background" if colour in BACKGROUNDS else "colour"
            lex[form] = (kind, colour)
    for size, forms in {
        "small": "small little tiny smallish",
        "large": "large big huge giant",
    }.items():
        for form in forms.split():
            lex[form] = ("size", size)
    for vertical, synonyms in {"top": ("top", "upper"), "bottom": ("bottom", "lower")}.items():
        for word in synonyms:
            for side in ("left", "right"):
                lex[f"{word} {side}"] = ("position", f"{vertical} {side}")
                lex[f"{side} {word}"] = ("position", f"{vertical} {side}")
    for form in ("center", "centre", "middle", "central"):
        lex[form] = ("position", "center")
    for word, n in {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "pair": 2, "both": 2}.items():
        lex[word] = ("count", str(n))
    lex |= {"three": ("count", "3"), "1": ("count", "1"), "2": ("count", "2"), "3": ("count", "3")}
    for form in ("background", "backdrop", "backgrounds"):
        lex[form] = ("background_word", "")
    return lex


_LEXICON = _lexicon()
_VOCABULARY = _vocabulary(_LEXICON)
"""What `check_caption` reads: far more words than the renderer (`render_text`) does."""


_OBJECT_KINDS = ("shape", "colour", "size", "position")


def _agreement(said: _Partial | SceneObject, true: SceneObject) -> int:
    """How well a described object fits a true one (shape counts double: it names the thing)."""
    weights = {"shape": 2, "colour": 1, "size": 1, "position": 1}
    return sum(w * (getattr(said, k) == getattr(true, k)) for k, w in weights.items())


def check_caption(scene: Scene, caption: str) -> CaptionCheck:
    """Which attributes of `scene` the free-text `caption` gets right.

    The caption's objects are matched to the scene's (the pairing that agrees most); each
    object attribute kind is RIGHT when every scene object's value is stated and right, WRONG
    when some matched object states it wrongly (or an object is described that is not there),
    MISSING otherwise. Count is RIGHT when the caption describes as many objects as there are.
    """
    mentions, background = _mentions(caption, _VOCABULARY)
    said = _expand(mentions)
    truth = list(scene.objects)
    k = min(len(said), len(truth))
    best: list[tuple[_Partial, SceneObject]] = []
    best_score = -1
    for chosen in itertools.permutations(range(len(truth)), k):
        for picked in itertools.combinations(range(len(said)), k):
            pairs = [(said[s], truth[t]) for s, t in zip(picked, chosen, strict=True)]
            score = sum(_agreement(s, t) for s, t in pairs)
            if score > best_score:
                best, best_score = pairs, score
    verdicts: dict[str, Verdict] = {}
    for kind in _OBJECT_KINDS:
        stated = [(getattr(s, kind), getattr(t, kind)) for s, t in best if getattr(s, kind)]
        if any(a != b for a, b in stated) or (kind == "shape" and len(said) > len(truth)):
            verdicts[kind] = Verdict.WRONG
        elif len(stated) == len(truth):
            verdicts[kind] = Verdict.RIGHT
        else:
            verdicts[kind] = Verdict.MISSING
    verdicts["count"] = (
        Verdict.MISSING if not said else Verdict.RIGHT if len(said) == len(truth) else Verdict.WRONG
    )
    verdicts["background"] = (
        Verdict.MISSING
        if background is None
        else Verdict.RIGHT
        if background == scene.background
        else Verdict.WRONG
    )
    right = sum(getattr(s, k) == getattr(t, k) for s, t in best for k in _OBJECT_KINDS)
    return CaptionCheck(
        verdicts={k: verdicts[k] for k in KINDS},
        mentioned=len(said),
        # max(): a scene with no objects (`render_text` of a text naming no shape) has none right
        attributes_right=right / (len(_OBJECT_KINDS) * max(1, len(truth))),
    )
