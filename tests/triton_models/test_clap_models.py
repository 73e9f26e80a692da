"""The real-weights clap_text/clap_audio Triton models, on a tiny random CLAP."""

from __future__ import annotations

import asyncio

import numpy as np
from tiny_clap import TINY_CLAP_DIM

from mils.adapters.local_stack import TritonServer
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.errors import InvalidResponse
from mils.tasks.sounds import Split, encode_samples, render_audio, sounds


def clap_scorer(server: TritonServer, protocol: str = "grpc") -> TritonScorer:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonScorer(
        url,
        text_model="clap_text",
        target_model="clap_audio",
        target_input="AUDIO",
        protocol=protocol,  # type: ignore[arg-type]
        timeout=60,
    )


async def test_text_features_have_projection_dim_and_are_deterministic(
    audio_triton: TritonServer,
) -> None:
    """Tokenised in the model (padding, truncation): any length in, (n, projection_dim) out."""
    long_text = "the beep " * 50  # far past the tiny model's 32 positions: truncated, not failed
    async with clap_scorer(audio_triton) as s:
        first = await s.embed_texts(["the beep", "a dog", long_text])
        again = await s.embed_texts(["the beep"])
    assert first.shape == (3, TINY_CLAP_DIM) and np.isfinite(first).all()
    np.testing.assert_allclose(first[0], again[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[0], first[1])


async def test_audio_features_for_any_container_rate_and_length(
    audio_triton: TritonServer,
) -> None:
    """Decoded, mixed to mono and resampled to the extractor's 48 kHz in the model: a 16 kHz
    WAV, its FLAC, an MP3 and a 5 s clip (past the 1 s window) all embed to (dim,), the same
    file the same way every time."""
    sound = next(sounds(Split.HELD_OUT))
    long = encode_samples(np.tile(sound.render(), 2)[:80_000], "ogg")
    async with clap_scorer(audio_triton, "http") as s:
        wav = await s.embed_target(sound.wav())
        flac = await s.embed_target(render_audio(sound, "flac"))
        mp3 = await s.embed_target(render_audio(sound, "mp3"))
        longer = await s.embed_target(long)
        longer_again = await s.embed_target(long)
    for vector in (wav, flac, mp3, longer):
        assert vector.shape == (TINY_CLAP_DIM,) and np.isfinite(vector).all()
    # the same samples, resampled by numpy (WAV) and by PyAV (FLAC): nearly the same vector
    cosine = wav @ flac / np.linalg.norm(wav) / np.linalg.norm(flac)
    assert cosine > 0.999, cosine
    np.testing.assert_allclose(longer, longer_again, rtol=1e-5, atol=1e-6)


async def test_bad_audio_fails_only_its_own_request(audio_triton: TritonServer) -> None:
    """Truncated and empty audio fail with the decoder's reason; concurrent good audio
    succeeds."""
    good = next(sounds(Split.HELD_OUT)).wav()
    async with clap_scorer(audio_triton) as s:
        results = await asyncio.gather(
            s.embed_target(good),
            s.embed_target(render_audio(next(sounds(Split.HELD_OUT)), "mp3")[:30]),
            s.embed_target(good),
            s.embed_target(b""),
            return_exceptions=True,
        )
    assert [type(r).__name__ for r in results] == [
        "ndarray",
        "InvalidResponse",
        "ndarray",
        "InvalidResponse",
    ]
    assert isinstance(results[1], InvalidResponse) and "clap_audio" in str(results[1])
    assert "cannot decode AUDIO" in str(results[1])
    assert "audio is empty" in str(results[3])
