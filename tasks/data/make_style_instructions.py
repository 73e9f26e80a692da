"""Write `style_instructions.txt`, the default initial pool of the style-transfer task.

Written by this project, not taken from a dataset: hand-written edit verbs (recolour, the
background, blur, textures, sizes, places, adding and removing objects) and the words of
common image styles, combined by a seeded random generator through a few templates. The
instructions speak the closed world's words (tasks/scenes.py: shapes, colours, sizes,
places, backgrounds), which its editor parses, and the everyday words of style that a
diffusion editor (instruct-pix2pix) follows. Deterministic (fixed seed, sorted output).

Run from the repository root:  python tasks/data/make_style_instructions.py
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 20261126
TARGET = 400
OUT = Path(__file__).with_name("style_instructions.txt")

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
BACKGROUNDS = ("black", "gray", "white")
PLACES = ("top left", "top right", "center", "bottom left", "bottom right")
SIZES = ("small", "large")
STYLES = (
    "a watercolor painting", "an oil painting", "a pencil sketch", "a charcoal drawing",
    "a mosaic", "a woodcut print", "a pop art poster", "a stained glass window",
    "a pastel drawing", "an ink drawing", "a neon sign", "a faded photograph",
)  # fmt: skip
TEXTURES = ("stripes", "noise", "grain")
OBJECTS = ("shape", "object", "thing")


def instructions(rng: random.Random) -> set[str]:
    """Every template once per draw; the set keeps distinct lines."""
    colour, other = rng.sample(COLOURS, 2)
    shape = rng.choice(SHAPES)
    return {
        f"make the {colour} {shape} {other}",
        f"make everything {colour}",
        f"recolour the {shape} {other}",
        f"make the background {rng.choice(BACKGROUNDS)}",
        f"change the background to {rng.choice(BACKGROUNDS)}",
        f"make the {shape} {rng.choice(SIZES)}",
        f"move the {shape} to the {rng.choice(PLACES)}",
        f"add a {rng.choice(SIZES)} {colour} {shape} at the {rng.choice(PLACES)}",
        f"remove the {colour} {rng.choice(OBJECTS)}",
        f"remove the {shape}",
        f"add {rng.choice(TEXTURES)}",
        "blur the image",
        f"blur the image and add {rng.choice(TEXTURES)}",
        f"make it look like {rng.choice(STYLES)}",
        f"turn it into {rng.choice(STYLES)}",
        f"make the background {rng.choice(BACKGROUNDS)} and the {shape} {colour}",
    }


def main() -> None:
    rng = random.Random(SEED)
    lines: set[str] = set()
    for _ in range(10_000):
        if len(lines) >= TARGET:
            break
        lines |= instructions(rng)
    chosen = sorted(lines)
    rng.shuffle(chosen)  # an even draw over the templates, not the first in sort order
    chosen = sorted(chosen[:TARGET])
    OUT.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    print(f"wrote {len(chosen)} instructions to {OUT}")


if __name__ == "__main__":
    main()
