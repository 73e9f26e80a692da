"""What the diffusers renderers (sd_render, pix2pix_edit) share: loading a pipeline from a
hub id or a local folder, one seeded generator per item, and the prompt length check.

Long prompts are refused, not truncated: a diffusers pipeline drops the tokens past its
text encoder's window (77 CLIP tokens for Stable Diffusion) with only a log warning, so
two candidates differing only after that point would render alike and the optimiser could
not tell why. The request fails alone with the count and the limit; the loop goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import diffusers
import torch
from transformers import PreTrainedTokenizerBase

from _common.settings import seed_of


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """cuda in bfloat16 (float16 where the card lacks it) when torch sees a GPU, else cpu
    in float32 (half precision is slow or unsupported there)."""
    if torch.cuda.is_available():
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda"), half
    return torch.device("cpu"), torch.float32


def load_pipeline(loader: Any, name: str, model: str, env: str) -> Any:
    """`loader.from_pretrained(name)` on the best device, progress bars off; a clear
    RuntimeError (the model fails to load, this message in the Triton log) when the
    folder or hub id cannot be read."""
    diffusers.utils.logging.disable_progress_bar()  # the Triton log, not a terminal
    device, dtype = device_and_dtype()
    try:
        pipeline = loader.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"{model}: cannot load the diffusers pipeline {name!r}: {str(exc).rstrip('.')}. "
            f"Set {env} to a local pipeline folder (written by save_pretrained) or to a hub "
            "id already in the Hugging Face cache (downloads are off when HF_HUB_OFFLINE=1)"
        ) from exc
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def generators(seeds: Iterable[int]) -> list[torch.Generator]:
    """One CPU generator per item. diffusers draws each item's starting noise from its own
    generator, so the noise depends on the item's seed alone, not on its batch neighbours
    or the device (CPU noise is the same on any machine)."""
    return [torch.Generator("cpu").manual_seed(seed_of(seed)) for seed in seeds]


def decode_text(data: bytes, name: str = "TEXT") -> str:
    """UTF-8 bytes of a TYPE_STRING input -> str, or ValueError naming the input."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text ({exc})") from exc


class PromptLimit:
    """The longest prompt `pipeline` reads whole: in tokens of its tokenizer with the widest
    window (T5's 512 for FLUX, CLIP's 77 for Stable Diffusion; FLUX's CLIP tokenizer only
    feeds a pooled summary and truncates by design)."""

    def __init__(self, pipeline: Any) -> None:
        tokenizers = [
            c for c in pipeline.components.values() if isinstance(c, PreTrainedTokenizerBase)
        ]
        if not tokenizers:
            raise RuntimeError(f"{type(pipeline).__name__} has no tokenizer to count prompts")
        self.tokenizer = max(tokenizers, key=lambda t: t.model_max_length)
        self.tokens = int(self.tokenizer.model_max_length)

    def check(self, text: str) -> str:
        """`text`, or ValueError when it has more tokens than the pipeline reads."""
        count = len(self.tokenizer(text, truncation=False)["input_ids"])
        if count > self.tokens:
            raise ValueError(
                f"text is {count} tokens ({len(text)} characters); this renderer reads at "
                f"most {self.tokens} ({type(self.tokenizer).__name__}), the rest would be "
                "dropped: shorten the text"
            )
        return text
