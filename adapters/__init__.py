"""The only place that talks to the outside world.

One module per real backend, each implementing a role of `mils.engine.protocols`:
`OpenAIGenerator` (any OpenAI-compatible chat endpoint), `OpenAIBatchGenerator` (the same
requests through its Batch API), `TritonScorer` (encoder models on
Triton Inference Server), `TritonRenderer` and `OpenAIImageRenderer` (text to image, image
edits), `AlignmentScorer` and `TritonStyleScorer` (scoring renders), the media readers.
`local_stack` starts and stops the offline local servers (llama.cpp, Triton). Every
third-party exception is translated into a `mils.engine.errors` type at the edge.
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
from mils.adapters.media_scorers import AlignmentScorer, TritonStyleScorer
from mils.adapters.openai_batch import BatchSettings, OpenAIBatchGenerator
from mils.adapters.openai_generator import GeneratorSettings, OpenAIGenerator
from mils.adapters.renderers import OpenAIImageRenderer, RendererSettings, TritonRenderer
from mils.adapters.triton_scorer import ScorerSettings, TritonScorer

__all__ = [
    "AlignmentScorer",
    "AudioReader",
    "BatchSettings",
    "GeneratorSettings",
    "ImageReader",
    "OpenAIBatchGenerator",
    "OpenAIGenerator",
    "OpenAIImageRenderer",
    "RendererSettings",
    "ScorerSettings",
    "TextReader",
    "TritonRenderer",
    "TritonScorer",
    "TritonStyleScorer",
    "VideoReader",
    "bundled_samples",
    "expand_inputs",
    "sample_id_for",
]
