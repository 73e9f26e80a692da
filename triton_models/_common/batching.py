"""Every item of every request in one forward pass; a request whose input cannot be read
fails alone, as INVALID_ARG (HTTP 400: the input is at fault, retrying cannot help)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def respond(
    groups: Sequence[list[Any] | Exception], embed: Callable[[list[Any]], np.ndarray]
) -> list:
    """One response per request. `groups` holds each request's decoded items, or the
    error that made them unreadable; `embed` turns all the good items into float32 rows
    in one call."""
    flat = [item for group in groups if isinstance(group, list) for item in group]
    embeddings = embed(flat) if flat else np.zeros((0, 0), np.float32)
    responses, start = [], 0
    for group in groups:
        if isinstance(group, Exception):
            error = pb_utils.TritonError(str(group), pb_utils.TritonError.INVALID_ARG)
            responses.append(pb_utils.InferenceResponse(error=error))
            continue
        out = pb_utils.Tensor("EMBEDDING", embeddings[start : start + len(group)])
        responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        start += len(group)
    return responses
