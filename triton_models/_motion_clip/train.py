"""Train the video scorer (network.py) on moving scenes generated on the fly, then measure it.

    python triton_models/_motion_clip/train.py            # the committed weights.pt
    python triton_models/_motion_clip/train.py --smoke    # a few steps, seconds (CI)
    python triton_models/_motion_clip/train.py --eval-only

Reproducible: fixed seed, --threads torch threads (1 by default: the machines this runs on
are shared), data from the deterministic clip generator (`mils.tasks.motion`, training
split; evaluation uses the held-out split, each clip encoded as H.264 mp4 and decoded the
way the server decodes it).

The loss is CLIP's symmetric InfoNCE over a batch, where each clip's candidate texts are
every clip's true description plus, per clip, a near miss (the same phrasing with one
attribute changed: most often a direction reversed, a speed or a presence changed) and a
garbled or off-world text (words shuffled, attributes swapped between objects, an object
dropped or added, a sentence cut short, a generic photo caption). Half of each batch is the
other half played backwards, described as what it then shows: clips that differ only in the
order of their frames, so that the video tower has to read it; each such pair also gets
the loss on its own, and a linear head (thrown away after training) reads from each clip's
embedding how many objects go each way, at each speed, appear and disappear. Without these
two extra losses direction stayed unlearned: among 64 clips it rarely decides which text is
whose. True descriptions are dressed up with chatty words, junk words and typos, so that
free text from an LLM is read for its attributes, not its style. Frames go through a cheap
imitation of a video codec (chroma at half resolution, a little noise) so that what trains
is what the server sees.
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
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common.motion_network import load_network_module

from mils.tasks.base import DATA_DIR
from mils.tasks.motion import (
    DIRECTIONS,
    FRAMES,
    GRAMMAR,
    PARAPHRASE,
    PRESENCES,
    SPEEDS,
    MotionScene,
    Split,
    describe,
    make_motion_scene,
    motion_scenes,
    near_miss,
    render_video,
)

DEFAULT_STEPS = 1100
DEFAULT_BATCH = 64
FILLERS = (
    "we can see",
    "this video contains",
    "here is",
    "look:",
    "a simple animation of",
    "footage showing",
    "the clip has",
    "in this video there is",
    "caption:",
    "ok so",
)
SUFFIXES = (".", "!", " in a simple animation", ", very clear", " :)", " - a flat graphic")
network = load_network_module()
SEEN = network.clip_frames(FRAMES)
"""The frames of a rendered clip the video tower sees."""


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


def _swap(scene: MotionScene, rng: random.Random) -> MotionScene | None:
    """Two objects exchange one attribute: the same words, bound wrongly."""
    if len(scene.objects) < 2:
        return None
    i, j = rng.sample(range(len(scene.objects)), 2)
    a, b = scene.objects[i], scene.objects[j]
    kinds = {"colour": ("colour",), "shape": ("shape",), "size": ("size",)}
    kinds |= {"motion": ("motion", "speed"), "presence": ("presence",)}
    fields = kinds[rng.choice(list(kinds))]
    if all(getattr(a, f) == getattr(b, f) for f in fields):
        return None
    objects = list(scene.objects)
    objects[i] = replace(a, **{f: getattr(b, f) for f in fields})
    objects[j] = replace(b, **{f: getattr(a, f) for f in fields})
    return replace(scene, objects=tuple(objects))


def _drop_or_add(scene: MotionScene, rng: random.Random) -> MotionScene:
    if len(scene.objects) > 1 and (len(scene.objects) == 3 or rng.random() < 0.5):
        objects = list(scene.objects)
        objects.pop(rng.randrange(len(objects)))
        return replace(scene, objects=tuple(objects))
    extra = make_motion_scene(rng).objects[0]
    return replace(scene, objects=(*scene.objects, extra))


def garbled(scene: MotionScene, seed: int, pool: list[str]) -> str:
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


def codec(clips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a lossy video codec does to clips, roughly: chroma at half resolution (yuv420)
    and a little noise. (N, T, H, W, 3) uint8 in and out."""
    x = clips.astype(np.float32)
    y = x @ np.array([0.299, 0.587, 0.114], np.float32)
    chroma = x[..., [0, 2]] - y[..., None]  # R-Y, B-Y
    n, t, h, w, _ = chroma.shape
    pooled = chroma.reshape(n, t, h // 2, 2, w // 2, 2, 2).mean(axis=(3, 5))
    chroma = pooled.repeat(2, axis=2).repeat(2, axis=3)
    r, b = y + chroma[..., 0], y + chroma[..., 1]
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    out = np.stack([r, g, b], axis=-1)
    out += (rng.random(out.shape, dtype=np.float32) - 0.5) * 6.0
    return np.clip(out, 0, 255).astype(np.uint8)


def time_reversed(scene: MotionScene) -> MotionScene:
    """What `scene` played backwards shows: every moving object going the other way, what
    appeared disappearing and what disappeared appearing."""
    swap = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "still"}
    swap |= {"appears": "disappears", "disappears": "appears", "throughout": "throughout"}
    objects = tuple(
        replace(o, motion=swap[o.motion], presence=swap[o.presence]) for o in scene.objects
    )
    return replace(scene, objects=objects)


COUNTED = (*DIRECTIONS, *SPEEDS, *PRESENCES[1:])


def motion_counts(scenes: list[MotionScene]) -> torch.Tensor:
    """Per clip, how many objects go each direction (or stay still), at each speed, appear
    and disappear: what the auxiliary head reads from a clip's embedding."""
    return torch.tensor(
        [
            [sum(v in (o.motion, o.speed, o.presence) for o in scene.objects) for v in COUNTED]
            for scene in scenes
        ],
        dtype=torch.float32,
    )


def batch(
    step: int, size: int, pool: list[str]
) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """Clips and texts for one step: size true, size near misses, size garbled; which clips
    of the first half look different played backwards; each clip's `motion_counts`.

    The second half of the clips is the first half played backwards (described as what it
    then shows): pairs that differ only in the order of their frames, so the order has to
    be read. Most clips go through `codec`.
    """
    half = size // 2
    source = motion_scenes(Split.TRAIN, start=step * half)
    forward = [next(source) for _ in range(half)]
    shown = np.stack([scene.frames(SEEN) for scene in forward])
    clips = np.concatenate([shown, shown[:, ::-1]])
    chosen = forward + [time_reversed(scene) for scene in forward]
    rng = np.random.default_rng(step)
    coded = rng.random(len(clips)) < 0.7
    clips[coded] = codec(clips[coded], rng)
    true, near, junk = [], [], []
    for i, scene in enumerate(chosen):
        seed = step * size + i
        text, changed = near_miss(scene, seed)
        dress_seed = random.Random(seed).getrandbits(32)
        true.append(dress(text, random.Random(dress_seed)))
        near.append(dress(changed, random.Random(dress_seed)))
        junk.append(garbled(scene, seed, pool))
    turns = torch.tensor([time_reversed(scene) != scene for scene in forward])
    return torch.from_numpy(clips), true + near + junk, turns, motion_counts(chosen)


def loss_fn(
    model: Any,
    aux: torch.nn.Module,
    clips: torch.Tensor,
    texts: list[str],
    turns: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """CLIP's loss over the batch, plus the same loss within each pair of a clip and its
    playing backwards (where that looks different), plus how far `aux` reads each clip's
    `motion_counts` off its embedding.

    Among 64 clips the order of frames rarely decides which text is whose, so CLIP's loss
    alone left direction unlearned (a reversed direction won half the time after 800 steps);
    the pairs and the counts give motion losses of their own. `aux` is not saved."""
    n = clips.shape[0]
    videos = model.embed_videos(clips)
    candidates = model.embed_texts(texts)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * videos @ candidates.T  # (n, 3n): each clip against every text
    target = torch.arange(n)
    video_to_text = F.cross_entropy(logits, target)
    text_to_video = F.cross_entropy(logits[:, :n].T, target)
    half = n // 2
    forward, backward = torch.arange(half)[turns], torch.arange(half, n)[turns]
    counted = F.mse_loss(aux(videos), counts)
    if len(forward) == 0:
        return (video_to_text + text_to_video) / 2 + counted
    pairs_v = torch.stack(
        [
            torch.stack([logits[forward, forward], logits[forward, backward]], 1),
            torch.stack([logits[backward, backward], logits[backward, forward]], 1),
        ]
    ).reshape(-1, 2)
    pairs_t = torch.stack(
        [
            torch.stack([logits[forward, forward], logits[backward, forward]], 1),
            torch.stack([logits[backward, backward], logits[forward, backward]], 1),
        ]
    ).reshape(-1, 2)
    zeros = torch.zeros(len(pairs_v), dtype=torch.long)
    in_pairs = F.cross_entropy(pairs_v, zeros) + F.cross_entropy(pairs_t, zeros)
    return (video_to_text + text_to_video + in_pairs) / 2 + counted


def train(steps: int, size: int, seed: int, log_every: int) -> Any:
    torch.manual_seed(seed)
    lines = (DATA_DIR / "image_captions.txt").read_text(encoding="utf-8").splitlines()
    pool = [line.strip() for line in lines if line.strip()]
    model = network.MotionClip()
    aux = torch.nn.Linear(network.EMBED_DIM, len(COUNTED))
    parameters = [*model.parameters(), *aux.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=2e-3, weight_decay=0.01)
    warmup = max(1, min(150, steps // 10))

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    start, running = time.monotonic(), 0.0
    model.train()
    for step in range(steps):
        clips, texts, turns, counts = batch(step, size, pool)
        loss = loss_fn(model, aux, clips, texts, turns, counts)
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


def _reversed(scene: MotionScene) -> MotionScene | None:
    """`scene` with its first moving object going the other way (None: nothing moves)."""
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    for i, obj in enumerate(scene.objects):
        if obj.motion in opposite:
            objects = list(scene.objects)
            objects[i] = replace(obj, motion=opposite[obj.motion])
            return replace(scene, objects=tuple(objects))
    return None


def _embed_texts(model: Any, texts: list[str]) -> torch.Tensor:
    return torch.cat([model.embed_texts(texts[i : i + 256]) for i in range(0, len(texts), 256)])


@torch.inference_mode()
def evaluate(model: Any, count: int) -> dict[str, float]:
    """R@1 both ways among `count` held-out clips (one description each, the clips sent
    through H.264 and decoded as the server does), on the training grammar and on the unseen
    paraphrase grammar; how often the true description beats a one-attribute change of it,
    and how often it beats the same words with a direction reversed."""
    held = [s for s, _ in zip(motion_scenes(Split.HELD_OUT), range(count), strict=False)]
    clips = torch.from_numpy(np.stack([network.decode_clip(render_video(s)) for s in held]))
    videos = torch.cat([model.embed_videos(clips[i : i + 128]) for i in range(0, count, 128)])
    results: dict[str, float] = {"clips": count}
    for name, grammar in (("grammar", GRAMMAR), ("paraphrase", PARAPHRASE)):
        pairs = [near_miss(s, i, grammar) for i, s in enumerate(held)]
        true = _embed_texts(model, [t for t, _ in pairs])
        near = _embed_texts(model, [c for _, c in pairs])
        sims = videos @ true.T
        target = torch.arange(count)
        results[f"{name}_video_to_text_r1"] = (sims.argmax(1) == target).float().mean().item()
        results[f"{name}_text_to_video_r1"] = (sims.argmax(0) == target).float().mean().item()
        wins = (videos * true).sum(1) > (videos * near).sum(1)
        results[f"{name}_true_beats_near_miss"] = wins.float().mean().item()
        moving = [(i, r) for i, s in enumerate(held) if (r := _reversed(s)) is not None]
        flipped = _embed_texts(model, [describe(r, random.Random(i), grammar) for i, r in moving])
        rows = torch.tensor([i for i, _ in moving])
        beats = (videos[rows] * true[rows]).sum(1) > (videos[rows] * flipped).sum(1)
        results[f"{name}_true_beats_reversed"] = beats.float().mean().item()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-clips", type=int, default=500)
    parser.add_argument("--out", type=Path, default=network.WEIGHTS)
    parser.add_argument(
        "--smoke", action="store_true", help="3 steps of 8 clips; no weights written unless --out"
    )
    parser.add_argument("--eval-only", action="store_true", help="measure the weights at --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.eval_only:
        model = network.load(args.out)
    else:
        if args.smoke:
            args.steps, args.batch, args.eval_clips = 3, 8, 16
        started, cpu = time.monotonic(), time.process_time()
        model = train(args.steps, args.batch, args.seed, log_every=1 if args.smoke else 50)
        minutes = (time.monotonic() - started) / 60
        cpu_minutes = (time.process_time() - cpu) / 60  # wall time grows on a shared machine
        print(
            f"trained {args.steps} steps x {args.batch} clips in {minutes:.1f} min "
            f"({cpu_minutes:.1f} min of CPU)",
            flush=True,
        )
        if not args.smoke or "--out" in (argv if argv is not None else sys.argv):
            network.save(model, args.out)
            model = network.load(args.out)  # measure what was written (float16)
            print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", flush=True)
    print(json.dumps(evaluate(model, args.eval_clips), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
