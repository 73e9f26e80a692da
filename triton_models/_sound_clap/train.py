"""Train the sound scorer (network.py) on generated sounds, then measure it.

    python triton_models/_sound_clap/train.py            # the committed weights.pt
    python triton_models/_sound_clap/train.py --smoke    # a few steps, seconds (CI)
    python triton_models/_sound_clap/train.py --eval-only

Reproducible: fixed seed, --threads torch threads (1 by default), data from the deterministic
sound generator (`mils.tasks.sounds`, training split; evaluation uses the held-out split).

Rendering a sound costs about as much as a training step spends on it, so the audio comes
from a bank of --bank training sounds rendered (and turned into log-mel spectrograms) once;
each step draws a batch from it and phrases new descriptions, so a sound is heard a few
times but rarely described the same way twice.

The loss is CLIP's symmetric InfoNCE over a batch, where each sound's candidate texts are
every sound's true description plus, per sound, a near miss (the same phrasing with one
attribute changed) and a garbled or off-world text (words shuffled, attributes swapped
between the two sources, a source dropped or added, a sentence cut short, a generic photo
caption). True descriptions are dressed up with chatty words, junk words and typos, so that
free text from an LLM is read for its attributes, not for its style.
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
from mils.tasks.sounds import (
    GRAMMAR,
    PARAPHRASE,
    PITCHES,
    Sound,
    Split,
    describe,
    make_sound,
    near_miss,
    sounds,
)

HERE = Path(__file__).resolve().parent
DEFAULT_STEPS = 1800
DEFAULT_BATCH = 64
DEFAULT_BANK = 16_000
GROUP = 8
"""Evaluation also ranks within groups of GROUP sounds (top-1 among 8)."""


FILLERS = (
    "i hear",
    "this recording has",
    "listen:",
    "the clip contains",
    "audio of",
    "caption:",
    "ok so",
    "in this clip there is",
)
SUFFIXES = (".", "!", " in a short clip", ", very clear", " :)", " - a synthetic sound")


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
    """The same description as free text might phrase it: fillers, junk words, typos, case
    (the scene trainer's augmentation, with fillers about listening)."""
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


def _swap(sound: Sound, rng: random.Random) -> Sound | None:
    """The two sources exchange one attribute: the same words, bound wrongly."""
    if len(sound.sources) < 2:
        return None
    a, b = sound.sources
    kind = rng.choice(("timbre", "loudness", "beeps"))
    if getattr(a, kind) == getattr(b, kind):
        return None
    return replace(
        sound,
        sources=(replace(a, **{kind: getattr(b, kind)}), replace(b, **{kind: getattr(a, kind)})),
    )


def _drop_or_add(sound: Sound, rng: random.Random) -> Sound:
    if len(sound.sources) == 2:
        return replace(sound, sources=(sound.sources[rng.randrange(2)],))
    free = [p for p in PITCHES if p != sound.sources[0].pitch]
    extra = make_sound(rng).sources[0]
    return replace(sound, sources=(*sound.sources, replace(extra, pitch=rng.choice(free))))


def garbled(sound: Sound, seed: int, pool: list[str]) -> str:
    """A text that must score below the true description of `sound`."""
    rng = random.Random(seed ^ 0x5EED)
    true = describe(sound, random.Random(seed))
    roll = rng.random()
    if roll < 0.2:
        tokens = true.split()
        rng.shuffle(tokens)
        return " ".join(tokens)
    if roll < 0.45:
        other = _swap(sound, rng) or _drop_or_add(sound, rng)
        return describe(other, random.Random(seed))
    if roll < 0.65:
        return describe(_drop_or_add(sound, rng), random.Random(seed))
    if roll < 0.75:
        tokens = true.split()
        return " ".join(tokens[: rng.randint(1, max(1, len(tokens) // 2))])
    if roll < 0.9:
        return rng.choice(pool)
    return " ".join(_junk(rng) for _ in range(rng.randint(1, 12)))


@torch.inference_mode()
def mels(items: list[Sound], mel: network.LogMel) -> torch.Tensor:
    """Log-mel spectrograms of `items` (float16, to keep the bank small)."""
    out = []
    for i in range(0, len(items), 256):
        audio = torch.from_numpy(np.stack([network.fit(s.render()) for s in items[i : i + 256]]))
        out.append(mel(audio).half())
    return torch.cat(out)


def texts_for(step: int, chosen: list[Sound], pool: list[str]) -> list[str]:
    """True, near-miss and garbled texts for one step: 3 * len(chosen)."""
    true, near, junk = [], [], []
    for i, sound in enumerate(chosen):
        seed = step * len(chosen) + i
        text, changed = near_miss(sound, seed)
        dress_seed = random.Random(seed).getrandbits(32)
        true.append(dress(text, random.Random(dress_seed)))
        near.append(dress(changed, random.Random(dress_seed)))
        junk.append(garbled(sound, seed, pool))
    return true + near + junk


def loss_fn(model: network.SoundClap, mel: torch.Tensor, texts: list[str]) -> torch.Tensor:
    n = mel.shape[0]
    audio = F.normalize(model.audio.embed_mel(mel.float()), dim=-1)
    candidates = model.embed_texts(texts)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * audio @ candidates.T  # (n, 3n): each sound against every text
    target = torch.arange(n)
    audio_to_text = F.cross_entropy(logits, target)
    text_to_audio = F.cross_entropy(logits[:, :n].T, target)
    return (audio_to_text + text_to_audio) / 2


def train(steps: int, size: int, bank_size: int, seed: int, log_every: int) -> network.SoundClap:
    torch.manual_seed(seed)
    lines = (DATA_DIR / "image_captions.txt").read_text(encoding="utf-8").splitlines()
    pool = [line.strip() for line in lines if line.strip()]
    model = network.SoundClap()
    started = time.monotonic()
    bank = [s for s, _ in zip(sounds(Split.TRAIN), range(bank_size), strict=False)]
    bank_mels = mels(bank, model.audio.mel)
    print(f"rendered {bank_size} sounds in {time.monotonic() - started:.0f}s", flush=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    warmup = max(1, min(100, steps // 10))

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    draw = random.Random(seed)
    start, running = time.monotonic(), 0.0
    model.train()
    for step in range(steps):
        picked = draw.sample(range(bank_size), size)
        texts = texts_for(step, [bank[i] for i in picked], pool)
        loss = loss_fn(model, bank_mels[picked], texts)
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


def _top1(sims: torch.Tensor) -> tuple[float, float]:
    target = torch.arange(sims.shape[0])
    return (
        (sims.argmax(1) == target).float().mean().item(),
        (sims.argmax(0) == target).float().mean().item(),
    )


def _top1_alike(sims: torch.Tensor, alike: torch.Tensor) -> tuple[float, float]:
    """Top-1 where finding a sound with the very same sources counts as a hit (held-out
    sounds repeat attribute sets: about a third of 512 share theirs with another)."""
    rows = torch.arange(sims.shape[0])
    return (
        alike[rows, sims.argmax(1)].float().mean().item(),
        alike[sims.argmax(0), rows].float().mean().item(),
    )


@torch.inference_mode()
def evaluate(model: network.SoundClap, count: int) -> dict[str, float]:
    """Top-1 both ways among all `count` held-out sounds (also counting a sound with the same
    sources as a hit) and within groups of GROUP (one description each), on the training
    grammar and on the unseen paraphrase grammar, and how often the true description beats
    a one-attribute change of it. Audio goes through the
    served path: WAV bytes, decoded, fitted to the window."""
    sys.path.insert(0, str(HERE.parent))
    from _common.audio import decode_audio

    held = [s for s, _ in zip(sounds(Split.HELD_OUT), range(count), strict=False)]
    audio = torch.from_numpy(
        np.stack([network.fit(decode_audio(s.wav(), network.RATE)) for s in held])
    )
    embedded = torch.cat([model.embed_audio(audio[i : i + 256]) for i in range(0, count, 256)])
    keys = [frozenset(s.sources) for s in held]
    alike = torch.tensor([[a == b for b in keys] for a in keys])
    results: dict[str, float] = {"sounds": count}
    groups = count // GROUP
    for name, grammar in (("grammar", GRAMMAR), ("paraphrase", PARAPHRASE)):
        pairs = [near_miss(s, i, grammar) for i, s in enumerate(held)]
        true = torch.cat(
            [model.embed_texts([t for t, _ in pairs[i : i + 256]]) for i in range(0, count, 256)]
        )
        near = torch.cat(
            [model.embed_texts([c for _, c in pairs[i : i + 256]]) for i in range(0, count, 256)]
        )
        a2t, t2a = _top1(embedded @ true.T)
        results[f"{name}_audio_to_text_r1"] = a2t
        results[f"{name}_text_to_audio_r1"] = t2a
        a2t, t2a = _top1_alike(embedded @ true.T, alike)
        results[f"{name}_audio_to_text_r1_same_sources"] = a2t
        results[f"{name}_text_to_audio_r1_same_sources"] = t2a
        within = [
            _top1(embedded[g * GROUP : (g + 1) * GROUP] @ true[g * GROUP : (g + 1) * GROUP].T)
            for g in range(groups)
        ]
        results[f"{name}_audio_to_text_r1_among_{GROUP}"] = float(np.mean([w[0] for w in within]))
        results[f"{name}_text_to_audio_r1_among_{GROUP}"] = float(np.mean([w[1] for w in within]))
        wins = (embedded * true).sum(1) > (embedded * near).sum(1)
        results[f"{name}_true_beats_near_miss"] = wins.float().mean().item()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--bank", type=int, default=DEFAULT_BANK)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-sounds", type=int, default=512)
    parser.add_argument("--out", type=Path, default=network.WEIGHTS)
    parser.add_argument(
        "--smoke", action="store_true", help="3 steps of 8 sounds; no weights written unless --out"
    )
    parser.add_argument("--eval-only", action="store_true", help="measure the weights at --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.eval_only:
        model = network.load(args.out)
    else:
        if args.smoke:
            args.steps, args.batch, args.bank, args.eval_sounds = 3, 8, 32, 16
        started = time.monotonic()
        model = train(
            args.steps, args.batch, args.bank, args.seed, log_every=1 if args.smoke else 50
        )
        minutes = (time.monotonic() - started) / 60
        print(f"trained {args.steps} steps x {args.batch} sounds in {minutes:.1f} min", flush=True)
        if not args.smoke or "--out" in (argv if argv is not None else sys.argv):
            network.save(model, args.out)
            model = network.load(args.out)  # measure what was written (float16)
            print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", flush=True)
    print(json.dumps(evaluate(model, args.eval_sounds), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
