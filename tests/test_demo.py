"""`mils demo`'s closed-world parts: its scenes, its pool and its checked report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mils._demo import (
    print_report,
    print_scene_report,
    scene_references,
    write_demo_items,
    write_demo_pool,
    write_demo_scenes,
    write_scene_references,
)
from mils._references import load_references
from mils._worlds import WORLDS
from mils.tasks.scenes import canonical, check_caption


def test_demo_scenes_are_the_same_pngs_every_time(tmp_path: Path) -> None:
    """Six 64x64 PNGs, byte-identical on a second call, each with its own scene."""
    first = write_demo_scenes(tmp_path / "a")
    second = write_demo_scenes(tmp_path / "b")
    assert len(first) == 6 and len(set(first.values())) == 6
    for (a, scene), b in zip(first.items(), second, strict=True):
        assert a.read_bytes() == b.read_bytes()
        with Image.open(a) as image:
            assert image.size == (64, 64)
        assert a.read_bytes() == scene.png()


def test_demo_pool_lines_each_describe_one_object_and_no_demo_scene(tmp_path: Path) -> None:
    """The pool is 300 distinct one-object descriptions; none is exactly right for a demo
    scene of several objects, so what the demo finds there is the loop's work."""
    lines = write_demo_pool(tmp_path / "pool.txt").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 300
    for scene in write_demo_scenes(tmp_path / "scenes").values():
        assert not any(check_caption(scene, line).exact for line in lines if len(scene.objects) > 1)


def test_report_prints_truth_and_verdicts_per_scene(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each result line is matched to its scene by file name and checked against it; the
    summary gives exact captions and the fraction of object attributes right."""
    truth = write_demo_scenes(tmp_path / "samples", count=2)
    (path_a, scene_a), (path_b, scene_b) = truth.items()
    rows = [
        {"sample_id": path_a.stem, "source": str(path_a), "best_text": canonical(scene_a)},
        {"sample_id": path_b.stem, "source": str(path_b), "best_text": "a dog on a beach"},
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print_scene_report(tmp_path, truth)
    out = capsys.readouterr().out
    assert f"truth:   {canonical(scene_b)}" in out
    assert "EXACT; right: shape, colour, size, position, count, background" in out
    assert "missing: shape, colour, size, position, count, background" in out
    assert "\n1/2 captions exactly right; 0.50 of the objects' attributes" in out


def test_scene_references_are_five_true_phrasings_in_coco_format(tmp_path: Path) -> None:
    """Per scene: the ground truth and four more phrasings, all distinct and exactly right,
    the same on every call; written as COCO captions that match the scenes by file name."""
    truth = write_demo_scenes(tmp_path / "samples", count=3)
    for scene in truth.values():
        texts = scene_references(scene)
        assert texts == scene_references(scene)
        assert len(set(texts)) == 5 and texts[0] == canonical(scene)
        assert all(check_caption(scene, text).exact for text in texts), texts
    path = write_scene_references(tmp_path / "samples" / "references.json", truth)
    data = json.loads(path.read_text())
    assert [image["file_name"] for image in data["images"]] == [p.name for p in truth]
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"]) == 15
    refs = load_references(path)
    for source, scene in truth.items():
        assert refs.match(source.stem, [str(source)]) == scene_references(scene)


def test_the_sound_and_clip_demos_write_their_worlds_items_and_check_captions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mils demo --media audio|video` writes held-out sounds (WAV) and clips (mp4) and
    checks a result against each item's truth with that world's kinds."""
    for name, magic in (("sounds", b"RIFF"), ("motion", b"ftyp")):
        world = WORLDS[name]
        truth = write_demo_items(world, tmp_path / name, count=1)
        ((path, item),) = truth.items()
        assert magic in path.read_bytes()[:12]
        row = {"sample_id": path.stem, "source": str(path), "best_text": world.canonical(item)}
        (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
        print_report(tmp_path, truth, world)
        out = capsys.readouterr().out
        assert f"EXACT; right: {', '.join(world.kinds[:2])}" in out
        assert "1/1 captions exactly right" in out
