"""`mils demo` on the closed world: caption generated scenes whose ground truth is known.

The offline stack's scorers are trained on generated scenes (`mils.tasks.scenes`), moving
scenes (`mils.tasks.motion`) and sounds (`mils.tasks.sounds`), so the demo captions held-out
items of one world (`--media`) and, beside each best caption, prints the ground truth and
which attributes the caption got right: a demo whose output can be checked, not only admired.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mils._worlds import WORLDS, World
from mils.engine.store import write_atomic
from mils.tasks.scenes import (
    GRAMMAR,
    PARAPHRASE,
    SIDE,
    Scene,
    Split,
    Verdict,
    canonical,
    describe,
    scenes,
)

__all__ = [
    "DEMO_POOL_LINES",
    "DEMO_SCENES",
    "REFERENCES_PER_SCENE",
    "print_report",
    "print_scene_report",
    "scene_pool",
    "scene_references",
    "write_demo_items",
    "write_demo_pool",
    "write_demo_scenes",
    "write_scene_references",
]

DEMO_SCENES = 6
DEMO_POOL_LINES = 300
REFERENCES_PER_SCENE = 5


def write_demo_items(world: World, dest_dir: Path, count: int = DEMO_SCENES) -> dict[Path, Any]:
    """Write the first `count` demo items of `world` into `dest_dir`; path -> its item.

    The demo split is held out from training and from the measurements; the same items on
    every run, so a demo's output can be compared with the last one.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, item in zip(range(count), world.items(Split.DEMO, 0), strict=False):
        path = dest_dir / f"{world.noun}-{index + 1}{world.suffix}"
        write_atomic(path, world.encode(item))
        written[path] = item
    return written


def write_demo_scenes(dest_dir: Path, count: int = DEMO_SCENES) -> dict[Path, Scene]:
    """Write the first `count` demo scenes into `dest_dir` as PNG; path -> its scene."""
    return write_demo_items(WORLDS["scenes"], dest_dir, count)


def scene_pool(lines: int = DEMO_POOL_LINES) -> list[str]:
    """An initial pool for scenes: descriptions of single objects of training scenes.

    Each line names one object only, so for a scene of two or three objects no line is the
    answer; the loop has to combine and correct them. (The bundled pool describes
    photographs, which the scene scorer has never seen.) The first `n` lines are the same
    for every `lines` >= `n`.
    """
    rng = random.Random("demo-pool")
    texts: dict[str, None] = {}
    for scene in scenes(Split.TRAIN, start=10_000_000):
        single = Scene((rng.choice(scene.objects),), scene.background, scene.seed)
        texts[describe(single, rng)] = None
        if len(texts) == lines:
            break
    return list(texts)


def write_demo_pool(
    path: Path, lines: int = DEMO_POOL_LINES, world: World = WORLDS["scenes"]
) -> Path:
    """Write `world.pool(lines)` to `path`, one text per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, ("\n".join(world.pool(lines)) + "\n").encode())
    return path


def scene_references(scene: Scene, count: int = REFERENCES_PER_SCENE) -> list[str]:
    """`count` distinct true descriptions of `scene`, as reference captions for `mils eval`.

    The plain ground truth (`canonical`), then phrasings of the training grammar and of the
    paraphrase grammar in turn: several phrasings, as COCO has five captions an image, so a
    caption is not judged against one wording. Seeded by the scene: the same on every call.
    """
    rng = random.Random(f"references:{scene.seed}")
    texts = {canonical(scene): None}
    for attempt in range(100 * count):
        if len(texts) == count:
            break
        texts[describe(scene, rng, (GRAMMAR, PARAPHRASE)[attempt % 2])] = None
    return list(texts)


def write_scene_references(
    path: Path, truth: Mapping[Path, Scene], count: int = REFERENCES_PER_SCENE
) -> Path:
    """Write the scenes' references to `path` as a COCO captions JSON, images by file name.

    `mils eval RUN_DIR --references PATH` scores a run of these scenes against them.
    """
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for image_id, (source, scene) in enumerate(truth.items(), start=1):
        images.append({"id": image_id, "file_name": source.name, "width": SIDE, "height": SIDE})
        annotations += [
            {"id": len(annotations) + i, "image_id": image_id, "caption": text}
            for i, text in enumerate(scene_references(scene, count), start=1)
        ]
    data = {
        "info": {"description": "mils demo scenes: true descriptions (mils.tasks.scenes)"},
        "images": images,
        "annotations": annotations,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())
    return path


def _verdicts(world: World, item: Any, caption: str) -> str:
    check = world.check(item, caption)
    by_verdict = {v: [k for k in world.kinds if check.verdicts[k] is v] for v in Verdict}
    parts = [f"{v.value}: {', '.join(kinds)}" for v, kinds in by_verdict.items() if kinds]
    return ("EXACT; " if check.exact else "") + "; ".join(parts)


def print_report(run_dir: Path, truth: Mapping[Path, Any], world: World) -> None:
    """Per item: the best caption, the ground truth, and which attributes it got right."""
    by_name = {path.name: item for path, item in truth.items()}
    checks = []
    print("\nchecked against the ground truth:")
    with (run_dir / "results.jsonl").open(encoding="utf-8") as lines:
        for row in map(json.loads, lines):
            item = by_name.get(Path(str(row["source"])).name)
            if item is None or row["best_text"] is None:
                continue
            checks.append(world.check(item, row["best_text"]))
            print(f"{row['sample_id']}")
            print(f"  caption: {row['best_text']}")
            print(f"  truth:   {world.canonical(item)}")
            print(f"  {_verdicts(world, item, row['best_text'])}")
    exact = sum(check.exact for check in checks)
    print(f"{exact}/{len(checks)} captions exactly right", end="")
    if checks:
        attributes = sum(check.attributes_right for check in checks) / len(checks)
        print(
            f"; {attributes:.2f} of {world.attributes} stated right "
            "(README, Caption quality: what the loop gains)",
            end="",
        )
    print()


def print_scene_report(run_dir: Path, truth: Mapping[Path, Scene]) -> None:
    """`print_report` for the scenes of the image world."""
    print_report(run_dir, truth, WORLDS["scenes"])
