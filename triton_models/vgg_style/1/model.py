"""Style and content losses for the Triton python backend: IMAGE, CONTENT and STYLE
(encoded images) in, STYLE_LOSS and CONTENT_LOSS (float32) out.

VGG-19 features in plain torch with torchvision's checkpoint layout, weights from the file
at MILS_VGG_WEIGHTS (else the config.pbtxt parameter `weights`); the network, the losses
and where to get the weights are in ../../_common/vgg.py. Images are scaled to a square of
MILS_VGG_SIZE px (default 256) and ImageNet-normalised. All triples of all requests go
through one forward pass; a request with an image Pillow cannot decode fails alone.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.images import decode_rgb
from _common.settings import env_int
from _common.vgg import load_features, losses, pixels

MODEL = "vgg_style"
DEFAULT_SIZE = 256
INPUTS = ("IMAGE", "CONTENT", "STYLE")

Triple = tuple[np.ndarray, np.ndarray, np.ndarray]


class TritonPythonModel:
    """All triples of all requests in one forward pass; bad requests fail alone."""

    def initialize(self, args: dict) -> None:
        params = json.loads(args["model_config"]).get("parameters", {})
        path = os.environ.get("MILS_VGG_WEIGHTS") or params.get("weights", {}).get(
            "string_value", ""
        )
        self.side = env_int("MILS_VGG_SIZE", DEFAULT_SIZE, minimum=32)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.network = load_features(path).to(self.device)

    def execute(self, requests: list) -> list:
        groups: list[list[Triple] | Exception] = []
        for request in requests:
            try:
                groups.append(self.read(request))
            except ValueError as exc:
                groups.append(ValueError(f"{MODEL}: {exc}"))
        return respond(groups, self.score, output=("STYLE_LOSS", "CONTENT_LOSS"))

    def read(self, request: Any) -> list[Triple]:
        """The request's (image, content, style) pixel triples, or ValueError naming the
        first input that cannot be decoded."""
        columns = [
            [pixels(decode_rgb(bytes(item), name), self.side) for item in tensor]
            for name, tensor in (
                (name, pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1))
                for name in INPUTS
            )
        ]
        return list(zip(*columns, strict=True))

    @torch.inference_mode()
    def score(self, triples: list[Triple]) -> tuple[np.ndarray, np.ndarray]:
        """(style losses, content losses), each float32 (n, 1)."""
        image, content, style = (
            torch.from_numpy(np.stack(column)).to(self.device)
            for column in zip(*triples, strict=True)
        )
        style_loss, content_loss = losses(self.network, image, content, style)
        return tuple(t.float().cpu().numpy().reshape(-1, 1) for t in (style_loss, content_loss))
