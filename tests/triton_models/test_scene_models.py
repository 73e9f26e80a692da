"""The scene scorer (scene_text/scene_image) in a real Triton, with its committed weights."""

from __future__ import annotations

import asyncio
import io
import itertools

import numpy as np
from PIL import Image

from mils.adapters.local_stack import TritonServer
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.errors import InvalidResponse
from mils.tasks.scenes import GRAMMAR, PARAPHRASE, Split, near_miss, scenes

EMBED_DIM = 128
HELD_OUT = 200


def scene_scorer(server: TritonServer, protocol: str = "grpc") -> TritonScorer:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonScorer(
        url, text_model="scene_text", target_model="scene_image", protocol=protocol, timeout=60
    )  # type: ignore[arg-type]


async def embed_all(scorer: TritonScorer, texts: list[str]) -> np.ndarray:
    """Texts past the model's max_batch_size, in concurrent chunks."""
    size = scorer.max_batch_size
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    return np.concatenate(await asyncio.gather(*(scorer.embed_texts(c) for c in chunks)))


def jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


async def test_any_text_embeds_to_a_unit_vector(triton_server: TritonServer) -> None:
    """Unknown words, odd order, chat, emoji, empty and very long texts all embed, the same
    way every time."""
    texts = [
        "a small red circle in the top left",
        "top left: circle, red, smol!!",
        "Sure! Here's my caption: a zorblaxian crimsonish blob 🙂",
        "",
        "blue " * 500,
    ]
    async with scene_scorer(triton_server) as s:
        first = await s.embed_texts(texts)
        again = await s.embed_texts(texts[:1])
    assert first.shape == (len(texts), EMBED_DIM) and np.isfinite(first).all()
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(first[0], again[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(first[0], first[1])


async def test_images_of_any_size_and_format_embed(triton_server: TritonServer) -> None:
    """A scene PNG, a wide JPEG and a tall PNG all become (dim,) unit vectors."""
    buffer = io.BytesIO()
    Image.new("RGB", (20, 90), (0, 128, 255)).save(buffer, format="PNG")
    scene = next(scenes(Split.HELD_OUT))
    async with scene_scorer(triton_server, "http") as s:
        vectors = [
            await s.embed_target(data)
            for data in (scene.png(), jpeg((120, 40), (200, 10, 10)), buffer.getvalue())
        ]
        again = await s.embed_target(scene.png())
    for vector in vectors:
        assert vector.shape == (EMBED_DIM,)
        np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-4)
    np.testing.assert_allclose(vectors[0], again, rtol=1e-4, atol=1e-5)


async def test_corrupt_image_fails_only_its_own_request(triton_server: TritonServer) -> None:
    """Undecodable bytes fail with the decoder's reason; concurrent good images succeed."""
    good = next(scenes(Split.HELD_OUT)).png()
    async with scene_scorer(triton_server) as s:
        results = await asyncio.gather(
            s.embed_target(good),
            s.embed_target(good[: len(good) // 3]),
            s.embed_target(b"not an image"),
            return_exceptions=True,
        )
    assert [type(r).__name__ for r in results] == ["ndarray", "InvalidResponse", "InvalidResponse"]
    assert isinstance(results[2], InvalidResponse) and "scene_image" in str(results[2])
    assert "cannot decode IMAGE" in str(results[2])


async def test_true_descriptions_beat_one_attribute_changes_on_held_out_scenes(
    triton_server: TritonServer,
) -> None:
    """Through Triton, the trained scorer ranks the true description of held-out scenes
    above the same phrasing with one attribute changed for at least 90% of them, for the
    training grammar and for paraphrases never seen in training, and finds each scene's
    own description among all of them."""
    held = list(itertools.islice(scenes(Split.HELD_OUT), HELD_OUT))
    async with scene_scorer(triton_server) as s:
        images = np.stack(await asyncio.gather(*(s.embed_target(x.png()) for x in held)))
        for grammar in (GRAMMAR, PARAPHRASE):
            pairs = [near_miss(scene, i, grammar) for i, scene in enumerate(held)]
            true = await embed_all(s, [t for t, _ in pairs])
            changed = await embed_all(s, [c for _, c in pairs])
            wins = np.mean(np.sum(images * true, 1) > np.sum(images * changed, 1))
            assert wins >= 0.9, (grammar.__name__, wins)
            recall = np.mean((images @ true.T).argmax(1) == np.arange(HELD_OUT))
            assert recall >= 0.8, (grammar.__name__, recall)
