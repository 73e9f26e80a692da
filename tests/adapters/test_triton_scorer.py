"""TritonScorer against a real Triton (python backend) serving the toy CLIP pair."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from mils.adapters.local_stack import TritonServer, free_port
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.errors import ConfigError, EndpointUnavailable, InvalidResponse, ModelNotReady

PROTOCOLS = ["grpc", "http"]


def scorer(server: TritonServer, protocol: str = "grpc", **kwargs: str) -> TritonScorer:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    models = {"text_model": "toyclip_text", "target_model": "toyclip_image"} | kwargs
    return TritonScorer(url, protocol=protocol, timeout=30, **models)  # type: ignore[arg-type]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_text_embeddings_have_one_row_per_text_and_are_deterministic(
    triton_server: TritonServer, protocol: str
) -> None:
    """Each text gets a float32 unit row; the same text embeds identically, others differ."""
    async with scorer(triton_server, protocol) as s:
        assert s.name == f"{s.url}/toyclip_text" and s.max_batch_size == 64
        first = await s.embed_texts(["a black cat", "a yellow dog", "a black cat"])
        again = await s.embed_texts(["a black cat"])
    assert first.shape == (3, 256) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.allclose(first[0], first[1])


async def test_grpc_and_http_return_the_same_embeddings(triton_server: TritonServer) -> None:
    """Both protocols reach the same model and decode the same numbers."""
    async with scorer(triton_server, "grpc") as g, scorer(triton_server, "http") as h:
        np.testing.assert_array_equal(await g.embed_texts(["red"]), await h.embed_texts(["red"]))
        np.testing.assert_array_equal(
            await g.embed_target(png((0, 0, 0))), await h.embed_target(png((0, 0, 0)))
        )


async def test_dark_image_scores_higher_with_a_caption_naming_it(
    triton_server: TritonServer,
) -> None:
    """The toy encoder means something: a black picture prefers "black/dark" to "yellow"."""
    async with scorer(triton_server) as s:
        image = await s.embed_target(png((8, 8, 12)))
        captions = await s.embed_texts(["a dark black picture", "a bright yellow picture"])
    assert image.shape == (256,)
    dark, yellow = captions @ image
    assert dark > yellow + 0.3


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_corrupt_image_fails_alone(triton_server: TritonServer, protocol: str) -> None:
    """Corrupt bytes give InvalidResponse naming the problem; a concurrent good image succeeds."""
    async with scorer(triton_server, protocol) as s:
        bad, good = await asyncio.gather(
            s.embed_target(b"definitely not an image"),
            s.embed_target(png((250, 220, 20))),
            return_exceptions=True,
        )
    assert isinstance(bad, InvalidResponse)
    assert "cannot decode IMAGE" in str(bad) and "toyclip_image" in bad.endpoint
    assert isinstance(good, np.ndarray) and good.shape == (256,)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_model_not_loaded_is_model_not_ready(
    triton_server: TritonServer, protocol: str
) -> None:
    """Opening with a model the server did not load says which model and how to fix it."""
    with pytest.raises(ModelNotReady) as info:
        await scorer(triton_server, protocol, text_model="no_such_model").open()
    assert "'no_such_model'" in str(info.value)
    assert "--load-model no_such_model" in str(info.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unreachable_server_is_endpoint_unavailable(protocol: str) -> None:
    """A port with nothing listening is a transient connect fault (the engine retries it)."""
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(EndpointUnavailable) as info:
        await TritonScorer(url, protocol=protocol, timeout=5).open()  # type: ignore[arg-type]
    assert info.value.kind == "connect" and url in str(info.value)


async def test_batch_over_max_batch_size_is_a_config_error(triton_server: TritonServer) -> None:
    """Sending more texts than max_batch_size fails before any request, naming the fix."""
    async with scorer(triton_server) as s:
        with pytest.raises(ConfigError, match="exceeds max_batch_size 64"):
            await s.embed_texts(["x"] * 65)


async def test_concurrent_requests_are_answered_individually(triton_server: TritonServer) -> None:
    """Dynamic batching merges requests; each still gets its own rows back."""
    async with scorer(triton_server) as s:
        texts = [f"word{i} blue" for i in range(40)]
        rows = await asyncio.gather(*(s.embed_texts([t]) for t in texts))
        together = await s.embed_texts(texts)
    np.testing.assert_allclose(np.concatenate(rows), together, rtol=1e-6)
