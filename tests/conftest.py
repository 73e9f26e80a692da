"""Session fixtures: the real local servers (Triton, llama.cpp), started lazily, once; and,
for the suites that drive the `mils` CLI (reliability, cli), a dedicated Triton with
misbehaving test models, a fast load-model LLM upstream and many small distinct images.

Video and audio suites get a Triton of their own modality's models (the closed-world
scorers with their committed weights, X-CLIP or CLAP on a tiny random model).

Servers start only when a test asks for them, bind free loopback ports, and are torn down
(whole process group) at session end. A server that cannot start fails its tests loudly
with the tail of its log; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Model hubs are unreachable here: make any accidental download fail fast. Set before
# transformers is imported anywhere, and inherited by the servers we start.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli_harness import MODELS, model_repository
from tiny_clap import build_tiny_clap
from tiny_clip import build_tiny_clip
from tiny_xclip import build_tiny_xclip

from benchmarks.llm_server import LLMCostModel, LoadLLMServer
from mils.adapters.local_stack import LlamaServer, TritonServer

REPO = Path(__file__).resolve().parents[1]
TRITON_MODELS = (
    "toyclip_text",
    "toyclip_image",
    "clip_text",
    "clip_image",
    "scene_text",
    "scene_image",
)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised CLIP model folder (from_pretrained-loadable)."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def triton_server(
    tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """Real Triton serving the toyclip pair, the clip pair (on the tiny CLIP) and the scene
    scorer (with its committed weights)."""
    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=TRITON_MODELS,
        log_path=tmp_path_factory.mktemp("triton") / "triton.log",
        env={"MILS_CLIP_MODEL": str(tiny_clip_dir)},
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """Real llama.cpp OpenAI-compatible server with SmolLM2-135M-Instruct."""
    server = LlamaServer(log_path=tmp_path_factory.mktemp("llama") / "llama.log")
    with server:
        yield server


@pytest.fixture(scope="session")
def rel_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Triton serving toyclip and the misbehaving test models (not the session server)."""
    root = tmp_path_factory.mktemp("rel_triton")
    server = TritonServer(
        model_repository=model_repository(root / "models"),
        models=MODELS,
        log_path=root / "triton.log",
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def load_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadLLMServer]:
    """The fast load-model OpenAI-compatible server (numbered synthetic replies, in ms)."""
    cost = LLMCostModel(capacity=64, prefill_ms=5, decode_tokens_per_s=50_000, seed=0)
    server = LoadLLMServer(cost=cost, log_path=tmp_path_factory.mktemp("llm") / "llm.log")
    with server:
        yield server


@pytest.fixture(scope="session")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """120 small, distinct PNG images (one colour pattern each)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("many_images")
    paths = []
    for i in range(120):
        colour = ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)
        image = Image.new("RGB", (24, 16 + i % 9), colour)
        image.putpixel((i % 24, 0), (255 - colour[0], 0, 0))
        path = folder / f"img{i:03d}.png"
        image.save(path)
        paths.append(path)
    return paths


VIDEO_MODELS = ("motion_text", "motion_video", "xclip_text", "xclip_video")
AUDIO_MODELS = ("sound_text", "sound_audio", "clap_text", "clap_audio")


@pytest.fixture(scope="session")
def tiny_xclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised X-CLIP model folder (from_pretrained-loadable)."""
    return build_tiny_xclip(tmp_path_factory.mktemp("tiny_xclip"))


@pytest.fixture(scope="session")
def video_triton(
    tiny_xclip_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """Real Triton serving the video models of VIDEO_MODELS."""
    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=VIDEO_MODELS,
        log_path=tmp_path_factory.mktemp("video_triton") / "triton.log",
        env={"MILS_XCLIP_MODEL": str(tiny_xclip_dir)},
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised CLAP model folder (from_pretrained-loadable)."""
    return build_tiny_clap(tmp_path_factory.mktemp("tiny_clap"))


@pytest.fixture(scope="session")
def audio_triton(
    tiny_clap_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """Real Triton serving the audio models of AUDIO_MODELS."""
    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=AUDIO_MODELS,
        log_path=tmp_path_factory.mktemp("audio_triton") / "triton.log",
        env={"MILS_CLAP_MODEL": str(tiny_clap_dir)},
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def local_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Real Triton serving what the local stack serves (`mils._local.LOCAL_MODELS`, with
    their committed weights): every closed-world scorer (scene_*, motion_*, sound_*) and
    renderer (scene_render, scene_edit, scene_style). Tests that count its inferences
    compare counts taken before and after their own run."""
    from mils._local import LOCAL_MODELS

    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=LOCAL_MODELS,
        log_path=tmp_path_factory.mktemp("local_triton") / "triton.log",
    )
    with server:
        yield server
