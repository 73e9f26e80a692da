"""Video scorer, video tower, for the Triton python backend: encoded videos in, unit vectors out.

The network and its weights live in `../../_motion_clip/` (shared with the training script,
loaded from there by path). Decoding (PyAV), sampling 8 frames evenly over the clip and
resizing to 64x64 happen here (`../../_common/video.py`), so clients send the encoded file.
A file that is not a video, has no video stream, is truncated, has no decodable frame, or
is longer than the `max_seconds` parameter fails its request only, saying which.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.motion_network import load_network_module
from _common.video import max_seconds


class TritonPythonModel:
    """Every clip of every request in one forward pass; a bad request fails alone."""

    def initialize(self, args: dict) -> None:
        torch.set_num_threads(1)  # the server shares the machine with the engine and the LLM
        self.network = load_network_module()
        self.encoder = self.network.load().video
        self.limit = max_seconds(json.loads(args["model_config"]).get("parameters", {}))

    def execute(self, requests: list) -> list:
        groups: list[list[np.ndarray] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "VIDEO").as_numpy().reshape(-1)
            try:
                groups.append([self.network.decode_clip(bytes(x), self.limit) for x in items])
            except ValueError as exc:
                groups.append(ValueError(f"motion_video: {exc}"))
        return respond(groups, self.embed)

    @torch.inference_mode()
    def embed(self, clips: list[np.ndarray]) -> np.ndarray:
        pixels = torch.from_numpy(np.stack(clips))
        out = torch.nn.functional.normalize(self.encoder(pixels), dim=-1)
        return out.float().numpy()
