"""The only place that talks to the outside world.

One module per real backend, each implementing a role of `engine.protocols`:
`OpenAIGenerator` (any OpenAI-compatible chat endpoint), `TritonScorer` (encoder models on
Triton Inference Server), `ImageReader` (image files). `local_stack` starts and stops the
offline local servers (llama.cpp, Triton). Every third-party exception is translated into
an `engine.errors` type at the edge.
"""

from __future__ import annotations

from adapters.media import ImageReader, bundled_samples, expand_inputs, sample_id_for
from adapters.openai_generator import GeneratorSettings, OpenAIGenerator
from adapters.triton_scorer import TritonScorer

__all__ = [
    "GeneratorSettings",
    "ImageReader",
    "OpenAIGenerator",
    "TritonScorer",
    "bundled_samples",
    "expand_inputs",
    "sample_id_for",
]
