"""Write `image_captions.txt`, the default initial pool of the image-captioning task.

The pool is written by this project, not taken from a dataset: the lists below (subjects
with the colours and textures that suit them, what each kind of subject does, where it is,
photo styles, lighting, surfaces) are hand-written, and a seeded random generator combines
them through a few sentence templates. Subjects only meet actions and settings of their own
kind, so a boat is never "sleeping on a sofa"; outdoor-only actions and lighting never fall
on an indoor setting. Variety is enforced while sampling: each subject, setting and style
may appear only a bounded number of times, and no (subject, setting) pair appears twice.
The result is deterministic (fixed seed, sorted choices, sorted output).

Run from the repository root:  python tasks/data/make_image_captions.py
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20240917
TARGET = 3000
OUT = Path(__file__).with_name("image_captions.txt")

# --- vocabulary -----------------------------------------------------------------------

# Styles that fit any subject, and styles that need an outdoor, wide scene.
STYLES = (
    "a photo of", "a close-up photo of", "a bright photo of", "a dark photo of",
    "a black and white photo of", "a blurry photo of", "a cropped photo of",
    "a low-light photo of", "a vintage photo of", "a snapshot of", "a painting of",
    "a watercolor painting of", "an oil painting of", "a pencil sketch of",
    "a cartoon drawing of", "a 3D render of", "a grainy photo of", "a high-contrast photo of",
    "a faded photo of", "a sharp, detailed photo of", "a colorful illustration of",
    "a candid photo of", "a studio photo of", "a soft-focus photo of",
)  # fmt: skip
WIDE_STYLES = (
    "an aerial view of", "a wide-angle photo of", "a panoramic photo of",
    "a landscape photo of", "a drone shot of", "a long-exposure photo of",
)  # fmt: skip

OUTDOOR_LIGHT = (
    "at night", "at sunset", "at dawn", "in bright sunlight", "on a cloudy day",
    "in the rain", "on a foggy morning", "under a clear blue sky", "in harsh midday sun",
    "under gray skies", "in the golden evening light", "under streetlights",
    "on a dark, stormy day",
)  # fmt: skip
INDOOR_LIGHT = (
    "under dim light", "in soft window light", "under warm lamplight",
    "under bright fluorescent light", "by candlelight", "in a dark room",
    "in the evening", "with a bright flash",
)  # fmt: skip
# Scenes already say which room they are; "in a dark room" would contradict them.
SCENE_INDOOR_LIGHT = tuple(light for light in INDOOR_LIGHT if "room" not in light)
COLORS = (
    "red", "blue", "black", "white", "gray", "yellow", "green", "brown", "orange",
    "pink", "purple", "dark blue", "light green", "beige",
)  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """A kind of subject: who it can be, what it does and where it is."""

    subjects: tuple[str, ...]
    """Noun phrases without article, colour and texture included."""
    actions: tuple[str, ...]
    """Participle phrases ("sitting"): captions need no subject-verb agreement."""
    settings: tuple[tuple[str, bool], ...]
    """(place phrase, outdoor?) pairs."""
    outdoor_actions: tuple[str, ...] = field(default=())
    """Actions that only make sense outside ("riding a bicycle")."""
    wide: bool = False
    """Whether the aerial / panoramic styles fit."""


TABLE_SETTINGS = (
    ("on a wooden table", False), ("on a white plate", False), ("on a marble counter", False),
    ("on a blue background", False), ("on a checkered tablecloth", False),
    ("on a picnic blanket", True), ("on a black slate board", False),
    ("on a rough stone surface", True), ("on a windowsill", False), ("on a metal tray", False),
    ("on a white background", False),
)  # fmt: skip

KINDS: dict[str, Kind] = {
    "pets": Kind(
        subjects=(
            "black cat", "fluffy white cat", "gray tabby cat", "orange kitten",
            "sleepy old dog", "small brown dog", "golden retriever", "black and white puppy",
            "furry gray rabbit", "white fluffy dog", "spotted dalmatian", "brown hamster",
            "black labrador", "long-haired cat", "wet dog", "curly-haired poodle",
        ),
        actions=(
            "sitting", "sleeping", "lying down", "looking at the camera", "curled up",
            "stretching", "playing with a ball", "yawning", "looking up", "resting its head",
        ),
        settings=(
            ("on a gray sofa", False), ("on a wooden floor", False), ("on a white bed", False),
            ("by a sunny window", False), ("on a green lawn", True),
            ("in a small backyard", True), ("on a kitchen counter", False),
            ("on a striped rug", False), ("in the snow", True), ("on a porch step", True),
            ("in a cardboard box", False), ("on a red blanket", False),
        ),
    ),
    "wild": Kind(
        subjects=(
            "brown horse", "white horse", "black and white cow", "herd of sheep",
            "gray elephant", "tall giraffe", "zebra", "brown bear", "red fox", "large lion",
            "spotted deer", "gray wolf", "pair of zebras", "brown goat", "shaggy brown yak",
            "herd of wild horses", "wild boar with rough bristles",
        ),
        actions=("standing", "walking", "resting", "running", "looking around"),
        settings=(
            ("in a grassy field", True), ("near a muddy river", True),
            ("in a dense green forest", True), ("on a rocky hill", True),
            ("in tall dry grass", True), ("at a zoo", True), ("on a snowy plain", True),
            ("by a blue lake", True), ("in shallow water", True), ("under a large tree", True),
        ),
    ),
    "birds": Kind(
        subjects=(
            "flock of pigeons", "white seagull", "black crow", "small red bird", "blue parrot",
            "brown owl", "pair of white doves", "bright green parakeet",
            "sparrow with ruffled feathers",
        ),
        actions=("perched", "sitting", "resting", "standing"),
        settings=(
            ("on a tree branch", True), ("on a wooden fence", True), ("on a rooftop", True),
            ("on a stone wall", True), ("on a lamp post", True), ("on a snowy branch", True),
        ),
    ),
    "people": Kind(
        subjects=(
            "man in a blue shirt", "woman in a red dress", "child in a yellow raincoat",
            "young woman with long black hair", "old man with a gray beard",
            "group of friends", "boy in a green jacket", "girl in a pink sweater",
            "couple holding hands", "woman wearing sunglasses", "man in a dark suit",
            "family of four", "chef in a white uniform", "street musician",
            "teenager with a backpack", "woman in a brown coat", "man wearing a red cap",
            "crowd of people", "soccer player in an orange jersey",
        ),
        actions=(
            "smiling", "reading a book", "talking on a phone", "walking", "laughing",
            "eating a sandwich", "drinking coffee", "taking a photo", "waiting",
            "looking at a laptop", "carrying a bag", "playing a guitar", "waving",
        ),
        settings=(
            ("in a busy street", True), ("in a quiet park", True), ("on a sandy beach", True),
            ("in a small kitchen", False), ("in a crowded cafe", False),
            ("at a train station", True), ("in a library", False),
            ("on a city sidewalk", True), ("in an office", False),
            ("on a mountain trail", True), ("in a living room", False),
            ("at an outdoor market", True), ("in front of a red brick wall", True),
            ("on a wooden dock", True), ("in a classroom", False), ("on a rooftop", True),
        ),
        outdoor_actions=("riding a bicycle", "holding an umbrella", "sitting on a bench"),
    ),
    "vehicles": Kind(
        subjects=(
            "red car", "old blue truck", "rusty pickup truck", "yellow taxi", "white van",
            "black motorcycle", "red double-decker bus", "green bicycle", "shiny silver car",
            "vintage convertible", "school bus", "police car", "dusty tractor",
            "orange sports car", "small electric scooter",
        ),
        actions=("parked", "stopped", "covered in dust"),
        settings=(
            ("on a city street", True), ("in an empty parking lot", True),
            ("on a country road", True), ("on a wet highway", True),
            ("in front of a white house", True), ("in a garage", False),
            ("on a dirt track", True), ("next to a gray stone wall", True),
            ("on a bridge", True), ("at a gas station", True),
        ),
        outdoor_actions=("driving", "waiting at a light"),
        wide=True,
    ),
    "food": Kind(
        subjects=(
            "slice of pizza", "bowl of salad", "stack of pancakes", "cup of black coffee",
            "glass of orange juice", "plate of pasta", "red apple", "bunch of yellow bananas",
            "chocolate cake", "bowl of ramen", "loaf of brown bread", "plate of sushi",
            "green smoothie", "cheeseburger with fries", "bowl of red strawberries",
            "pot of soup", "sandwich cut in half", "plate of cookies",
        ),
        actions=("served", "sitting", "half eaten", "arranged neatly"),
        settings=TABLE_SETTINGS,
    ),
    "objects": Kind(
        subjects=(
            "pair of old leather boots", "stack of books", "ceramic vase with flowers",
            "silver laptop", "black camera", "red umbrella", "wooden chair",
            "pair of glasses", "white coffee mug", "wristwatch", "teddy bear",
            "bright desk lamp", "set of keys", "green potted plant", "blue backpack",
            "guitar", "wooden toy train", "glass bottle", "woven basket",
            "pair of red sneakers", "smartphone", "rusty metal lantern", "soft knitted scarf",
            "smooth gray pebble", "shiny glass marble", "smooth ceramic bowl",
        ),
        actions=("lying", "resting", "placed", "sitting", "standing upright", "left"),
        settings=(
            *TABLE_SETTINGS,
            ("on a dusty shelf", False), ("on a bed", False),
            ("on a park bench", True), ("on the floor", False),
        ),
    ),
    "boats": Kind(
        subjects=(
            "small wooden boat", "white sailboat", "red fishing boat", "large cargo ship",
            "yellow kayak", "old rowboat", "blue canoe",
        ),
        actions=("floating", "sailing", "anchored", "drifting"),
        settings=(
            ("on a calm lake", True), ("in a busy harbor", True), ("on a wide river", True),
            ("near a rocky shore", True), ("on the open sea", True),
            ("by a wooden pier", True),
        ),
        wide=True,
    ),
}  # fmt: skip

# Scenes with no single subject; they take lighting and, outdoors, the wide styles.
SCENES = (
    ("a city skyline", True), ("a snowy mountain range", True), ("a quiet country road", True),
    ("a sandy beach with gentle waves", True), ("a dense pine forest", True),
    ("a small village", True), ("a busy intersection", True), ("an empty parking lot", True),
    ("a field of yellow flowers", True), ("a green valley", True),
    ("a desert with red dunes", True), ("a rocky coastline", True), ("a frozen lake", True),
    ("a harbor full of boats", True), ("a tall glass skyscraper", True),
    ("an old stone church", True), ("a red barn", True), ("a wooden cabin", True),
    ("a lighthouse on a cliff", True), ("a narrow alley", True), ("a crowded market", True),
    ("a train station platform", True), ("a soccer field", True), ("a waterfall", True),
    ("a farm with green fields", True), ("a suburban street", True),
    ("a modern kitchen", False), ("a cozy living room", False), ("an empty classroom", False),
    ("a messy bedroom", False), ("an open-plan office", False), ("a small bathroom", False),
    ("a quiet library", False), ("a dark hallway", False),
    ("a restaurant dining room", False), ("a laundry room", False),
    ("a museum gallery", False), ("a gym with weights", False),
)  # fmt: skip

# Close-ups of surfaces: the texture words, with colours.
TEXTURES = (
    "rough gray stone", "smooth white marble", "weathered wood", "rusty metal",
    "wrinkled fabric", "green moss", "cracked brown earth", "shiny chrome", "soft pink wool",
    "peeling blue paint", "woven straw", "wet black asphalt", "fine yellow sand",
    "red brick", "glossy black plastic", "white snow", "dark tree bark", "green leaves",
    "orange autumn leaves", "frosted glass", "blue denim", "brown leather", "gray concrete",
    "striped fabric", "checkered tiles", "polished wooden floorboards",
)  # fmt: skip
TEXTURE_FRAMES = (
    "A close-up of {t}.", "A detailed texture of {t}.", "A macro photo of {t}.",
    "A blurry close-up of {t}.", "A dark close-up photo of {t}.",
    "A bright, sharp photo of {t}.", "A black and white close-up of {t}.",
    "An abstract pattern of {t}.",
)  # fmt: skip
# Plain things for colour-contrast captions ("A red ball on a blue background.").
PLAIN_OBJECTS = (
    "ball", "cup", "box", "toy car", "flower", "umbrella", "balloon", "bucket", "towel",
    "hat", "bag", "vase", "pen", "mug", "bowl", "plastic chair", "scarf", "notebook",
)  # fmt: skip
SURFACES = (
    ("on", "background"), ("on", "table"), ("against", "wall"), ("on", "floor"),
    ("on", "blanket"), ("in front of", "door"), ("on", "sheet of paper"),
)  # fmt: skip
GRAPHICS = (
    "A simple drawing of a house on white paper.", "A logo on a plain white background.",
    "A screenshot of a website.", "A map of a city.", "A chart with colorful bars.",
    "A page of printed text.", "A hand-drawn diagram on a whiteboard.",
    "A pattern of blue and white stripes.", "A black and white checkerboard pattern.",
    "An abstract painting with red, yellow and blue shapes.", "A blank gray square.",
    "A cartoon character with a big smile.", "A pixelated image of a video game.",
    "A poster with bold black letters.", "A handwritten note on yellow paper.",
    "A blurry image with no clear subject.", "A very dark image with little detail.",
    "An overexposed, almost white photo.", "A collage of small photos.",
    "A microscope image of cells.", "A satellite image of farmland.",
    "An x-ray of a human hand.", "A stained glass window with bright colors.",
    "A tattoo of a rose on an arm.",
    "A street sign with white letters on a green background.",
)  # fmt: skip


# --- sentence building ----------------------------------------------------------------


def article(phrase: str) -> str:
    """Prefix 'a' or 'an' by sound, for the words this vocabulary uses."""
    first = phrase.split()[0].lower()
    vowel_sound = first[0] in "aeiou" and not first.startswith(("uni", "one", "use"))
    return f"{'an' if vowel_sound else 'a'} {phrase}"


def sentence(*parts: str) -> str:
    """Join the non-empty parts, capitalise the first letter, end with a full stop."""
    text = " ".join(p for p in parts if p)
    return text[0].upper() + text[1:] + "."


@dataclass
class Budget:
    """Caps that keep any one subject, setting or style from dominating the pool."""

    caps: dict[str, int]
    used: dict[str, int] = field(default_factory=dict)

    def allows(self, *keys: str) -> bool:
        return all(self.used.get(k, 0) < self.caps[k.split(":")[0]] for k in keys)

    def spend(self, *keys: str) -> None:
        for k in keys:
            self.used[k] = self.used.get(k, 0) + 1


def subject_caption(rng: random.Random, budget: Budget, pairs: set[tuple[str, str]]) -> str | None:
    """One caption about a subject of some kind, or None if it would break a cap."""
    kind = KINDS[rng.choice(sorted(KINDS))]
    subject, (place, outdoor) = rng.choice(kind.subjects), rng.choice(kind.settings)
    style = rng.choice(STYLES + (WIDE_STYLES if kind.wide and outdoor else ()))
    keys = (f"subject:{subject}", f"setting:{place}", f"style:{style}")
    if (subject, place) in pairs or not budget.allows(*keys):
        return None
    light = rng.choice(OUTDOOR_LIGHT if outdoor else INDOOR_LIGHT)
    action = rng.choice(kind.actions + (kind.outdoor_actions if outdoor else ()))
    pairs.add((subject, place))
    budget.spend(*keys)
    form = rng.randrange(4)
    if form == 0:
        return sentence(style, article(subject), action, place)
    if form == 1:
        return sentence(style, article(subject), place, light)
    if form == 2:
        return sentence(article(subject), action, place, light)
    return sentence(article(subject), action, place)


def scene_caption(rng: random.Random) -> str:
    """A place with no single subject, in some light, maybe in some style."""
    scene, outdoor = rng.choice(SCENES)
    style = rng.choice(STYLES + (WIDE_STYLES if outdoor else ()))
    light = rng.choice(OUTDOOR_LIGHT if outdoor else SCENE_INDOOR_LIGHT)
    return sentence(style, scene, light) if rng.random() < 0.8 else sentence(scene, light)


def colour_caption(rng: random.Random) -> str:
    """A coloured object against a coloured surface: plain colour-contrast captions."""
    colour, ground = rng.sample(COLORS, 2)
    where, surface = rng.choice(SURFACES)
    thing = rng.choice(PLAIN_OBJECTS)
    return sentence(article(f"{colour} {thing}"), where, article(f"{ground} {surface}"))


def build(seed: int = SEED, target: int = TARGET) -> list[str]:
    """Return `target` distinct captions, sorted; deterministic for a given seed."""
    rng = random.Random(seed)
    budget = Budget(caps={"subject": 30, "setting": 150, "style": 130})
    pairs: set[tuple[str, str]] = set()
    captions: set[str] = set(GRAPHICS)
    captions.update(f.format(t=t) for t in TEXTURES for f in rng.sample(TEXTURE_FRAMES, 3))
    # Mostly subjects, some scenes and colour contrasts; bounded so it always ends.
    for _ in range(200 * target):
        if len(captions) >= target:
            break
        roll = rng.random()
        if roll < 0.78:
            text = subject_caption(rng, budget, pairs)
        elif roll < 0.93:
            text = scene_caption(rng)
        else:
            text = colour_caption(rng)
        if text:
            captions.add(text)
    return sorted(captions)


def main() -> None:
    captions = build()
    OUT.write_text("\n".join(captions) + "\n", encoding="utf-8")
    print(f"wrote {len(captions)} captions to {OUT}")


if __name__ == "__main__":
    main()
