"""Scene scorer, image tower, for the Triton python backend: encoded images in, unit vectors out.

The network and its weights live in `../../_scene_clip/` (shared with the training script,
imported from there by path). Decoding (Pillow) and resizing to 64x64 happen here, so
clients send the encoded file; bytes Pillow cannot decode fail their request only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.scene_network import load_network_module


class TritonPythonModel:
    """Every image of every request in one forward pass; a bad request fails alone."""

    def initialize(self, args: dict) -> None:
        torch.set_num_threads(1)  # the server shares the machine with the engine and the LLM
        self.network = load_network_module()
        self.encoder = self.network.load().image

    def execute(self, requests: list) -> list:
        groups: list[list[np.ndarray] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            try:
                groups.append([self.network.decode_image(bytes(item)) for item in items])
            except ValueError as exc:
                groups.append(ValueError(f"scene_image: {exc}"))
        return respond(groups, self.embed)

    @torch.inference_mode()
    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        pixels = torch.from_numpy(np.stack(images))
        out = torch.nn.functional.normalize(self.encoder(pixels), dim=-1)
        return out.float().numpy()
