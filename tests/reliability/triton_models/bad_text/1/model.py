"""Test-only text encoder: a hashing embedding that misbehaves on marker words.

A request holding a text with "nanword" gets NaN for that row; "infword" gets +inf;
"shapeword" makes the whole answer 128-d instead of 256-d; "rowword" adds an extra row;
"errword" makes the request fail with INVALID_ARG. Other texts embed normally.
"""

from __future__ import annotations

import hashlib

import numpy as np
import triton_python_backend_utils as pb_utils

DIM = 256


def embed(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def embed_request(texts: list[str]) -> np.ndarray:
    if any("errword" in t for t in texts):
        raise ValueError("refusing a text containing errword")
    rows = np.stack([embed(t) for t in texts])
    for i, text in enumerate(texts):
        if "nanword" in text:
            rows[i] = np.nan
        if "infword" in text:
            rows[i] = np.inf
    if any("shapeword" in t for t in texts):
        rows = rows[:, :128]
    if any("rowword" in t for t in texts):
        rows = np.concatenate([rows, rows[:1]])
    return np.ascontiguousarray(rows)


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                items = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                texts = [bytes(item).decode("utf-8") for item in items.reshape(-1)]
                out = pb_utils.Tensor("EMBEDDING", embed_request(texts))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:
                error = pb_utils.TritonError(f"bad_text: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
