"""The closed-world video scorer (motion_text/motion_video) in a real Triton, with its
committed weights."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
from video_files import audio_only, long_clip, undecodable_clip

from mils.adapters.local_stack import TritonServer
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.errors import InvalidResponse
from mils.tasks.motion import FORMATS, GRAMMAR, PARAPHRASE, Split, motion_scenes, near_miss
from mils.tasks.motion import render_video as render

EMBED_DIM = 128
HELD_OUT = 100


def motion_scorer(server: TritonServer, protocol: str = "grpc") -> TritonScorer:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonScorer(
        url,
        text_model="motion_text",
        target_model="motion_video",
        target_input="VIDEO",
        protocol=protocol,  # type: ignore[arg-type]
        timeout=60,
    )


async def embed_all(scorer: TritonScorer, texts: list[str]) -> np.ndarray:
    """Texts past the model's max_batch_size, in concurrent chunks."""
    size = scorer.max_batch_size
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    return np.concatenate(await asyncio.gather(*(scorer.embed_texts(c) for c in chunks)))


async def test_any_text_embeds_to_a_unit_vector(video_triton: TritonServer) -> None:
    """Unknown words, chat, emoji, empty and very long texts all embed, the same way every
    time."""
    texts = [
        "a small red circle moving left slowly",
        "Sure! A zorblaxian blob zooms leftwards 🙂",
        "",
        "fast " * 500,
    ]
    async with motion_scorer(video_triton) as s:
        first = await s.embed_texts(texts)
        again = await s.embed_texts(texts[:1])
    assert first.shape == (len(texts), EMBED_DIM) and np.isfinite(first).all()
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(first[0], again[0], rtol=1e-4, atol=1e-5)


async def test_every_container_embeds_the_clip_alike(video_triton: TritonServer) -> None:
    """The same clip as mp4, webm, avi, mkv and gif embeds to nearly the same unit vector."""
    scene = next(motion_scenes(Split.HELD_OUT, start=7))
    async with motion_scorer(video_triton, "http") as s:
        vectors = np.stack([await s.embed_target(render(scene, fmt)) for fmt in FORMATS])
    assert vectors.shape == (len(FORMATS), EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert (vectors @ vectors[FORMATS.index("gif")]).min() > 0.9


async def test_each_bad_video_fails_only_its_own_request(
    video_triton: TritonServer, tmp_path: Path
) -> None:
    """Garbage bytes, a truncated mp4, an audio-only file, a clip with no decodable frame and
    a 90 s clip each fail with their reason while the good clips beside them embed."""
    good = render(next(motion_scenes(Split.HELD_OUT)), "mp4")
    bad = {
        b"not a video at all": "not a video file FFmpeg can open",
        good[: len(good) // 2]: "not a video file FFmpeg can open",
        audio_only(tmp_path / "beep.wav"): "no video stream",
        undecodable_clip(): "no video frame decodes",
        long_clip(90): "is 90.0 s long; the limit is 60 s",
    }
    async with motion_scorer(video_triton) as s:
        results = await asyncio.gather(
            s.embed_target(good),
            *(s.embed_target(data) for data in bad),
            s.embed_target(good),
            return_exceptions=True,
        )
    assert isinstance(results[0], np.ndarray) and isinstance(results[-1], np.ndarray)
    for result, reason in zip(results[1:-1], bad.values(), strict=True):
        assert isinstance(result, InvalidResponse), result
        assert "motion_video" in str(result) and reason in str(result), str(result)


async def test_true_descriptions_rank_first_for_held_out_clips(
    video_triton: TritonServer,
) -> None:
    """Through Triton, with clips sent as mp4, the trained scorer finds each held-out clip's
    own description first among all of them for most clips, and ranks it above the same
    phrasing with one attribute changed, for the training grammar and for paraphrases never
    seen in training."""
    held = list(itertools.islice(motion_scenes(Split.HELD_OUT), HELD_OUT))
    # measured with the committed weights: R@1 0.89 and 0.50, near misses 0.88 and 0.80
    floors = {GRAMMAR: (0.75, 0.8), PARAPHRASE: (0.35, 0.7)}
    async with motion_scorer(video_triton) as s:
        videos = np.stack(await asyncio.gather(*(s.embed_target(render(x)) for x in held)))
        for grammar, (recall_floor, wins_floor) in floors.items():
            pairs = [near_miss(scene, i, grammar) for i, scene in enumerate(held)]
            true = await embed_all(s, [t for t, _ in pairs])
            changed = await embed_all(s, [c for _, c in pairs])
            recall = np.mean((videos @ true.T).argmax(1) == np.arange(HELD_OUT))
            assert recall >= recall_floor, (grammar.__name__, recall)
            wins = np.mean(np.sum(videos * true, 1) > np.sum(videos * changed, 1))
            assert wins >= wins_floor, (grammar.__name__, wins)
