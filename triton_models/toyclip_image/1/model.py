"""Toy CLIP image encoder for the Triton python backend: deterministic, no weights.

An image is described by interpretable attributes — the fraction of pixels nearest to each
named palette colour, brightness, saturation, edge density and orientation — and embedded
as the weighted sum of those words' vectors (the same word vectors as `toyclip_text`),
L2-normalised. A caption naming the image's real colours and qualities therefore scores
higher than one that does not: an honest stand-in for CLIP that needs no weights.
"""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image, UnidentifiedImageError

DIM = 256
SIDE = 64  # analyse a thumbnail: attributes are global, 64 px is plenty and fast
PALETTE = {
    "red": (220, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 160, 40),
    "blue": (30, 70, 200),
    "purple": (130, 50, 160),
    "pink": (240, 150, 190),
    "brown": (120, 75, 35),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}
COLOURS = np.array(list(PALETTE.values()), dtype=np.float32) / 255.0
QUALITY_WEIGHT = 0.5  # colours carry weight 1 in total; each quality axis carries 0.5
EDGE_THRESHOLD = 0.08  # luma step between neighbours that counts as an edge


@functools.lru_cache(maxsize=1024)
def word_vector(word: str) -> np.ndarray:
    """The fixed unit vector of one word (duplicated from toyclip_text/1/model.py)."""
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vec / np.linalg.norm(vec)


def decode(data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode to an RGB thumbnail in [0, 1] and the original (width, height)."""
    try:
        image = Image.open(io.BytesIO(data))
        size = image.size
        image.draft("RGB", (SIDE, SIDE))  # JPEG: decode at reduced scale, much faster
        image = image.convert("RGB")
        image.thumbnail((SIDE, SIDE))
    except UnidentifiedImageError as exc:
        raise ValueError(f"cannot decode IMAGE ({len(data)} bytes): not an image format Pillow reads") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises several types for bad bytes
        raise ValueError(f"cannot decode IMAGE ({len(data)} bytes): {exc}") from exc
    return np.asarray(image, dtype=np.float32) / 255.0, size


def attributes(pixels: np.ndarray, size: tuple[int, int]) -> dict[str, float]:
    """Word -> weight for one image."""
    flat = pixels.reshape(-1, 3)
    nearest = np.argmin(((flat[:, None, :] - COLOURS[None]) ** 2).sum(-1), axis=1)
    fractions = np.bincount(nearest, minlength=len(PALETTE)) / len(flat)
    weights = dict(zip(PALETTE, fractions.tolist()))

    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    brightness = float(luma.mean())
    top, bottom = pixels.max(-1), pixels.min(-1)
    saturation = float(np.where(top > 0, (top - bottom) / np.maximum(top, 1e-6), 0).mean())
    steps = np.abs(np.diff(luma, axis=0))[:, :-1] + np.abs(np.diff(luma, axis=1))[:-1, :]
    edges = float((steps > EDGE_THRESHOLD).mean()) if steps.size else 0.0
    width, height = size

    q = QUALITY_WEIGHT
    weights["bright"] = q * max(0.0, 2 * brightness - 1)
    weights["dark"] = q * max(0.0, 1 - 2 * brightness)
    weights["colorful"] = q * saturation
    weights["monochrome"] = weights["grayscale"] = q * (1 - saturation) / 2
    weights["detailed"] = weights["textured"] = q * edges / 2
    weights["smooth"] = weights["plain"] = q * (1 - edges) / 2
    shape = "wide" if width > 1.2 * height else "tall" if height > 1.2 * width else "square"
    weights[shape] = q
    return weights


def embed_image(data: bytes) -> np.ndarray:
    """Weighted sum of the attribute words' vectors, L2-normalised."""
    weights = attributes(*decode(data))
    total = np.sum([w * word_vector(word) for word, w in weights.items()], axis=0)
    return (total / np.linalg.norm(total)).astype(np.float32)


class TritonPythonModel:
    """One response per request; a corrupt image fails its own request only."""

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                items = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                rows = np.stack([embed_image(bytes(item)) for item in items.reshape(-1)])
                out = pb_utils.Tensor("EMBEDDING", rows)
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # noqa: BLE001 - isolate this request's failure
                # INVALID_ARG (HTTP 400): the input is at fault, retrying cannot help.
                error = pb_utils.TritonError(f"toyclip_image: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
