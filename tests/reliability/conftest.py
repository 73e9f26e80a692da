"""Fixtures of the reliability suite: a dedicated Triton with misbehaving test models, a
fast load-model LLM upstream, and many small distinct images.

The suite drives the real `mils` CLI as a subprocess against real servers on loopback; the
fault proxy (`fault_proxy.py`) sits between the CLI and the LLM upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import MODELS, model_repository

from benchmarks.llm_server import LLMCostModel, LoadLLMServer
from mils.adapters.local_stack import TritonServer


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
