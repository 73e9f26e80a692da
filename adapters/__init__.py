"""The only place that talks to the outside world.

One module per real backend, each implementing a role of `mils.engine.protocols`:
`OpenAIGenerator` (any OpenAI-compatible chat endpoint), `OpenAIBatchGenerator` (the same
requests through its Batch API), `TritonScorer` (encoder models on
Triton Inference Server), `ImageReader` (image files). `local_stack` starts and stops the
offline local servers (llama.cpp, Triton). Every third-party exception is translated into
a `mils.engine.errors` type at the edge.
"""

from __future__ import annotations

from mils.adapters.media import (
    AudioReader,
    ImageReader,
    TextReader,
    VideoReader,
    bundled_samples,
    expand_inputs,
    sample_id_for,
)
from mils.adapters.openai_batch import BatchSettings, OpenAIBatchGenerator
from mils.adapters.openai_generator import GeneratorSettings, OpenAIGenerator
from mils.adapters.triton_scorer import ScorerSettings, TritonScorer

__all__ = [
    "AudioReader",
    "BatchSettings",
    "GeneratorSettings",
    "ImageReader",
    "OpenAIBatchGenerator",
    "OpenAIGenerator",
    "ScorerSettings",
    "TextReader",
    "TritonScorer",
    "VideoReader",
    "bundled_samples",
    "expand_inputs",
    "sample_id_for",
]
