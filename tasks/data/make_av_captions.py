"""Write `video_captions.txt` and `audio_captions.txt`, the default initial pools of the
video- and audio-captioning tasks.

Like `make_image_captions.py` (whose sentence helpers this reuses), the pools are written
by this project, not taken from a dataset: hand-written lists of who or what is seen (or
heard), what it does, how it moves (or sounds) and where, combined by a seeded random
generator through a few sentence templates. A video caption says what happens and how
things move ("A red car drives slowly to the left along a wet road."); an audio caption
says what makes the sound and how it sounds ("A dog barks three times in the distance.").
Each source only meets actions and places of its own kind, and no (source, place) pair
appears twice. Deterministic: fixed seed, sorted output.

The MILS paper's audio pool holds 50,000 captions; the default here is 5,000, because every
pool text is embedded once per run, and 50,000 take minutes on a CPU-only scorer; pass
`--audio N` for a larger one.

Run from the repository root:  python tasks/data/make_av_captions.py [--audio 50000]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from mils.tasks.data.make_image_captions import article, sentence

SEED = 20261126
VIDEO_TARGET = 3000
AUDIO_TARGET = 5000
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Kind:
    """Who or what, what it does, and where (or how it is heard)."""

    sources: tuple[str, ...]
    actions: tuple[str, ...]
    places: tuple[str, ...]


# --- video: what is seen happening ---------------------------------------------------

MOTION = (
    "slowly", "quickly", "to the left", "to the right", "towards the camera",
    "away from the camera", "up and down", "in circles", "back and forth", "across the frame",
)  # fmt: skip
SHOTS = (
    "", "", "", "A video of", "A short clip of", "A slow-motion video of", "A shaky video of",
    "A time-lapse of", "An animation of", "A close-up video of", "A wide shot of",
    "A black and white video of", "A home video of", "A drone video of",
)  # fmt: skip
VIDEO_KINDS = (
    Kind(
        sources=(
            "man in a blue shirt", "woman in a red coat", "small child", "group of people",
            "old man with a cane", "girl with a backpack", "crowd of tourists", "dancer",
            "football player", "chef", "runner in a yellow shirt", "couple",
        ),
        actions=(
            "walks", "runs", "dances", "waves", "jumps", "talks to someone", "cooks",
            "rides a bicycle", "plays a guitar", "kicks a ball", "crosses the street", "sits down",
        ),
        places=(
            "in a park", "on a busy street", "in a kitchen", "on a beach", "in a gym",
            "on a stage", "in a living room", "at a train station", "on a football field",
            "in the snow", "in the rain", "in an office",
        ),
    ),
    Kind(
        sources=(
            "black dog", "white cat", "brown horse", "flock of birds", "small puppy",
            "herd of sheep", "gray squirrel", "pair of ducks", "kitten", "cow",
        ),
        actions=(
            "runs", "jumps", "plays with a ball", "walks", "sleeps", "eats", "flies",
            "swims", "chases its tail", "looks around",
        ),
        places=(
            "in a field", "on a lawn", "in a garden", "on a sofa", "by a lake",
            "in the snow", "on a farm", "in a forest", "on a wooden floor", "in a pond",
        ),
    ),
    Kind(
        sources=(
            "red car", "white van", "yellow taxi", "city bus", "motorcycle", "train",
            "small boat", "airplane", "truck", "bicycle", "police car", "tram",
        ),
        actions=("drives", "moves", "passes by", "turns", "stops", "speeds", "sails", "lands"),
        places=(
            "along a highway", "on a city street", "over a bridge", "through a tunnel",
            "on a country road", "across a lake", "at an airport", "through a crossing",
            "past a row of houses", "along the coast",
        ),
    ),
    Kind(
        sources=(
            "red ball", "blue square", "green circle", "white triangle", "yellow star",
            "spinning top", "paper plane", "balloon", "leaf", "toy car", "small cube",
        ),
        actions=("moves", "rolls", "slides", "bounces", "floats", "falls", "spins", "appears"),
        places=(
            "on a gray background", "on a table", "across the screen", "on a white background",
            "on a black background", "through the air", "on the floor", "down a slope",
        ),
    ),
)  # fmt: skip
SCENERY = (
    "Waves roll onto a sandy beach", "Clouds drift across a blue sky",
    "Traffic moves through a busy intersection", "Snow falls on a quiet street",
    "Rain falls on a window", "Trees sway in the wind", "A river flows through a forest",
    "People walk through a crowded market", "Fireworks explode in the night sky",
    "Smoke rises from a chimney", "A candle flame flickers in the dark",
    "Leaves fall from a tree", "The sun sets over the sea", "A waterfall pours into a pool",
)  # fmt: skip


def video_caption(rng: random.Random, pairs: set[tuple[str, str]]) -> str | None:
    kind = rng.choice(VIDEO_KINDS)
    source, place = rng.choice(kind.sources), rng.choice(kind.places)
    if (source, place) in pairs:
        return None
    pairs.add((source, place))
    action = rng.choice(kind.actions)
    motion = rng.choice(MOTION) if rng.random() < 0.5 else ""
    shot = rng.choice(SHOTS)
    if shot:  # "A video of a dog running ..."
        verb, *rest = action.split()
        return sentence(shot, article(source), _participle(verb), *rest, motion, place)
    return sentence(article(source), action, motion, place)


def _participle(verb: str) -> str:
    """'runs' -> 'running', 'dances' -> 'dancing', 'flies' -> 'flying' (this vocabulary)."""
    irregular = {"runs": "running", "swims": "swimming", "flies": "flying", "stops": "stopping",
                 "lies": "lying", "sits": "sitting", "spins": "spinning", "chases": "chasing",
                 "passes": "passing", "eats": "eating", "kicks": "kicking", "rolls": "rolling",
                 "crosses": "crossing", "plays": "playing", "looks": "looking"}  # fmt: skip
    if verb in irregular:
        return irregular[verb]
    stem = verb[:-1] if verb.endswith("s") else verb
    return stem[:-1] + "ing" if stem.endswith("e") else stem + "ing"


def build_video(seed: int = SEED, target: int = VIDEO_TARGET) -> list[str]:
    rng = random.Random(seed)
    pairs: set[tuple[str, str]] = set()
    captions = {sentence(s) for s in SCENERY}
    for _ in range(200 * target):
        if len(captions) >= target:
            break
        if (text := video_caption(rng, pairs)) is not None:
            captions.add(text)
        elif rng.random() < 0.02:
            pairs.clear()  # every pair used once: allow repeats with other words around them
    return sorted(captions)


# --- audio: what is heard --------------------------------------------------------------

HOW = (
    "", "", "loudly", "quietly", "in the distance", "close by", "repeatedly", "once",
    "twice", "three times", "for a long time", "briefly", "in a steady rhythm",
    "in short bursts",
)  # fmt: skip
# Each source with the sounds it makes, and where it is heard.
AUDIO_KINDS = (
    Kind(
        sources=("dog:barks,growls,whines", "cat:meows,purrs,hisses", "bird:chirps,sings",
                 "rooster:crows", "cow:moos", "crow:caws", "owl:hoots", "frog:croaks",
                 "horse:neighs,snorts", "duck:quacks"),
        actions=(),
        places=("in a garden", "on a farm", "in a forest", "outside a window", "near a pond",
                "at night", "in the morning"),
    ),
    Kind(
        sources=("man:speaks,laughs,shouts,whispers,coughs", "woman:speaks,laughs,sings,whispers",
                 "child:laughs,cries,shouts,sings", "crowd:cheers,claps,chants",
                 "baby:cries,babbles,laughs", "audience:claps,cheers,laughs"),
        actions=(),
        places=("in a room", "in a hall", "on a street", "in a classroom", "in a stadium",
                "on the phone", "in a cafe"),
    ),
    Kind(
        sources=("car:passes by,honks,drives away", "truck:rumbles,passes by,reverses",
                 "train:approaches,whistles,rattles by", "motorcycle:roars,speeds away",
                 "airplane:flies overhead,takes off", "siren:wails,blares",
                 "helicopter:hovers,flies over"),
        actions=(),
        places=("on a highway", "on a city street", "at a station", "in traffic",
                "on a bridge", "near an airport"),
    ),
    Kind(
        sources=("bell:rings,chimes", "alarm:beeps,goes off", "phone:rings,buzzes",
                 "doorbell:rings,chimes", "clock:ticks,chimes", "timer:beeps",
                 "buzzer:buzzes", "smoke detector:beeps,chirps"),
        actions=(),
        places=("in a quiet room", "in an office", "in a kitchen", "in a hallway",
                "at a door", "in a church"),
    ),
    Kind(
        sources=("piano:plays a melody,plays a low note,plays a high note,plays a chord",
                 "guitar:plays a chord,is strummed,plays a melody", "violin:plays a long note",
                 "drum:is beaten,plays a steady beat", "flute:plays a high melody",
                 "trumpet:plays a loud note", "music box:plays a tune"),
        actions=(),
        places=("in a concert hall", "in a small room", "on a street", "in a studio"),
    ),
    Kind(
        sources=("rain:falls,patters", "wind:blows,howls", "thunder:rumbles,cracks",
                 "waves:crash,roll in", "stream:flows,trickles", "fire:crackles,roars",
                 "leaves:rustle"),
        actions=(),
        places=("on a roof", "through trees", "on a beach", "in a forest", "in a fireplace",
                "against a window", "in a storm"),
    ),
    Kind(
        sources=("door:slams,creaks,squeaks", "hammer:knocks,bangs", "engine:hums,starts up",
                 "vacuum cleaner:whirs,hums", "blender:whirs,grinds", "saw:cuts wood,buzzes",
                 "keyboard:clicks", "fan:hums,whirs", "drill:whines,grinds"),
        actions=(),
        places=("in a workshop", "in a kitchen", "in an office", "in a factory", "at home",
                "in a garage"),
    ),
)  # fmt: skip
_UNCOUNTED = frozenset({"rain", "wind", "thunder", "waves", "fire", "leaves"})
TONES = (
    "A high-pitched beep", "A low hum", "A steady pure tone", "A series of short beeps",
    "White noise", "A rising tone", "A falling tone", "A loud buzz", "A soft click",
    "Static noise", "A sine wave tone", "Two beeps in a row", "A long beep",
    "A square wave buzz", "A chirp that sweeps upwards",
)  # fmt: skip


def audio_caption(rng: random.Random, pairs: set[tuple[str, str]]) -> str | None:
    kind = rng.choice(AUDIO_KINDS)
    source, verbs = rng.choice(kind.sources).split(":")
    action, how, place = rng.choice(verbs.split(",")), rng.choice(HOW), rng.choice(kind.places)
    key = (source, f"{action} {how} {place}")
    if key in pairs:
        return None
    pairs.add(key)
    head = source if source in _UNCOUNTED else article(source)
    return sentence(head, action, how, place)


def build_audio(seed: int = SEED, target: int = AUDIO_TARGET) -> list[str]:
    rng = random.Random(seed + 1)
    pairs: set[tuple[str, str]] = set()
    captions = {sentence(t) for t in TONES}
    captions |= {sentence(t, how) for t in TONES for how in HOW[2:8]}
    for _ in range(200 * target):
        if len(captions) >= target:
            break
        if (text := audio_caption(rng, pairs)) is not None:
            captions.add(text)
    return sorted(captions)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=int, default=VIDEO_TARGET)
    p.add_argument("--audio", type=int, default=AUDIO_TARGET)
    args = p.parse_args()
    for name, captions in (
        ("video_captions.txt", build_video(target=args.video)),
        ("audio_captions.txt", build_audio(target=args.audio)),
    ):
        (HERE / name).write_text("\n".join(captions) + "\n", encoding="utf-8")
        print(f"wrote {len(captions)} captions to {HERE / name}")


if __name__ == "__main__":
    main()
