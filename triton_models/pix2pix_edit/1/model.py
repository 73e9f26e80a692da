"""Instruction-driven editing for the Triton python backend: IMAGE (encoded), TEXT (the
instruction) and SEED in, IMAGE (PNG bytes) out.

Loads `diffusers.StableDiffusionInstructPix2PixPipeline` from `model_name_or_path`
(config.pbtxt parameter, timbrooks/instruct-pix2pix; MILS_EDIT_MODEL overrides it).
Settings from the environment: MILS_EDIT_STEPS (default 10), MILS_EDIT_SIZE (the input is
scaled so its longer side is this many px, each side a multiple of 8; default 512),
MILS_EDIT_IMAGE_GUIDANCE (how closely to keep the input; the pipeline's 1.5 when unset) and
MILS_EDIT_GUIDANCE (how strongly to follow the instruction; the pipeline's 7.5 when unset).

Items are batched per image size (the VAE encodes a batch of one size): usually one
pipeline call per execute. Each item has its own CPU generator seeded from SEED. Bytes
Pillow cannot decode, and instructions longer than the text encoder's window, fail their
request alone.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.diffusion import PromptLimit, decode_text, generators, load_pipeline
from _common.hub import model_name_or_path
from _common.images import decode_rgb, encode_png, fit
from _common.settings import env_float, env_int

MODEL = "pix2pix_edit"
DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
DEFAULT_STEPS = 10
DEFAULT_SIZE = 512

Item = tuple[Image.Image, str, int]


class TritonPythonModel:
    """All items of all requests in one pipeline call per image size; bad requests fail
    alone."""

    def initialize(self, args: dict) -> None:
        name = model_name_or_path(args, "MILS_EDIT_MODEL", DEFAULT_MODEL)
        self.side = env_int("MILS_EDIT_SIZE", DEFAULT_SIZE, minimum=8)
        self.options: dict[str, Any] = {
            "num_inference_steps": env_int("MILS_EDIT_STEPS", DEFAULT_STEPS),
        }
        for key, env in (
            ("image_guidance_scale", "MILS_EDIT_IMAGE_GUIDANCE"),
            ("guidance_scale", "MILS_EDIT_GUIDANCE"),
        ):
            value = env_float(env, None)
            if value is not None:
                self.options[key] = value
        self.pipeline = load_pipeline(
            StableDiffusionInstructPix2PixPipeline, name, MODEL, "MILS_EDIT_MODEL"
        )
        self.limit = PromptLimit(self.pipeline)

    def execute(self, requests: list) -> list:
        groups: list[list[Item] | Exception] = []
        for request in requests:
            try:
                groups.append(self.read(request))
            except ValueError as exc:
                groups.append(ValueError(f"{MODEL}: {exc}"))
        return respond(groups, self.edit, output="IMAGE")

    def read(self, request: Any) -> list[Item]:
        """The request's (image, instruction, seed) triples, or ValueError for the first
        unusable image or text."""
        images, texts, seeds = (
            pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
            for name in ("IMAGE", "TEXT", "SEED")
        )
        return [
            (fit(decode_rgb(bytes(i)), self.side), self.limit.check(decode_text(bytes(t))), int(s))
            for i, t, s in zip(images, texts, seeds, strict=True)
        ]

    @torch.inference_mode()
    def edit(self, items: list[Item]) -> np.ndarray:
        """PNG bytes per item, shape (n, 1): one pipeline call per distinct image size."""
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (image, _, _) in enumerate(items):
            by_size[image.size].append(index)
        out = np.empty((len(items), 1), dtype=np.object_)
        for indices in by_size.values():
            batch = [items[i] for i in indices]
            result = self.pipeline(
                prompt=[text for _, text, _ in batch],
                image=[image for image, _, _ in batch],
                generator=generators(seed for _, _, seed in batch),
                output_type="pil",
                **self.options,
            )
            for index, image in zip(indices, result.images, strict=True):
                out[index, 0] = encode_png(image)
        return out
