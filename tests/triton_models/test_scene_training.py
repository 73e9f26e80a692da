"""The scene scorer's training script, in its seconds-long smoke mode, and the committed weights."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "triton_models" / "_scene_clip" / "train.py"


@pytest.fixture(scope="module")
def train() -> ModuleType:
    """train.py as a module (its folder is not a package; it imports network.py beside it)."""
    spec = importlib.util.spec_from_file_location("scene_clip_train", TRAIN)
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
        assert train.main(["--smoke", "--threads", "1", "--out", str(tmp_path / name)]) == 0
    report = capsys.readouterr().out
    metrics = json.loads(report[report.rindex("{") :])
    assert metrics["scenes"] == 16
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "scenes")
    a, b = (torch.load(tmp_path / n, weights_only=True) for n in ("a.pt", "b.pt"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["text.grams.weight"].dtype == torch.float16
    assert isinstance(train.network.load(tmp_path / "a.pt"), train.network.SceneClip)


def test_committed_weights_fit_the_network_code(train: ModuleType) -> None:
    """The weights served by Triton load strictly into the architecture in network.py."""
    network = train.network
    assert network.WEIGHTS.stat().st_size < 20_000_000
    model = network.load()
    pixels = torch.zeros(2, network.SIDE, network.SIDE, 3, dtype=torch.uint8)
    with torch.inference_mode():
        texts = model.embed_texts(["a red circle", "qwxz unseen wordz, top-left!"])
        images = model.embed_images(pixels)
    assert texts.shape == images.shape == (2, network.EMBED_DIM)
    assert torch.isfinite(texts).all() and torch.isfinite(images).all()
