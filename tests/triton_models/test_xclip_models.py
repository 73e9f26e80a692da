"""The real-weights xclip_text/xclip_video Triton models, on a tiny random X-CLIP."""

from __future__ import annotations

import asyncio

import numpy as np
from tiny_xclip import TINY_XCLIP_PROJECTION_DIM
from video_files import long_clip

from mils.adapters.local_stack import TritonServer
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.errors import InvalidResponse
from mils.tasks.motion import Split, motion_scenes, render_video


def xclip_scorer(server: TritonServer, protocol: str = "grpc") -> TritonScorer:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonScorer(
        url,
        text_model="xclip_text",
        target_model="xclip_video",
        target_input="VIDEO",
        protocol=protocol,  # type: ignore[arg-type]
        timeout=60,
    )


async def test_text_features_have_projection_dim_and_are_deterministic(
    video_triton: TritonServer,
) -> None:
    """Tokenised in the model (padding, truncation): any length in, (n, projection_dim) out."""
    long_text = "the cat " * 50  # far past the tiny model's 16 positions: truncated, not failed
    async with xclip_scorer(video_triton) as s:
        first = await s.embed_texts(["the cat", "a dog", long_text])
        again = await s.embed_texts(["the cat"])
    assert first.shape == (3, TINY_XCLIP_PROJECTION_DIM) and np.isfinite(first).all()
    np.testing.assert_allclose(first[0], again[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[0], first[1])


async def test_video_features_for_any_container_and_length(video_triton: TritonServer) -> None:
    """The model's num_frames frames are sampled from a 16-frame mp4, a gif and a 40-frame
    clip alike; the processor resizes 64 px and 16 px frames: each embeds to (dim,), the
    same clip the same way every time."""
    scenes = motion_scenes(Split.HELD_OUT)
    a, b = next(scenes), next(scenes)
    async with xclip_scorer(video_triton, "http") as s:
        mp4 = await s.embed_target(render_video(a, "mp4"))
        gif = await s.embed_target(render_video(b, "gif"))
        small = await s.embed_target(long_clip(40))
        mp4_again = await s.embed_target(render_video(a, "mp4"))
    for vector in (mp4, gif, small):
        assert vector.shape == (TINY_XCLIP_PROJECTION_DIM,) and np.isfinite(vector).all()
    np.testing.assert_allclose(mp4, mp4_again, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mp4, gif)


async def test_bad_video_fails_only_its_own_request(video_triton: TritonServer) -> None:
    """Garbage and an over-long clip fail with their reasons; concurrent good clips embed."""
    good = render_video(next(motion_scenes(Split.HELD_OUT)), "webm")
    async with xclip_scorer(video_triton) as s:
        results = await asyncio.gather(
            s.embed_target(good),
            s.embed_target(b"\x00" * 64),
            s.embed_target(long_clip(75)),
            s.embed_target(good),
            return_exceptions=True,
        )
    assert [type(r).__name__ for r in results] == [
        "ndarray",
        "InvalidResponse",
        "InvalidResponse",
        "ndarray",
    ]
    assert isinstance(results[1], InvalidResponse) and "xclip_video" in str(results[1])
    assert "not a video file FFmpeg can open" in str(results[1])
    assert "is 75.0 s long; the limit is 60 s" in str(results[2])
