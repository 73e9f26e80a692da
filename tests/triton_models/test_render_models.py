"""The real-weights renderers (sd_render, pix2pix_edit) and the style/content loss model
(vgg_style) in a real Triton, on tiny random diffusers pipelines and a random VGG-19."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from tiny_diffusers import (
    TINY_SD_SIDE,
    build_tiny_pix2pix,
    build_tiny_sd,
    write_vgg19_weights,
)

from mils.adapters._triton import TritonConnection
from mils.adapters.local_stack import TritonServer
from mils.engine.errors import ConfigError, InvalidResponse

REPO = Path(__file__).resolve().parents[2]
MODELS = ("sd_render", "pix2pix_edit", "vgg_style")
LONG_PROMPT = "a red cat on a blue mat " * 20  # about 120 CLIP tokens; the window is 77


def encode(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def texts(*items: str) -> np.ndarray:
    return np.array([[t.encode()] for t in items], dtype=np.object_)


def blobs(*items: bytes) -> np.ndarray:
    return np.array([[b] for b in items], dtype=np.object_)


def seeds(*items: int) -> np.ndarray:
    return np.array([[s] for s in items], dtype=np.int64)


def png_size(blob: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(blob))
    assert image.format == "PNG"
    return image.size


@pytest.fixture(scope="module")
def render_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Real Triton serving the three models on tiny random weights: 32 px renders, 2
    steps, 64 px VGG inputs."""
    root = tmp_path_factory.mktemp("render_models")
    env = {
        "MILS_T2I_MODEL": str(build_tiny_sd(root / "sd")),
        "MILS_T2I_STEPS": "2",
        "MILS_T2I_SIZE": str(TINY_SD_SIDE),
        "MILS_EDIT_MODEL": str(build_tiny_pix2pix(root / "pix2pix")),
        "MILS_EDIT_STEPS": "2",
        "MILS_EDIT_SIZE": str(TINY_SD_SIDE),
        "MILS_VGG_WEIGHTS": str(write_vgg19_weights(root / "vgg19.pth")),
        "MILS_VGG_SIZE": "64",
    }
    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=MODELS,
        log_path=root / "triton.log",
        env=env,
    )
    with server:
        yield server


async def infer(
    server: TritonServer, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
) -> list[np.ndarray]:
    """The named outputs of one request, over a gRPC connection opened in the test's loop."""
    connection = TritonConnection(server.grpc_url, protocol="grpc", timeout=60, owner="test")
    await connection.open()
    try:
        result = await connection.infer(model, inputs, outputs)
    finally:
        await connection.aclose()
    arrays = [result[name] for name in outputs]
    assert all(a is not None for a in arrays)
    return arrays  # type: ignore[return-value]


async def render(server: TritonServer, prompts: np.ndarray, seed: np.ndarray) -> list[bytes]:
    (images,) = await infer(server, "sd_render", {"TEXT": prompts, "SEED": seed}, ["IMAGE"])
    return [bytes(b) for b in images.reshape(-1)]


async def test_render_is_a_png_of_the_configured_size_fixed_by_its_seed(
    render_triton: TritonServer,
) -> None:
    """Same prompt and seed give the same PNG bytes; another seed or prompt another image."""
    first = (await render(render_triton, texts("a red cat"), seeds(1)))[0]
    again = (await render(render_triton, texts("a red cat"), seeds(1)))[0]
    other_seed = (await render(render_triton, texts("a red cat"), seeds(2)))[0]
    other_text = (await render(render_triton, texts("a blue dog"), seeds(1)))[0]
    assert png_size(first) == (TINY_SD_SIDE, TINY_SD_SIDE)
    assert first == again
    assert other_seed != first and other_text != first


async def test_render_batches_items_each_with_its_own_seed(render_triton: TritonServer) -> None:
    """A request of four items renders four PNGs in one call: equal (prompt, seed) pairs
    give equal bytes, a negative seed works, different seeds differ."""
    images = await render(
        render_triton, texts("a cat", "a cat", "a cat", "a cat"), seeds(7, 8, 7, -3)
    )
    assert [png_size(b) for b in images] == [(TINY_SD_SIDE, TINY_SD_SIDE)] * 4
    assert images[0] == images[2]
    assert len({images[0], images[1], images[3]}) == 3


async def test_render_refuses_a_prompt_past_the_text_window_alone(
    render_triton: TritonServer,
) -> None:
    """A prompt longer than CLIP's 77 tokens fails its request with the count and limit;
    concurrent requests render."""
    results = await asyncio.gather(
        render(render_triton, texts("a cat"), seeds(1)),
        render(render_triton, texts(LONG_PROMPT), seeds(1)),
        render(render_triton, texts("a dog"), seeds(1)),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["list", "InvalidResponse", "list"]
    assert isinstance(results[1], InvalidResponse)
    assert "sd_render: text is" in str(results[1]) and "at most 77" in str(results[1])


async def edit(server: TritonServer, image: bytes, instruction: str, seed: int) -> bytes:
    inputs = {"IMAGE": blobs(image), "TEXT": texts(instruction), "SEED": seeds(seed)}
    (images,) = await infer(server, "pix2pix_edit", inputs, ["IMAGE"])
    return bytes(images.reshape(-1)[0])


async def test_edit_returns_a_png_fitted_to_the_configured_side(
    render_triton: TritonServer,
) -> None:
    """A 96x64 JPEG comes back as a 32x16 PNG (longer side 32, sides multiples of 8), the
    same for the same seed, another for another seed."""
    photo = encode(Image.fromarray(data.astronaut()).resize((96, 64)), "JPEG")
    first = await edit(render_triton, photo, "make it a painting", 5)
    again = await edit(render_triton, photo, "make it a painting", 5)
    other = await edit(render_triton, photo, "make it a painting", 6)
    assert png_size(first) == (32, 16)
    assert first == again and other != first


async def test_edit_with_undecodable_image_fails_alone(render_triton: TritonServer) -> None:
    """Junk and truncated image bytes fail their requests with the decoder's reason;
    concurrent good edits succeed."""
    good = encode(Image.fromarray(data.chelsea()).resize((32, 32)))
    results = await asyncio.gather(
        edit(render_triton, good, "snow", 1),
        edit(render_triton, b"not an image", "snow", 1),
        edit(render_triton, good[: len(good) // 2], "snow", 1),
        edit(render_triton, good, "rain", 2),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["bytes", *["InvalidResponse"] * 2, "bytes"]
    assert "pix2pix_edit: cannot decode IMAGE (12 bytes)" in str(results[1])
    assert "pix2pix_edit: cannot decode IMAGE" in str(results[2])


async def style_losses(
    server: TritonServer, image: bytes, content: bytes, style: bytes
) -> tuple[float, float]:
    inputs = {"IMAGE": blobs(image), "CONTENT": blobs(content), "STYLE": blobs(style)}
    style_loss, content_loss = await infer(
        server, "vgg_style", inputs, ["STYLE_LOSS", "CONTENT_LOSS"]
    )
    assert style_loss.dtype == content_loss.dtype == np.float32
    return float(style_loss.reshape(-1)[0]), float(content_loss.reshape(-1)[0])


async def test_vgg_losses_vanish_for_the_same_image_and_grow_with_another(
    render_triton: TritonServer,
) -> None:
    """An image against itself scores ~0 on both losses; another content image raises the
    content loss only, another style image the style loss only."""
    astronaut = encode(Image.fromarray(data.astronaut()))
    cat = encode(Image.fromarray(data.chelsea()), "JPEG")
    coffee = encode(Image.fromarray(data.coffee()))
    same = await style_losses(render_triton, astronaut, astronaut, astronaut)
    other_content = await style_losses(render_triton, astronaut, cat, astronaut)
    other_style = await style_losses(render_triton, astronaut, astronaut, coffee)
    assert same == pytest.approx((0.0, 0.0), abs=1e-9)
    assert other_content[1] > 1e-3 and other_content[0] == pytest.approx(0.0, abs=1e-9)
    assert other_style[0] > 1e-7 and other_style[1] == pytest.approx(0.0, abs=1e-9)


async def test_vgg_batches_triples_and_fails_an_undecodable_one_alone(
    render_triton: TritonServer,
) -> None:
    """Concurrent triples score as they do alone; bad CONTENT bytes fail only their request,
    naming the input."""
    astronaut = encode(Image.fromarray(data.astronaut()))
    cat = encode(Image.fromarray(data.chelsea()))
    alone = await style_losses(render_triton, astronaut, cat, cat)
    results = await asyncio.gather(
        style_losses(render_triton, astronaut, cat, cat),
        style_losses(render_triton, astronaut, b"\x89PNG junk", cat),
        style_losses(render_triton, cat, cat, cat),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["tuple", "InvalidResponse", "tuple"]
    assert results[0] == pytest.approx(alone, rel=1e-4)
    assert "vgg_style: cannot decode CONTENT (9 bytes)" in str(results[1])


def test_vgg_without_its_weights_file_fails_to_load_with_the_fix(tmp_path: Path) -> None:
    """A missing MILS_VGG_WEIGHTS file stops start-up; the log says which file and how to
    get torchvision's checkpoint."""
    missing = tmp_path / "vgg19.pth"
    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=("vgg_style",),
        log_path=tmp_path / "triton.log",
        env={"MILS_VGG_WEIGHTS": str(missing)},
    )
    with pytest.raises(ConfigError) as info, server:
        pass
    message = str(info.value)
    assert f"MILS_VGG_WEIGHTS file {missing} does not exist" in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
