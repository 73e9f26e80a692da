"""Every item of every request in one forward pass; a request whose input cannot be read
fails alone, as INVALID_ARG (HTTP 400: the input is at fault, retrying cannot help)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def respond(
    groups: Sequence[list[Any] | Exception],
    embed: Callable[[list[Any]], Any],
    output: str | Sequence[str] = "EMBEDDING",
) -> list:
    """One response per request. `groups` holds each request's decoded items, or the
    error that made them unreadable; `embed` turns all the good items into arrays in one
    call, one row per item: an array for the tensor named `output`, or a tuple of arrays,
    one per name, when `output` is a sequence of names (the renderers' IMAGE, the style
    model's STYLE_LOSS and CONTENT_LOSS)."""
    names = (output,) if isinstance(output, str) else tuple(output)
    flat = [item for group in groups if isinstance(group, list) for item in group]
    if flat:
        result = embed(flat)
        arrays = (result,) if isinstance(output, str) else tuple(result)
    else:
        arrays = tuple(np.zeros((0, 0), np.float32) for _ in names)
    responses, start = [], 0
    for group in groups:
        if isinstance(group, Exception):
            error = pb_utils.TritonError(str(group), pb_utils.TritonError.INVALID_ARG)
            responses.append(pb_utils.InferenceResponse(error=error))
            continue
        rows = slice(start, start + len(group))
        outputs = [pb_utils.Tensor(n, a[rows]) for n, a in zip(names, arrays, strict=True)]
        responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        start += len(group)
    return responses
