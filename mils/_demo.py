"""`mils demo` on the closed world: caption generated scenes whose ground truth is known.

The offline stack's scorer is trained on generated scenes (`mils.tasks.scenes`), so the demo
captions held-out scenes of that world and, beside each best caption, prints the ground truth
and which attributes the caption got right: a demo whose output can be checked, not only
admired.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mils.tasks.scenes import (
    KINDS,
    Scene,
    Split,
    Verdict,
    canonical,
    check_caption,
    describe,
    scenes,
)

__all__ = [
    "DEMO_POOL_LINES",
    "DEMO_SCENES",
    "print_scene_report",
    "write_demo_pool",
    "write_demo_scenes",
]

DEMO_SCENES = 6
DEMO_POOL_LINES = 300


def _write(path: Path, data: bytes) -> None:
    """Write then rename, so a concurrent reader never sees half a file."""
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)


def write_demo_scenes(dest_dir: Path, count: int = DEMO_SCENES) -> dict[Path, Scene]:
    """Write the first `count` demo scenes into `dest_dir` as PNG; path -> its scene.

    The demo split is held out from training and from the measurements; the same scenes on
    every run, so a demo's output can be compared with the last one.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, scene in zip(range(count), scenes(Split.DEMO), strict=False):
        path = dest_dir / f"scene-{index + 1}.png"
        _write(path, scene.png())
        written[path] = scene
    return written


def write_demo_pool(path: Path, lines: int = DEMO_POOL_LINES) -> Path:
    """An initial pool for scenes: descriptions of single objects of training scenes.

    Each line names one object only, so for a scene of two or three objects no line is the
    answer; the loop has to combine and correct them. (The bundled pool describes
    photographs, which the scene scorer has never seen.)
    """
    rng = random.Random("demo-pool")
    texts = []
    for scene in scenes(Split.TRAIN, start=10_000_000):
        single = Scene((rng.choice(scene.objects),), scene.background, scene.seed)
        text = describe(single, rng)
        if text not in texts:
            texts.append(text)
        if len(texts) == lines:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, ("\n".join(texts) + "\n").encode())
    return path


def _verdicts(scene: Scene, caption: str) -> str:
    check = check_caption(scene, caption)
    by_verdict = {v: [k for k in KINDS if check.verdicts[k] is v] for v in Verdict}
    parts = [f"{v.value}: {', '.join(kinds)}" for v, kinds in by_verdict.items() if kinds]
    return ("EXACT; " if check.exact else "") + "; ".join(parts)


def print_scene_report(run_dir: Path, truth: dict[Path, Scene]) -> None:
    """Per scene: the best caption, the ground truth, and which attributes the caption got right."""
    by_name = {path.name: scene for path, scene in truth.items()}
    exact = total = 0
    print("\nchecked against the ground truth:")
    with (run_dir / "results.jsonl").open(encoding="utf-8") as lines:
        for row in map(json.loads, lines):
            scene = by_name.get(Path(str(row["source"])).name)
            if scene is None or row["best_text"] is None:
                continue
            total += 1
            exact += check_caption(scene, row["best_text"]).exact
            print(f"{row['sample_id']}")
            print(f"  caption: {row['best_text']}")
            print(f"  truth:   {canonical(scene)}")
            print(f"  {_verdicts(scene, row['best_text'])}")
    print(f"{exact}/{total} captions exactly right")
