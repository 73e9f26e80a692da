"""The sound scorer (sound_text/sound_audio) in a real Triton, with its committed weights."""

from __future__ import annotations

import asyncio
import itertools
import struct

import numpy as np

from mils.adapters.local_stack import TritonServer
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.errors import InvalidResponse
from mils.tasks.sounds import (
    GRAMMAR,
    PARAPHRASE,
    RATE,
    Split,
    encode_samples,
    near_miss,
    render_audio,
    sounds,
)

EMBED_DIM = 128
HELD_OUT = 96


def sound_scorer(server: TritonServer, protocol: str = "grpc") -> TritonScorer:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonScorer(
        url,
        text_model="sound_text",
        target_model="sound_audio",
        target_input="AUDIO",
        protocol=protocol,  # type: ignore[arg-type]
        timeout=60,
    )


async def embed_all(scorer: TritonScorer, texts: list[str]) -> np.ndarray:
    """Texts past the model's max_batch_size, in concurrent chunks."""
    size = scorer.max_batch_size
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    return np.concatenate(await asyncio.gather(*(scorer.embed_texts(c) for c in chunks)))


def hour_long_wav() -> bytes:
    """A WAV whose header states one hour of 16 kHz audio, followed by 1 s of it."""
    frames = 3600 * RATE
    header = b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, 2 * RATE, 2, 16)
    return header + b"data" + struct.pack("<I", 2 * frames) + bytes(2 * RATE)


async def test_any_text_embeds_to_a_unit_vector(audio_triton: TritonServer) -> None:
    """Unknown words, chat, emoji, empty and very long texts all embed, the same way every
    time."""
    texts = [
        "a steady loud low buzz",
        "three quiet high chirps",
        "Sure! Here's my caption: a zorblaxian wobbly hum 🙂",
        "",
        "buzz " * 500,
    ]
    async with sound_scorer(audio_triton) as s:
        first = await s.embed_texts(texts)
        again = await s.embed_texts(texts[:1])
    assert first.shape == (len(texts), EMBED_DIM) and np.isfinite(first).all()
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(first[0], again[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(first[0], first[1])


async def test_every_container_of_a_sound_embeds_alike(audio_triton: TritonServer) -> None:
    """WAV, FLAC, Ogg and MP3 of one sound, and the same sound as 44.1 kHz audio, become unit
    vectors close to one another; the WAV embeds identically every time."""
    sound = next(sounds(Split.HELD_OUT))
    files = [render_audio(sound, fmt) for fmt in ("wav", "flac", "ogg", "mp3")]
    samples = sound.render()
    upsampled = np.interp(
        np.arange(len(samples) * 441 // 160) * 160 / 441, np.arange(len(samples)), samples
    )
    files.append(encode_samples(upsampled.astype(np.float32), "flac", rate=44_100))
    async with sound_scorer(audio_triton, "http") as s:
        vectors = np.stack([await s.embed_target(data) for data in files])
        again = await s.embed_target(files[0])
    assert vectors.shape == (len(files), EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(vectors[0], again, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-3)  # FLAC is lossless
    assert (vectors[2:] @ vectors[0]).min() > 0.9, vectors @ vectors[0]


async def test_bad_audio_fails_only_its_own_request(audio_triton: TritonServer) -> None:
    """Empty bytes, garbage, a truncated file, an image and an hour-long file each fail with
    their reason, while concurrent good sounds succeed."""
    good = next(sounds(Split.HELD_OUT)).wav()
    flac = render_audio(next(sounds(Split.HELD_OUT)), "flac")
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    async with sound_scorer(audio_triton) as s:
        results = await asyncio.gather(
            s.embed_target(good),
            s.embed_target(b""),
            s.embed_target(b"not audio at all" * 20),
            s.embed_target(flac[:40]),
            s.embed_target(png),
            s.embed_target(hour_long_wav()),
            s.embed_target(good),
            return_exceptions=True,
        )
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["ndarray", *["InvalidResponse"] * 5, "ndarray"], results
    messages = [str(r) for r in results[1:6]]
    assert all("sound_audio" in m for m in messages), messages
    assert "audio is empty" in messages[0]
    assert all("cannot decode AUDIO" in m for m in messages[1:4]), messages
    assert "audio is 3600 s long; the limit is 30 s" in messages[4]
    assert all(isinstance(r, InvalidResponse) for r in results[1:6])


async def test_true_descriptions_rank_first_on_held_out_sounds(
    audio_triton: TritonServer,
) -> None:
    """Through Triton, the trained scorer finds most held-out sounds' own description among
    groups of 8, and ranks the true description above the same phrasing with one attribute
    changed for most of them, for the training grammar and for unseen paraphrases."""
    held = list(itertools.islice(sounds(Split.HELD_OUT), HELD_OUT))
    async with sound_scorer(audio_triton) as s:
        audio = np.stack(await asyncio.gather(*(s.embed_target(x.wav()) for x in held)))
        for grammar, floor in ((GRAMMAR, 0.9), (PARAPHRASE, 0.85)):
            pairs = [near_miss(sound, i, grammar) for i, sound in enumerate(held)]
            true = await embed_all(s, [t for t, _ in pairs])
            changed = await embed_all(s, [c for _, c in pairs])
            wins = np.mean(np.sum(audio * true, 1) > np.sum(audio * changed, 1))
            assert wins >= floor, (grammar.__name__, wins)
            among_8 = np.mean(
                [
                    np.mean((audio[g : g + 8] @ true[g : g + 8].T).argmax(1) == np.arange(8))
                    for g in range(0, HELD_OUT, 8)
                ]
            )
            assert among_8 >= floor, (grammar.__name__, among_8)
