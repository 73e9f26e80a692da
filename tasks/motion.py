"""Moving scenes: the closed world of `mils.tasks.scenes`, set in motion, with known ground truth.

The offline stack's video scorer is trained here on this world (`triton_models/_motion_clip`),
so a video caption can be checked, not only scored. A clip is one to three objects of the
scene world (a shape, a colour, a size) on a background; each object moves left, right, up or
down, slowly or fast, or stays still, and may appear or disappear partway through. A clip is
a pure value, rendered deterministically from its own seed: FRAMES frames of SIDE x SIDE at
FPS, the same pixels on every machine. Descriptions come from a training grammar; a second
grammar, never used for training (`PARAPHRASE`), measures how the scorer reads phrasings it
has not seen. `check_motion_caption` reads a free-text caption and says which attributes it
got right, as the scene world's `CaptionCheck` (its kinds: KINDS of this module).

Objects have no position attribute: they move, so "left" and "right" are directions here.
Needs only Pillow and numpy; PyAV (the `local` extra) is imported by `render_video` alone, so
the torch-free engine process can import this module without it.
"""

from __future__ import annotations

import io
import itertools
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The scene world's objects, palette, drawing and verdict types, shared (one package): a
# moving object is drawn exactly as a scene object is.
from mils.tasks.scenes import (
    _LEXICON as _SCENE_LEXICON,
)
from mils.tasks.scenes import (
    _NOISE,
    _PARAPHRASE_WORDS,
    _RADIUS,
    _TRAIN_WORDS,
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIDE,
    SIZES,
    CaptionCheck,
    Split,
    Verdict,
    _draw_shape,
    _join,
    _Words,
)

__all__ = [
    "DIRECTIONS",
    "FORMATS",
    "FPS",
    "FRAMES",
    "GRAMMAR",
    "KINDS",
    "MOTION_KINDS",
    "PARAPHRASE",
    "PRESENCES",
    "SIDE",
    "SPEEDS",
    "CaptionCheck",
    "MotionGrammar",
    "MotionScene",
    "MovingObject",
    "Split",
    "Verdict",
    "canonical",
    "change_one",
    "check_motion_caption",
    "describe",
    "make_motion_scene",
    "motion_pool",
    "motion_scenes",
    "near_miss",
    "render_video",
    "write_motion_clips",
]

FRAMES = 16
"""Frames per clip."""
FPS = 8
"""Frames per second: a clip lasts FRAMES / FPS = 2 seconds."""
DIRECTIONS = ("left", "right", "up", "down", "still")
"""Where an object moves; "still" objects have no speed."""
SPEEDS = ("slow", "fast")
PRESENCES = ("throughout", "appears", "disappears")
"""Whether an object is seen all along, comes into view partway, or leaves it partway."""
MOTION_KINDS = ("motion", "speed", "presence")
KINDS = ("shape", "colour", "size", *MOTION_KINDS, "count", "background")
"""The attribute kinds a caption is checked on."""
FORMATS = ("mp4", "webm", "avi", "mkv", "gif")
"""Containers `render_video` writes."""

_STEP = {"slow": 0.8, "fast": 2.0}
"""Pixels per frame: a slow object travels 12 px over the clip, a fast one 30 px."""
_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
_EVENT_FRAMES = (5, 11)
"""An object appears or disappears at a frame in [5, 11): both parts last a third of the clip."""
_MARGIN = 1.0
_SCALE = 4  # drawn at 4x, then downsampled: smooth edges and sub-pixel motion


@dataclass(frozen=True, slots=True)
class MovingObject:
    """One object of a clip: what it is, how it moves, whether it is seen all along."""

    shape: str
    colour: str
    size: str
    motion: str
    """One of DIRECTIONS."""
    speed: str | None
    """One of SPEEDS; None exactly when `motion` is "still"."""
    presence: str = "throughout"
    """One of PRESENCES."""

    def __post_init__(self) -> None:
        if (self.speed is None) != (self.motion == "still"):
            raise ValueError(f"a {self.motion} object needs speed in {SPEEDS} or None if still")


@dataclass(frozen=True, slots=True)
class MotionScene:
    """A clip: its objects, its background, and the seed that places them.

    The seed only chooses where each object starts and the frame at which it appears or
    disappears; two clips with the same attributes and different seeds show the same thing.
    """

    objects: tuple[MovingObject, ...]
    background: str
    seed: int

    def frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """The clip as (n, SIDE, SIDE, 3) uint8 RGB frames: all FRAMES, or those of `indices`."""
        rng = np.random.default_rng(self.seed)
        tracks = _tracks(self, rng)
        noise = rng.normal(0.0, _NOISE, size=(SIDE, SIDE, 1)).astype(np.float32)
        wanted = range(FRAMES) if indices is None else indices
        return np.stack([_frame(self, tracks, t, noise) for t in wanted])

    def gif(self) -> bytes:
        """The clip as an animated GIF (Pillow alone, no PyAV)."""
        images = [Image.fromarray(f) for f in self.frames()]
        buffer = io.BytesIO()
        images[0].save(
            buffer,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=1000 // FPS,
            loop=0,
            optimize=False,
        )
        return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class _Track:
    """Where an object is at frame 0, how far it goes each frame, when it is seen."""

    x: float
    y: float
    dx: float
    dy: float
    visible: range

    def at(self, t: int) -> tuple[float, float]:
        return self.x + self.dx * t, self.y + self.dy * t


def _track(obj: MovingObject, rng: np.random.Generator) -> _Track:
    """A start point that keeps the object inside the frame for the whole clip."""
    r = _RADIUS[obj.size] + _MARGIN
    step = _STEP[obj.speed] if obj.speed else 0.0
    ux, uy = _VECTORS[obj.motion]
    travel = step * (FRAMES - 1)
    lows = [r + max(0.0, -u * travel) for u in (ux, uy)]
    highs = [SIDE - r - max(0.0, u * travel) for u in (ux, uy)]
    x, y = (float(rng.uniform(lo, hi)) for lo, hi in zip(lows, highs, strict=True))
    event = int(rng.integers(*_EVENT_FRAMES))
    visible = {
        "throughout": range(FRAMES),
        "appears": range(event, FRAMES),
        "disappears": range(event),
    }[obj.presence]
    return _Track(x, y, ux * step, uy * step, visible)


def _clear(track: _Track, r: float, placed: list[tuple[_Track, float]]) -> bool:
    """No frame shows `track` overlapping an already placed object much."""
    for other, r_other in placed:
        for t in set(track.visible) & set(other.visible):
            (x1, y1), (x2, y2) = track.at(t), other.at(t)
            if (x1 - x2) ** 2 + (y1 - y2) ** 2 < (0.9 * (r + r_other)) ** 2:
                return False
    return True


def _tracks(scene: MotionScene, rng: np.random.Generator) -> list[_Track]:
    """Each object's track, drawn again (up to 50 times) while it would overlap another."""
    placed: list[tuple[_Track, float]] = []
    for obj in scene.objects:
        r = _RADIUS[obj.size]
        for _ in range(50):
            track = _track(obj, rng)
            if _clear(track, r, placed):
                break
        placed.append((track, r))
    return [t for t, _ in placed]


def _frame(scene: MotionScene, tracks: list[_Track], t: int, noise: np.ndarray) -> np.ndarray:
    big = SIDE * _SCALE
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj, track in zip(scene.objects, tracks, strict=True):
        if t in track.visible:
            x, y = track.at(t)
            radius = _RADIUS[obj.size] * _SCALE
            _draw_shape(draw, obj.shape, x * _SCALE, y * _SCALE, radius, COLOURS[obj.colour])
    pixels = np.asarray(image.resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def _random_object(rng: random.Random) -> MovingObject:
    motion = rng.choice(DIRECTIONS)
    return MovingObject(
        shape=rng.choice(SHAPES),
        colour=rng.choice(list(COLOURS)),
        size=rng.choice(SIZES),
        motion=motion,
        speed=None if motion == "still" else rng.choice(SPEEDS),
        presence=rng.choice(("throughout", "throughout", "appears", "disappears")),
    )


def make_motion_scene(rng: random.Random) -> MotionScene:
    """A random clip: 1-3 objects, no two of the same shape and colour, any background."""
    count = rng.choice((1, 1, 2, 2, 3))
    objects: list[MovingObject] = []
    while len(objects) < count:
        obj = _random_object(rng)
        if all((o.shape, o.colour) != (obj.shape, obj.colour) for o in objects):
            objects.append(obj)
    return MotionScene(tuple(objects), rng.choice(list(BACKGROUNDS)), rng.getrandbits(63))


def motion_scenes(split: Split, start: int = 0) -> Iterator[MotionScene]:
    """The clips of `split`, from index `start` on: the same sequence on every call (and
    apart from the still scenes of the same split)."""
    for index in itertools.count(start):
        yield make_motion_scene(random.Random(f"motion:{split.name}:{index}"))


# ---------------------------------------------------------------------------------------------
# Encoded video


_CODECS = {  # format -> (PyAV container format, codec, codec options)
    "mp4": ("mp4", "libx264", {"crf": "12", "preset": "medium", "threads": "1"}),
    "mkv": ("matroska", "libx264", {"crf": "12", "preset": "medium", "threads": "1"}),
    "webm": ("webm", "libvpx-vp9", {"crf": "12", "b": "0", "threads": "1", "row-mt": "0"}),
    "avi": ("avi", "mpeg4", {"b": "2M", "threads": "1"}),
}


def render_video(scene: MotionScene, fmt: str = "mp4") -> bytes:
    """The clip encoded as `fmt` (one of FORMATS): H.264 in mp4 and mkv, VP9 in webm, MPEG-4
    part 2 in avi (yuv420p, FPS frames a second), or an animated GIF.

    Raises:
        ValueError: `fmt` is not one of FORMATS.
        ImportError: PyAV (the `local` extra) is not installed; GIF needs Pillow only.
    """
    if fmt == "gif":
        return scene.gif()
    if fmt not in _CODECS:
        raise ValueError(f"unknown video format {fmt!r}; choose one of {', '.join(FORMATS)}")
    import av  # lazily: the engine process imports this module without PyAV

    container_format, codec, options = _CODECS[fmt]
    buffer = io.BytesIO()
    # bitexact: no random ids or dates in the container, so the same clip is the same file
    with av.open(
        buffer, mode="w", format=container_format, options={"fflags": "+bitexact"}
    ) as container:
        stream = container.add_stream(codec, rate=Fraction(FPS), options=dict(options))
        assert isinstance(stream, av.VideoStream)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        for pixels in scene.frames():
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def write_motion_clips(
    folder: Path,
    count: int,
    fmt: str = "mp4",
    split: Split = Split.HELD_OUT,
    start: int = 0,
) -> dict[Path, MotionScene]:
    """Write `count` clips of `split` (from index `start`) into `folder` as `clip-N.<fmt>`;
    path -> its clip. The same files on every call."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, scene in zip(range(count), motion_scenes(split, start), strict=False):
        path = folder / f"clip-{start + index + 1}.{fmt}"
        path.write_bytes(render_video(scene, fmt))
        written[path] = scene
    return written


# ---------------------------------------------------------------------------------------------
# Descriptions


@dataclass(frozen=True, slots=True)
class _MotionWords:
    """The words one grammar picks from for motion: a template takes the adverb."""

    moving: dict[str, tuple[str, ...]]  # direction -> phrases with "{adv}" where speed goes
    still: tuple[str, ...]
    speeds: dict[str, tuple[str, ...]]
    presence: dict[str, tuple[str, ...]]


_TRAIN_MOTION = _MotionWords(
    moving={
        "left": ("moving left {adv}", "moves left {adv}", "{adv} moving to the left",
                 "going left {adv}", "slides to the left {adv}", "sliding left {adv}"),
        "right": ("moving right {adv}", "moves right {adv}", "{adv} moving to the right",
                  "going right {adv}", "slides to the right {adv}", "sliding right {adv}"),
        "up": ("moving up {adv}", "moves up {adv}", "{adv} moving upwards", "rising {adv}",
               "going up {adv}", "{adv} rising"),
        "down": ("moving down {adv}", "moves down {adv}", "{adv} moving downwards",
                 "falling {adv}", "going down {adv}", "{adv} falling"),
    },
    still=("staying still", "stays still", "standing still", "not moving", "that does not move"),
    speeds={"slow": ("slowly", "slowly", "slow"), "fast": ("quickly", "quickly", "fast")},
    presence={
        "appears": ("that appears partway through", "appearing partway through",
                    "which appears halfway through"),
        "disappears": ("that disappears partway through", "and then disappears",
                       "disappearing halfway through"),
    },
)  # fmt: skip
# Unseen phrasings: other verbs, -ward directions, pace phrases. Most new words share
# character n-grams with training words (leftward/left, rapidly/...), as in the scene world.
_PARAPHRASE_MOTION = _MotionWords(
    moving={
        "left": ("drifts leftward {adv}", "travels towards the left {adv}",
                 "heads left {adv}", "glides leftwards {adv}"),
        "right": ("drifts rightward {adv}", "travels towards the right {adv}",
                  "heads right {adv}", "glides rightwards {adv}"),
        "up": ("drifts upward {adv}", "climbs {adv}", "heads upwards {adv}", "rises {adv}"),
        "down": ("drifts downward {adv}", "sinks {adv}", "heads downwards {adv}",
                 "falls {adv}"),
    },
    still=("remains still", "stays put", "is stationary", "is motionless"),
    speeds={
        "slow": ("slowly", "at a slow pace", "gently"),
        "fast": ("rapidly", "at a fast pace", "quickly"),
    },
    presence={
        "appears": ("and appears only later", "(it appears partway)", "appearing later on"),
        "disappears": ("and then vanishes", "(it disappears partway)",
                       "disappearing later on"),
    },
)  # fmt: skip


def _what(words: _Words, obj: MovingObject, rng: random.Random) -> str:
    """ "small red circle" or "red small circle"."""
    noun = rng.choice(words.shapes[obj.shape])[0]
    size, colour = rng.choice(words.sizes[obj.size]), rng.choice(words.colours[obj.colour])
    adjectives = f"{size} {colour}" if rng.random() < 0.75 else f"{colour} {size}"
    return f"{adjectives} {noun}"


def _how(motion: _MotionWords, obj: MovingObject, rng: random.Random) -> str:
    """ "moving left slowly", "stays still", with the presence phrase when it has one."""
    if obj.speed is None:
        how = rng.choice(motion.still)
    else:
        adverb = rng.choice(motion.speeds[obj.speed])
        how = rng.choice(motion.moving[obj.motion]).format(adv=adverb)
    if obj.presence != "throughout":
        how = f"{how} {rng.choice(motion.presence[obj.presence])}"
    return how


def _train_phrase(obj: MovingObject, rng: random.Random) -> str:
    det = rng.choice(("a", "a", "one"))
    return f"{det} {_what(_TRAIN_WORDS, obj, rng)} {_how(_TRAIN_MOTION, obj, rng)}"


def _train_template(scene: MotionScene, rng: random.Random) -> str:
    objects = list(scene.objects)
    rng.shuffle(objects)
    phrases = [_train_phrase(obj, rng) for obj in objects]
    bg = rng.choice(_TRAIN_WORDS.backgrounds[scene.background])
    prefix = rng.choice(("", "", "a video of ", "a clip of ", "in this clip, ", "an animation of "))
    style = rng.random()
    if style < 0.15:  # one sentence per object
        sentences = [p[0].upper() + p[1:] + "." for p in phrases]
        return " ".join(sentences) + rng.choice(("", f" {bg.capitalize()} background."))
    body = _join(phrases, rng)
    if style < 0.5:
        text = f"{prefix}{body} on a {bg} background"
    elif style < 0.65:
        text = f"a {bg} background with {body}"
    elif style < 0.8:
        text = f"{prefix}{body}"
    else:
        text = f"{prefix}{body}, {bg} background"
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def _paraphrase_template(scene: MotionScene, rng: random.Random) -> str:
    """Sentence shapes the training grammar never produces: "there is", lists, chat."""
    objects = list(scene.objects)
    rng.shuffle(objects)
    bg = rng.choice(_PARAPHRASE_WORDS.backgrounds[scene.background])
    style = rng.randrange(4)

    def what(obj: MovingObject) -> str:
        return _what(_PARAPHRASE_WORDS, obj, rng)

    def how(obj: MovingObject) -> str:
        return _how(_PARAPHRASE_MOTION, obj, rng)

    if style == 0:  # "There is a small red circle, which drifts leftward slowly. ..."
        sentences = [f"There is a {what(o)}, which {how(o)}." for o in objects]
        return " ".join(sentences) + f" The background is {bg}."
    if style == 1:  # "small red circle: drifts leftward slowly; ... (grey background)"
        return "; ".join(f"{what(o)}: {how(o)}" for o in objects) + f" ({bg} background)"
    phrases = [f"a {what(o)} that {how(o)}" for o in objects]
    if style == 2:
        opener = rng.choice(("I think this video shows", "It looks like", "Honestly, I see"))
        return f"{opener} {_join(phrases, rng)}, all on a plain {bg} backdrop."
    return f"Against a {bg} backdrop: {_join(phrases, rng)}. Nothing else happens."


MotionGrammar = Callable[[MotionScene, random.Random], str]
GRAMMAR: MotionGrammar = _train_template
"""The grammar the video scorer trains on."""
PARAPHRASE: MotionGrammar = _paraphrase_template
"""A grammar never used in training: how the scorer reads unseen phrasings."""


def canonical(scene: MotionScene) -> str:
    """The plain ground truth: every object with every attribute, then the background."""
    parts = []
    for o in scene.objects:
        adverb = {"slow": "slowly", "fast": "quickly", None: ""}[o.speed]
        how = "staying still" if o.speed is None else f"moving {o.motion} {adverb}"
        when = {"throughout": "", "appears": ", appearing partway through",
                "disappears": ", disappearing partway through"}[o.presence]  # fmt: skip
        parts.append(f"a {o.size} {o.colour} {o.shape} {how}{when}")
    return ", ".join(parts) + f" on a {scene.background} background"


def describe(scene: MotionScene, rng: random.Random, grammar: MotionGrammar = GRAMMAR) -> str:
    """One true description of `scene`; `rng` picks the phrasing."""
    return grammar(scene, rng)


def _changed(obj: MovingObject, kind: str, rng: random.Random) -> MovingObject:
    if kind == "shape":
        return replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    if kind == "colour":
        return replace(obj, colour=rng.choice([c for c in COLOURS if c != obj.colour]))
    if kind == "size":
        return replace(obj, size=next(s for s in SIZES if s != obj.size))
    if kind == "presence":
        return replace(obj, presence=rng.choice([p for p in PRESENCES if p != obj.presence]))
    if kind == "speed" and obj.speed is not None:
        return replace(obj, speed=next(s for s in SPEEDS if s != obj.speed))
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    if obj.speed is not None and rng.random() < 0.6:  # the nearest miss: the other way
        return replace(obj, motion=opposite[obj.motion])
    motion = rng.choice([d for d in DIRECTIONS if d != obj.motion])
    speed = None if motion == "still" else obj.speed or rng.choice(SPEEDS)
    return replace(obj, motion=motion, speed=speed)


def change_one(scene: MotionScene, rng: random.Random) -> MotionScene:
    """`scene` with exactly one attribute changed: an object's shape, colour, size, motion
    (often the opposite direction), speed or presence, or the background. Described with the
    same phrasing, it is a near miss. Motion kinds are drawn most often: they are what a
    still image cannot show."""
    kind = rng.choice(
        ("shape", "colour", "size", "motion", "motion", "speed", "presence", "background")
    )
    if kind == "background":
        other = rng.choice([b for b in BACKGROUNDS if b != scene.background])
        return replace(scene, background=other)
    index = rng.randrange(len(scene.objects))
    obj = _changed(scene.objects[index], kind, rng)
    objects = (*scene.objects[:index], obj, *scene.objects[index + 1 :])
    return replace(scene, objects=objects)


def near_miss(scene: MotionScene, seed: int, grammar: MotionGrammar = GRAMMAR) -> tuple[str, str]:
    """A true description of `scene` and, in the same phrasing, one of a `change_one` of it.

    A changed background is invisible to a phrasing that leaves it out; such changes are
    drawn again, so the two texts always differ.
    """
    rng = random.Random(seed)
    true = describe(scene, random.Random(seed), grammar)
    while True:
        changed = describe(change_one(scene, rng), random.Random(seed), grammar)
        if changed != true:
            return true, changed


def motion_pool(lines: int = 300) -> list[str]:
    """An initial pool for moving scenes: descriptions of single objects of training clips.

    Each line names one object only, so for a clip of two or three objects no line is the
    answer; the loop has to combine and correct them. The first `n` lines are the same for
    every `lines` >= `n`.
    """
    rng = random.Random("motion-pool")
    texts: dict[str, None] = {}
    for scene in motion_scenes(Split.TRAIN, start=10_000_000):
        single = MotionScene((rng.choice(scene.objects),), scene.background, scene.seed)
        texts[describe(single, rng)] = None
        if len(texts) == lines:
            break
    return list(texts)


# ---------------------------------------------------------------------------------------------
# Checking a free-text caption


def _motion_lexicon() -> dict[str, tuple[str, str]]:
    """Word (or two words joined by a space) -> (kind, value): the scene world's shapes,
    colours, sizes, counts and background words, and motion words instead of positions."""
    lex = {w: kv for w, kv in _SCENE_LEXICON.items() if kv[0] != "position"}
    forms = {
        ("motion", "left"): "left leftward leftwards",
        ("motion", "right"): "right rightward rightwards",
        ("motion", "up"): "up upward upwards rising rises rise climbing climbs ascending ascends",
        ("motion", "down"): "down downward downwards falling falls fall dropping drops sinking "
        "sinks descending descends",
        ("motion", "still"): "still stationary motionless static immobile not_moving not_move "
        "stays_put t_move",
        ("speed", "slow"): "slow slowly gently leisurely gradually sluggish sluggishly",
        ("speed", "fast"): "fast quickly quick rapidly rapid swiftly swift speedily briskly",
        ("presence", "appears"): "appears appear appearing emerges emerging",
        ("presence", "disappears"): "disappears disappear disappearing vanishes vanish vanishing",
    }
    for (kind, value), words in forms.items():
        for word in words.split():
            lex[word.replace("_", " ")] = (kind, value)
    return lex


_LEXICON = _motion_lexicon()
_PLURAL_SHAPES = {
    w
    for w, (kind, _) in _LEXICON.items()
    if kind == "shape" and (w[:-1] in _LEXICON or (w.endswith("es") and w[:-2] in _LEXICON))
}
_PACE = {"pace", "speed", "rate", "tempo"}


def _items(caption: str) -> list[tuple[str, str]]:
    """The caption's attribute words in order, as (kind, value); two-word entries first.

    A speed before "pace" ("at a slow pace") is "speed_after": it speaks of the object
    before it, and the "a" before it counts nothing.
    """
    tokens = re.findall(r"[a-z]+|\d+", caption.lower())
    items: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        pair = " ".join(tokens[i : i + 2])
        word = pair if pair in _LEXICON else tokens[i]
        step = 1 + (word == pair)
        if word in _LEXICON:
            kind, value = _LEXICON[word]
            if kind == "shape" and word in _PLURAL_SHAPES:
                kind = "plural_shape"
            if kind == "speed" and i + step < len(tokens) and tokens[i + step] in _PACE:
                kind = "speed_after"
                if items and items[-1][0] == "count" and tokens[i - 1] in ("a", "an"):
                    items.pop()
            items.append((kind, value))
        i += step
    return items


@dataclass(slots=True)
class _Said:
    """One object as the caption describes it (None: not stated)."""

    shape: str
    colour: str | None = None
    size: str | None = None
    count: int | None = 1  # None: a plural without a number ("red circles")
    motion: str | None = None
    speed: str | None = None
    presence: str | None = None


def _mentions(caption: str) -> tuple[list[_Said], str | None]:
    """The objects a caption describes, and the background it names.

    Colour, size and a count bind to the next shape word. A motion, speed or presence word
    binds to the last object when it lacks that kind and nothing for a next object has been
    said since ("a red circle moving left slowly"), else to the next object ("and a fast
    blue square").
    """
    mentions: list[_Said] = []
    colour = size = background = None
    named = False
    count: int | None = None
    waiting: dict[str, str] = {}
    items = _items(caption)
    for i, (kind, value) in enumerate(items):
        if kind in ("shape", "plural_shape"):
            plural = kind == "plural_shape"
            n = count if count is not None and (plural or count == 1) else (None if plural else 1)
            mentions.append(_Said(value, colour, size, n, **waiting))
            colour = size = count = None
            waiting = {}
        elif kind in (*MOTION_KINDS, "speed_after"):
            kind = "speed" if kind == "speed_after" else kind
            last = mentions[-1] if mentions else None
            pending = colour or size or count is not None or waiting
            if last is not None and getattr(last, kind) is None and not pending:
                setattr(last, kind, value)
            else:
                waiting[kind] = value
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


def _expand(mentions: list[_Said]) -> list[_Said]:
    """One entry per object: "two red circles" is two."""
    return [m for m in mentions for _ in range(m.count if m.count is not None else 2)]


def _value(said: _Said, kind: str) -> str | None:
    """What the caption states of `kind` for an object. A described object is there all
    along unless it is said to appear or disappear; a still one has no speed."""
    if kind == "presence":
        return said.presence or "throughout"
    if kind == "speed":
        return said.speed or ("none" if said.motion == "still" else None)
    return getattr(said, kind)


def _truth(obj: MovingObject, kind: str) -> str:
    return (obj.speed or "none") if kind == "speed" else getattr(obj, kind)


_OBJECT_KINDS = ("shape", "colour", "size", *MOTION_KINDS)
_WEIGHTS = {"shape": 2, "colour": 1, "size": 1, "motion": 1, "speed": 1, "presence": 1}


def _pairing(said: list[_Said], truth: list[MovingObject]) -> list[tuple[_Said, MovingObject]]:
    """The pairing of described and true objects that agrees most (shape counts double)."""
    k = min(len(said), len(truth))
    best: list[tuple[_Said, MovingObject]] = []
    best_score = -1
    for chosen in itertools.permutations(range(len(truth)), k):
        for picked in itertools.combinations(range(len(said)), k):
            pairs = [(said[s], truth[t]) for s, t in zip(picked, chosen, strict=True)]
            score = sum(
                w * (_value(s, kind) == _truth(t, kind))
                for s, t in pairs
                for kind, w in _WEIGHTS.items()
            )
            if score > best_score:
                best, best_score = pairs, score
    return best


def check_motion_caption(scene: MotionScene, caption: str) -> CaptionCheck:
    """Which attributes of `scene` the free-text `caption` gets right.

    The caption's objects are matched to the clip's (the pairing that agrees most); each
    object attribute kind is RIGHT when every object's value is stated and right, WRONG when
    some matched object states it wrongly (or an object is described that is not there),
    MISSING otherwise. An object not said to appear or disappear is taken to be there all
    along; "still" states a speed (none). Count is RIGHT when the caption describes as many
    objects as there are.
    """
    mentions, background = _mentions(caption)
    said = _expand(mentions)
    truth = list(scene.objects)
    best = _pairing(said, truth)
    verdicts: dict[str, Verdict] = {}
    for kind in _OBJECT_KINDS:
        stated = [(_value(s, kind), _truth(t, kind)) for s, t in best if _value(s, kind)]
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
    right = sum(_value(s, k) == _truth(t, k) for s, t in best for k in _OBJECT_KINDS)
    return CaptionCheck(
        verdicts={k: verdicts[k] for k in KINDS},
        mentioned=len(said),
        attributes_right=right / (len(_OBJECT_KINDS) * len(truth)),
    )
