"""The video scorer's training script, in its seconds-long smoke mode, and the committed
weights measured on held-out clips."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "triton_models" / "_motion_clip" / "train.py"


@pytest.fixture(scope="module")
def train() -> ModuleType:
    """train.py as a module (its folder is not a package; it loads network.py by path)."""
    spec = importlib.util.spec_from_file_location("motion_clip_train", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_smoke_training_is_reproducible_and_writes_loadable_weights(
    train: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two smoke runs with the same seed write identical float16 weights that load into the
    network, and the run ends with the measurements as JSON."""
    for name in ("a.pt", "b.pt"):
        assert train.main(["--smoke", "--out", str(tmp_path / name)]) == 0
    report = capsys.readouterr().out
    metrics = json.loads(report[report.rindex("{") :])
    assert metrics["clips"] == 16
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "clips")
    a, b = (torch.load(tmp_path / n, weights_only=True) for n in ("a.pt", "b.pt"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["text.grams.weight"].dtype == torch.float16
    assert isinstance(train.network.load(tmp_path / "a.pt"), train.network.MotionClip)


def test_committed_weights_fit_the_network_code(train: ModuleType) -> None:
    """The weights served by Triton load strictly into the architecture in network.py."""
    network = train.network
    assert network.WEIGHTS.stat().st_size < 20_000_000
    model = network.load()
    clips = torch.zeros(2, network.FRAMES, network.SIDE, network.SIDE, 3, dtype=torch.uint8)
    with torch.inference_mode():
        texts = model.embed_texts(["a red circle moving left", "qwxz unseen wordz, zooming!"])
        videos = model.embed_videos(clips)
    assert texts.shape == videos.shape == (2, network.EMBED_DIM)
    assert torch.isfinite(texts).all() and torch.isfinite(videos).all()


def test_committed_weights_beat_chance_by_far_on_held_out_clips(train: ModuleType) -> None:
    """Among 200 held-out clips sent through H.264 (chance: 0.005), video-to-text and
    text-to-video R@1 and the wins over near misses and reversed directions stay far above
    chance, for the training grammar and for paraphrases never seen in training."""
    torch.set_num_threads(1)
    metrics = train.evaluate(train.network.load(), 200)
    floors = {  # measured: 0.835, 0.79, 0.88, 0.97; 0.38, 0.375, 0.82, 0.86
        "grammar_video_to_text_r1": 0.7,
        "grammar_text_to_video_r1": 0.65,
        "grammar_true_beats_near_miss": 0.8,
        "grammar_true_beats_reversed": 0.9,
        "paraphrase_video_to_text_r1": 0.25,
        "paraphrase_text_to_video_r1": 0.25,
        "paraphrase_true_beats_near_miss": 0.7,
        "paraphrase_true_beats_reversed": 0.75,
    }
    low = {k: (metrics[k], floor) for k, floor in floors.items() if metrics[k] < floor}
    assert not low, low
