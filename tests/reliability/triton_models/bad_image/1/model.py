"""Test-only image encoder: a hashing embedding of the bytes, bad on marker bytes.

An image whose bytes contain b"NANIMAGE" embeds to NaN; b"WRONGDIM" to a 128-d vector
(the text side is 256-d); b"ERRIMAGE" fails with INVALID_ARG.
"""

from __future__ import annotations

import hashlib

import numpy as np
import triton_python_backend_utils as pb_utils

DIM = 256


def embed(data: bytes) -> np.ndarray:
    if b"ERRIMAGE" in data:
        raise ValueError("refusing an image marked ERRIMAGE")
    seed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    if b"NANIMAGE" in data:
        vec[:] = np.nan
    return vec[:128] if b"WRONGDIM" in data else vec


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                items = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                rows = np.stack([embed(bytes(item)) for item in items.reshape(-1)])
                out = pb_utils.Tensor("EMBEDDING", rows)
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:
                error = pb_utils.TritonError(f"bad_image: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
