"""The sound scorer's training script, in its seconds-long smoke mode, and the committed weights."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "triton_models" / "_sound_clap" / "train.py"


@pytest.fixture(scope="module")
def train() -> ModuleType:
    """train.py as a module (its folder is not a package; it imports network.py beside it,
    under the name `network`, which the scene trainer also uses: swap it in and out)."""
    saved = sys.modules.pop("network", None)
    spec = importlib.util.spec_from_file_location("sound_clap_train", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("network", None)
        if saved is not None:
            sys.modules["network"] = saved
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
    assert metrics["sounds"] == 16
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "sounds")
    a, b = (torch.load(tmp_path / n, weights_only=True) for n in ("a.pt", "b.pt"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["text.grams.weight"].dtype == torch.float16
    assert isinstance(train.network.load(tmp_path / "a.pt"), train.network.SoundClap)


def test_committed_weights_fit_the_network_code(train: ModuleType) -> None:
    """The weights served by Triton load strictly into the architecture in network.py."""
    network = train.network
    assert network.WEIGHTS.stat().st_size < 10_000_000
    model = network.load()
    audio = torch.zeros(2, network.SAMPLES)
    with torch.inference_mode():
        texts = model.embed_texts(["a steady loud low buzz", "qwxz unseen wordz, beeping!"])
        clips = model.embed_audio(audio)
    assert texts.shape == clips.shape == (2, network.EMBED_DIM)
    assert torch.isfinite(texts).all() and torch.isfinite(clips).all()


def test_committed_weights_retrieve_held_out_sounds_far_above_chance(train: ModuleType) -> None:
    """On 128 held-out sounds, top-1 among 8 (chance 0.125) is far above chance both ways,
    for the training grammar and for paraphrases never seen in training."""
    torch.set_num_threads(1)
    metrics = train.evaluate(train.network.load(), 128)
    for grammar, floor in (("grammar", 0.9), ("paraphrase", 0.85)):
        for direction in ("audio_to_text", "text_to_audio"):
            value = metrics[f"{grammar}_{direction}_r1_among_8"]
            assert value > floor, (grammar, direction, metrics)
