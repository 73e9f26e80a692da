"""The real-weights clip_text/clip_image Triton models, on a tiny random CLIP."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image
from tiny_clip import TINY_PROJECTION_DIM

from mils.adapters.local_stack import TritonServer
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.errors import InvalidResponse


def clip_scorer(server: TritonServer, protocol: str = "grpc") -> TritonScorer:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonScorer(
        url, text_model="clip_text", target_model="clip_image", protocol=protocol, timeout=60
    )  # type: ignore[arg-type]


def jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


async def test_text_features_have_projection_dim_and_are_deterministic(
    triton_server: TritonServer,
) -> None:
    """Tokenised in the model (padding, truncation): any length in, (n, projection_dim) out."""
    long_text = "the cat " * 50  # far past the tiny model's 16 positions: truncated, not failed
    async with clip_scorer(triton_server) as s:
        first = await s.embed_texts(["the cat", "a dog", long_text])
        again = await s.embed_texts(["the cat"])
    assert first.shape == (3, TINY_PROJECTION_DIM) and np.isfinite(first).all()
    np.testing.assert_allclose(first[0], again[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[0], first[1])


async def test_image_features_for_any_size_and_format(triton_server: TritonServer) -> None:
    """The processor resizes and crops: wide, tall, PNG and JPEG all embed to (dim,)."""
    buffer = io.BytesIO()
    Image.new("RGB", (20, 90), (0, 128, 255)).save(buffer, format="PNG")
    async with clip_scorer(triton_server, "http") as s:
        wide = await s.embed_target(jpeg((120, 40), (200, 10, 10)))
        tall = await s.embed_target(buffer.getvalue())
        wide_again = await s.embed_target(jpeg((120, 40), (200, 10, 10)))
    assert wide.shape == tall.shape == (TINY_PROJECTION_DIM,)
    np.testing.assert_allclose(wide, wide_again, rtol=1e-5, atol=1e-6)
    assert not np.allclose(wide, tall)


async def test_corrupt_image_fails_only_its_own_request(triton_server: TritonServer) -> None:
    """Truncated JPEG bytes fail with the decoder's reason; concurrent good images succeed."""
    good = jpeg((64, 64), (10, 200, 10))
    async with clip_scorer(triton_server) as s:
        results = await asyncio.gather(
            s.embed_target(good),
            s.embed_target(good[: len(good) // 3]),
            s.embed_target(good),
            s.embed_target(b"\x00" * 10),
            return_exceptions=True,
        )
    assert [type(r).__name__ for r in results] == [
        "ndarray",
        "InvalidResponse",
        "ndarray",
        "InvalidResponse",
    ]
    assert isinstance(results[1], InvalidResponse) and "clip_image" in str(results[1])
    assert "cannot decode IMAGE" in str(results[3])
