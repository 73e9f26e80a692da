"""CLIP/SigLIP image tower for the Triton python backend: raw image bytes in, embeddings out.

Loads transformers `AutoModel` + `AutoImageProcessor` from `model_name_or_path` (config.pbtxt
parameter; the environment variable MILS_CLIP_MODEL overrides it). Decoding (Pillow) and
preprocessing happen here, so clients send the encoded file. Runs on cuda when torch sees
one, else cpu.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from PIL import Image, UnidentifiedImageError
from transformers import AutoImageProcessor, AutoModel

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.hub import features, model_name_or_path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


def decode(data: bytes) -> Image.Image:
    """Encoded bytes -> RGB image, or ValueError naming the problem."""
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert("RGB")  # convert() forces the full decode: truncation shows here
    except UnidentifiedImageError as exc:
        raise ValueError(f"cannot decode IMAGE ({len(data)} bytes): not an image format Pillow reads") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises several types for bad bytes
        raise ValueError(f"cannot decode IMAGE ({len(data)} bytes): {exc}") from exc


class TritonPythonModel:
    """Batches every image of every request into one forward pass; bad requests fail alone."""

    def initialize(self, args: dict) -> None:
        name = model_name_or_path(args, "MILS_CLIP_MODEL", DEFAULT_MODEL)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(name).to(self.device).eval()
        self.processor = AutoImageProcessor.from_pretrained(name)

    def execute(self, requests: list) -> list:
        images: list[list[Image.Image] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            try:
                images.append([decode(bytes(item)) for item in items])
            except ValueError as exc:
                images.append(ValueError(f"clip_image: {exc}"))
        return respond(images, self.embed)

    @torch.inference_mode()
    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """Preprocess (resize, crop, normalise) and return float32 image features."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        out = features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return out.float().cpu().numpy()
