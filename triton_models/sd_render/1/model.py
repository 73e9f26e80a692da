"""Text-to-image for the Triton python backend: TEXT and SEED in, IMAGE (PNG bytes) out.

Loads `diffusers.AutoPipelineForText2Image` from `model_name_or_path` (config.pbtxt
parameter, FLUX.1-schnell as in the MILS paper; MILS_T2I_MODEL overrides it): FLUX, Stable
Diffusion 1.x/2.x/XL and the other text-to-image pipelines diffusers maps. Settings from the
environment: MILS_T2I_STEPS (default 4, FLUX.1-schnell's), MILS_T2I_GUIDANCE (the
pipeline's default when unset), MILS_T2I_SIZE (square side in px; the checkpoint's native
size when unset).

Every item of every request goes into one pipeline call, each with its own CPU generator
seeded from SEED: an item's starting noise depends on its seed alone, and the same batch
gives the same bytes. Across batches of different sizes the float maths may differ in the
last bits (batched kernels), which can move a pixel by one level. A prompt longer than the
pipeline's text window fails its request alone (see ../../_common/diffusion.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from diffusers import AutoPipelineForText2Image

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.diffusion import PromptLimit, decode_text, generators, load_pipeline
from _common.hub import model_name_or_path
from _common.images import encode_png
from _common.settings import env_float, env_int

MODEL = "sd_render"
DEFAULT_MODEL = "black-forest-labs/FLUX.1-schnell"
DEFAULT_STEPS = 4


class TritonPythonModel:
    """All items of all requests in one pipeline call; a request with bad text fails alone."""

    def initialize(self, args: dict) -> None:
        name = model_name_or_path(args, "MILS_T2I_MODEL", DEFAULT_MODEL)
        self.options: dict[str, Any] = {
            "num_inference_steps": env_int("MILS_T2I_STEPS", DEFAULT_STEPS),
        }
        guidance = env_float("MILS_T2I_GUIDANCE", None)
        if guidance is not None:
            self.options["guidance_scale"] = guidance
        side = env_int("MILS_T2I_SIZE", None, minimum=8)
        if side is not None:
            self.options["height"] = self.options["width"] = side
        self.pipeline = load_pipeline(AutoPipelineForText2Image, name, MODEL, "MILS_T2I_MODEL")
        self.limit = PromptLimit(self.pipeline)

    def execute(self, requests: list) -> list:
        groups: list[list[tuple[str, int]] | Exception] = []
        for request in requests:
            try:
                groups.append(self.read(request))
            except ValueError as exc:
                groups.append(ValueError(f"{MODEL}: {exc}"))
        return respond(groups, self.render, output="IMAGE")

    def read(self, request: Any) -> list[tuple[str, int]]:
        """The request's (prompt, seed) pairs, or ValueError for the first unusable text."""
        texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
        seeds = pb_utils.get_input_tensor_by_name(request, "SEED").as_numpy().reshape(-1)
        prompts = [self.limit.check(decode_text(bytes(t))) for t in texts]
        return list(zip(prompts, (int(s) for s in seeds), strict=True))

    @torch.inference_mode()
    def render(self, items: list[tuple[str, int]]) -> np.ndarray:
        """PNG bytes per item, shape (n, 1), from one pipeline call."""
        prompts = [prompt for prompt, _ in items]
        out = self.pipeline(
            prompts, generator=generators(s for _, s in items), output_type="pil", **self.options
        )
        return np.array([[encode_png(image)] for image in out.images], dtype=np.object_)
