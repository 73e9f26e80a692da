"""Toy CLIP text encoder for the Triton python backend: deterministic, no weights.

Each word (lowercase, letters only, minus a few stopwords) maps to a fixed pseudo-random
unit vector seeded from blake2b(word); a text's embedding is the L2-normalised sum of its
words' vectors. `toyclip_image` embeds images as weighted sums of the same word vectors
(colour and quality words), so a caption naming what an image shows scores higher.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np
import triton_python_backend_utils as pb_utils

DIM = 256
WORD = re.compile(r"[a-z]+")
STOPWORDS = frozenset(
    "a an the of and or with in on at to is are was this that it its by for from as".split()
)
# A text with no content words still gets a finite unit vector (never NaN).
EMPTY_TOKEN = "<empty>"


@functools.lru_cache(maxsize=65536)
def word_vector(word: str) -> np.ndarray:
    """The fixed unit vector of one word (duplicated in toyclip_image/1/model.py)."""
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vec / np.linalg.norm(vec)


def embed_text(text: str) -> np.ndarray:
    """Sum of the content words' vectors, L2-normalised."""
    words = [w for w in WORD.findall(text.lower()) if w not in STOPWORDS] or [EMPTY_TOKEN]
    total = np.sum([word_vector(w) for w in words], axis=0)
    return (total / np.linalg.norm(total)).astype(np.float32)


def embed_request(items: np.ndarray) -> np.ndarray:
    """Embed one request's (n, 1) array of UTF-8 bytes."""
    rows = []
    for item in items.reshape(-1):
        try:
            rows.append(embed_text(bytes(item).decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise ValueError(f"TEXT is not valid UTF-8: {exc}") from exc
    return np.stack(rows)


class TritonPythonModel:
    """One response per request; a bad request gets an error response, the others go on."""

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                items = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                out = pb_utils.Tensor("EMBEDDING", embed_request(items))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # noqa: BLE001 - isolate this request's failure
                # INVALID_ARG (HTTP 400): the input is at fault, retrying cannot help.
                error = pb_utils.TritonError(f"toyclip_text: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
