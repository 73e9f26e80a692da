"""The closed world's renderer, editor and style/content losses (scene_render, scene_edit,
scene_style) in a real Triton, through tritonclient."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
from collections.abc import AsyncIterator

import numpy as np
import tritonclient.grpc.aio as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from mils.adapters.local_stack import TritonServer
from mils.tasks.scenes import (
    Split,
    canonical,
    check_caption,
    edit_image,
    render_text,
    scene_of_image,
    scenes,
)

MODELS = ("scene_render", "scene_edit", "scene_style")
HELD = list(itertools.islice(scenes(Split.HELD_OUT), 8))


@contextlib.asynccontextmanager
async def connect(server: TritonServer) -> AsyncIterator[grpcclient.InferenceServerClient]:
    """A gRPC client on the test's own event loop."""
    async with grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield client


def column(values: list[object]) -> np.ndarray:
    if isinstance(values[0], int):
        return np.array(values, dtype=np.int64).reshape(-1, 1)
    array = np.empty((len(values), 1), dtype=object)
    array[:, 0] = [v.encode() if isinstance(v, str) else v for v in values]
    return array


async def infer(
    client: grpcclient.InferenceServerClient, model: str, **inputs: list[object]
) -> dict[str, np.ndarray]:
    tensors = []
    for name, values in inputs.items():
        array = column(values)
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    outputs = {"scene_style": ("STYLE_LOSS", "CONTENT_LOSS")}.get(model, ("IMAGE",))
    result = await client.infer(model, tensors)
    return {name: result.as_numpy(name) for name in outputs}


async def test_scene_render_draws_what_render_text_draws(local_triton: TritonServer) -> None:
    """A batch of canonical texts: the same PNG bytes the engine-side function makes, each
    the scene its text describes."""
    async with connect(local_triton) as client:
        texts = [canonical(s) for s in HELD]
        seeds = list(range(len(texts)))
        images = (await infer(client, "scene_render", TEXT=texts, SEED=seeds))["IMAGE"]
        assert images.shape == (len(texts), 1)
        for text, seed, image in zip(texts, seeds, images[:, 0], strict=True):
            assert image == render_text(text, seed)
            assert check_caption(scene_of_image(image), text).exact


async def test_scene_edit_applies_the_instruction(local_triton: TritonServer) -> None:
    """The served editor gives the bytes `edit_image` gives, for several edits at once."""
    async with connect(local_triton) as client:
        start = render_text("a small red circle in the top left and a large blue star", 3)
        instructions = ["make the red circle green", "remove the star", "add stripes", "hello"]
        n = len(instructions)
        out = await infer(client, "scene_edit", IMAGE=[start] * n, TEXT=instructions, SEED=[1] * n)
        for instruction, image in zip(instructions, out["IMAGE"][:, 0], strict=True):
            assert image == edit_image(start, instruction, 1)
        assert out["IMAGE"][3, 0] == start
        assert scene_of_image(out["IMAGE"][0, 0]).objects[0].colour == "green"


async def test_a_bad_request_fails_alone(local_triton: TritonServer) -> None:
    """Concurrent requests (the server batches those to one model into one execute): one
    with an overlong text, one with an image that is not a scene, one with bytes that are no
    image; each fails with its reason, and the good requests beside them succeed."""
    async with connect(local_triton) as client:
        scene_png = HELD[0].png()
        plain = io.BytesIO()
        HELD[0].render().save(plain, format="PNG")
        calls = [
            infer(client, "scene_render", TEXT=["a red circle"], SEED=[0]),
            infer(client, "scene_render", TEXT=["a red circle " * 40], SEED=[0]),
            infer(client, "scene_edit", IMAGE=[scene_png], TEXT=["blur the image"], SEED=[0]),
            infer(client, "scene_edit", IMAGE=[plain.getvalue()], TEXT=["blur it"], SEED=[0]),
            infer(client, "scene_style", IMAGE=[scene_png], CONTENT=[scene_png], STYLE=[scene_png]),
            infer(client, "scene_style", IMAGE=[scene_png], CONTENT=[b"junk"], STYLE=[scene_png]),
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[0]["IMAGE"][0, 0] == render_text("a red circle", 0)
        assert results[2]["IMAGE"][0, 0] == edit_image(scene_png, "blur the image", 0)
        assert results[4]["STYLE_LOSS"].shape == (1, 1)
        for index, message in [
            (1, "scene_render: text is 520 characters; this renderer takes at most 300"),
            (3, "scene_edit: image"),
            (5, "scene_style: CONTENT: cannot decode IMAGE"),
        ]:
            error = results[index]
            assert isinstance(error, InferenceServerException), error
            assert message in error.message(), error.message()
        assert "not a closed-world scene image" in results[3].message()


def textured(data: bytes, instruction: str) -> bytes:
    return edit_image(data, instruction, 0)


async def test_style_and_content_losses(local_triton: TritonServer) -> None:
    """An image against itself: both losses ~0. Against a restyled copy (stripes, noise) the
    style loss grows, and against another scene the content loss grows, staying in [0, 1]."""
    async with connect(local_triton) as client:
        plain = [s.png() for s in HELD]
        striped = [textured(p, "add stripes") for p in plain]
        noisy = [textured(p, "add noise") for p in plain]
        other = plain[1:] + plain[:1]
        n = len(plain)
        same = await infer(client, "scene_style", IMAGE=plain, CONTENT=plain, STYLE=plain)
        styled = await infer(
            client, "scene_style", IMAGE=plain * 2, CONTENT=plain * 2, STYLE=striped + noisy
        )
        moved = await infer(client, "scene_style", IMAGE=plain, CONTENT=other, STYLE=plain)
        np.testing.assert_allclose(same["STYLE_LOSS"], 0.0, atol=1e-5)
        np.testing.assert_allclose(same["CONTENT_LOSS"], 0.0, atol=1e-5)
        assert (styled["STYLE_LOSS"] > 1e-3).all()
        assert float(np.median(styled["STYLE_LOSS"])) > 0.02
        np.testing.assert_allclose(styled["CONTENT_LOSS"], 0.0, atol=1e-5)
        assert (moved["CONTENT_LOSS"] > 0.1).all()
        np.testing.assert_allclose(moved["STYLE_LOSS"], 0.0, atol=1e-5)
        for out in (same, styled, moved):
            for loss in out.values():
                assert loss.dtype == np.float32 and ((loss >= 0) & (loss <= 1)).all()
        # Content of a restyled copy stays nearer than another scene's (same objects, same places).
        restyled = await infer(client, "scene_style", IMAGE=plain, CONTENT=striped, STYLE=plain)
        assert float(np.median(restyled["CONTENT_LOSS"])) < float(np.median(moved["CONTENT_LOSS"]))
        assert len(same["STYLE_LOSS"]) == n


async def test_images_of_other_sizes_are_scored(local_triton: TritonServer) -> None:
    """The style model takes any image Pillow reads (resized like scene_image's input)."""
    async with connect(local_triton) as client:
        buffer = io.BytesIO()
        Image.new("RGB", (120, 40), (200, 10, 10)).save(buffer, format="JPEG")
        out = await infer(
            client,
            "scene_style",
            IMAGE=[buffer.getvalue()],
            CONTENT=[HELD[0].png()],
            STYLE=[HELD[1].png()],
        )
        assert 0.0 < float(out["STYLE_LOSS"][0, 0]) <= 1.0
        assert 0.0 < float(out["CONTENT_LOSS"][0, 0]) <= 1.0
