"""Train the scene scorer (network.py) on scenes generated on the fly, then measure it.

    python triton_models/_scene_clip/train.py            # the committed weights.pt
    python triton_models/_scene_clip/train.py --smoke    # a few steps, seconds (CI)
    python triton_models/_scene_clip/train.py --eval-only

Reproducible: fixed seed, one torch thread pool of --threads, data from the deterministic
scene generator (`mils.tasks.scenes`, training split; evaluation uses the held-out split).

The loss is CLIP's symmetric InfoNCE over a batch, where each image's candidate texts are
every scene's true description plus, per scene, a near miss (the same phrasing with one
attribute changed) and a garbled or off-world text (words shuffled, attributes swapped
between objects, an object dropped or added, a sentence cut short, a generic photo caption).
True descriptions are dressed up with chatty words, junk words and typos, so that free text
from an LLM is read for its attributes, not for its style.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import network

from mils.tasks.base import DATA_DIR
from mils.tasks.scenes import (
    GRAMMAR,
    PARAPHRASE,
    POSITIONS,
    Scene,
    Split,
    describe,
    make_scene,
    near_miss,
    scenes,
)

DEFAULT_STEPS = 2400
DEFAULT_BATCH = 128
FILLERS = (
    "we can see",
    "this picture contains",
    "here is",
    "look:",
    "a simple drawing of",
    "an illustration showing",
    "the image has",
    "in this image there is",
    "caption:",
    "ok so",
)
SUFFIXES = (".", "!", " in a simple drawing", ", very clear", " :)", " - a flat graphic")


def _junk(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8)))


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(len(word) - 1)
    return (
        word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if rng.random() < 0.5
        else word[:i] + word[i + 1 :]
    )


def dress(text: str, rng: random.Random) -> str:
    """The same description as free text might phrase it: fillers, junk words, typos, case."""
    if rng.random() < 0.25:
        text = f"{rng.choice(FILLERS)} {text}"
    if rng.random() < 0.15:
        text += rng.choice(SUFFIXES)
    tokens = text.split()
    if rng.random() < 0.15:
        for _ in range(rng.randint(1, 2)):
            tokens.insert(rng.randrange(len(tokens) + 1), _junk(rng))
    if rng.random() < 0.1:
        i = rng.randrange(len(tokens))
        tokens[i] = _typo(tokens[i], rng)
    text = " ".join(tokens)
    roll = rng.random()
    return text.lower() if roll < 0.15 else text.upper() if roll < 0.2 else text


def _swap(scene: Scene, rng: random.Random) -> Scene | None:
    """Two objects exchange one attribute: the same words, bound wrongly."""
    if len(scene.objects) < 2:
        return None
    i, j = rng.sample(range(len(scene.objects)), 2)
    a, b = scene.objects[i], scene.objects[j]
    kind = rng.choice(("colour", "shape", "size", "position"))
    if getattr(a, kind) == getattr(b, kind):
        return None
    objects = list(scene.objects)
    objects[i] = replace(a, **{kind: getattr(b, kind)})
    objects[j] = replace(b, **{kind: getattr(a, kind)})
    return replace(scene, objects=tuple(objects))


def _drop_or_add(scene: Scene, rng: random.Random) -> Scene:
    if len(scene.objects) > 1 and (len(scene.objects) == 3 or rng.random() < 0.5):
        objects = list(scene.objects)
        objects.pop(rng.randrange(len(objects)))
        return replace(scene, objects=tuple(objects))
    free = [p for p in POSITIONS if p not in {o.position for o in scene.objects}]
    extra = make_scene(rng).objects[0]
    return replace(scene, objects=(*scene.objects, replace(extra, position=rng.choice(free))))


def garbled(scene: Scene, seed: int, pool: list[str]) -> str:
    """A text that must score below the true description of `scene`."""
    rng = random.Random(seed ^ 0x5EED)
    true = describe(scene, random.Random(seed))
    roll = rng.random()
    if roll < 0.2:
        tokens = true.split()
        rng.shuffle(tokens)
        return " ".join(tokens)
    if roll < 0.45:
        other = _swap(scene, rng) or _drop_or_add(scene, rng)
        return describe(other, random.Random(seed))
    if roll < 0.65:
        return describe(_drop_or_add(scene, rng), random.Random(seed))
    if roll < 0.75:
        tokens = true.split()
        return " ".join(tokens[: rng.randint(1, max(1, len(tokens) // 2))])
    if roll < 0.9:
        return rng.choice(pool)
    return " ".join(_junk(rng) for _ in range(rng.randint(1, 12)))


def batch(step: int, size: int, pool: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Images and texts for one step: size true, size near misses, size garbled."""
    source = scenes(Split.TRAIN, start=step * size)
    chosen = [next(source) for _ in range(size)]
    pixels = torch.from_numpy(np.stack([np.asarray(s.render()) for s in chosen]))
    true, near, junk = [], [], []
    for i, scene in enumerate(chosen):
        seed = step * size + i
        text, changed = near_miss(scene, seed)
        dress_seed = random.Random(seed).getrandbits(32)
        true.append(dress(text, random.Random(dress_seed)))
        near.append(dress(changed, random.Random(dress_seed)))
        junk.append(garbled(scene, seed, pool))
    return pixels, true + near + junk


def loss_fn(model: network.SceneClip, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
    n = pixels.shape[0]
    images = model.embed_images(pixels)
    candidates = model.embed_texts(texts)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * images @ candidates.T  # (n, 3n): each image against every text
    target = torch.arange(n)
    image_to_text = F.cross_entropy(logits, target)
    text_to_image = F.cross_entropy(logits[:, :n].T, target)
    return (image_to_text + text_to_image) / 2


def train(steps: int, size: int, seed: int, log_every: int) -> network.SceneClip:
    torch.manual_seed(seed)
    lines = (DATA_DIR / "image_captions.txt").read_text(encoding="utf-8").splitlines()
    pool = [line.strip() for line in lines if line.strip()]
    model = network.SceneClip()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    warmup = max(1, min(200, steps // 10))

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    start, running = time.monotonic(), 0.0
    model.train()
    for step in range(steps):
        pixels, texts = batch(step, size, pool)
        loss = loss_fn(model, pixels, texts)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(
                f"step {step + 1}/{steps} loss {running / log_every:.3f} "
                f"scale {model.logit_scale.exp().item():.1f} "
                f"{time.monotonic() - start:.0f}s",
                flush=True,
            )
            running = 0.0
    return model.eval()


@torch.inference_mode()
def evaluate(model: network.SceneClip, count: int) -> dict[str, float]:
    """R@1 both ways among `count` held-out scenes (one description each), on the training
    grammar and on the unseen paraphrase grammar, and how often the true description beats
    a one-attribute change of it."""
    held = [s for s, _ in zip(scenes(Split.HELD_OUT), range(count), strict=False)]
    pixels = torch.from_numpy(np.stack([network.decode_image(s.png()) for s in held]))
    images = torch.cat([model.embed_images(pixels[i : i + 256]) for i in range(0, count, 256)])
    results: dict[str, float] = {"scenes": count}
    for name, grammar in (("grammar", GRAMMAR), ("paraphrase", PARAPHRASE)):
        pairs = [near_miss(s, i, grammar) for i, s in enumerate(held)]
        true = torch.cat(
            [model.embed_texts([t for t, _ in pairs[i : i + 256]]) for i in range(0, count, 256)]
        )
        near = torch.cat(
            [model.embed_texts([c for _, c in pairs[i : i + 256]]) for i in range(0, count, 256)]
        )
        sims = images @ true.T
        target = torch.arange(count)
        results[f"{name}_image_to_text_r1"] = (sims.argmax(1) == target).float().mean().item()
        results[f"{name}_text_to_image_r1"] = (sims.argmax(0) == target).float().mean().item()
        wins = (images * true).sum(1) > (images * near).sum(1)
        results[f"{name}_true_beats_near_miss"] = wins.float().mean().item()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-scenes", type=int, default=500)
    parser.add_argument("--out", type=Path, default=network.WEIGHTS)
    parser.add_argument(
        "--smoke", action="store_true", help="3 steps of 8 scenes; no weights written unless --out"
    )
    parser.add_argument("--eval-only", action="store_true", help="measure the weights at --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.eval_only:
        model = network.load(args.out)
    else:
        if args.smoke:
            args.steps, args.batch, args.eval_scenes = 3, 8, 16
        started = time.monotonic()
        model = train(args.steps, args.batch, args.seed, log_every=1 if args.smoke else 50)
        minutes = (time.monotonic() - started) / 60
        print(f"trained {args.steps} steps x {args.batch} scenes in {minutes:.1f} min", flush=True)
        if not args.smoke or "--out" in (argv if argv is not None else sys.argv):
            network.save(model, args.out)
            model = network.load(args.out)  # measure what was written (float16)
            print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", flush=True)
    print(json.dumps(evaluate(model, args.eval_scenes), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
