"""Closed-world style and content losses for the Triton python backend, on the trained scene
image tower's conv feature maps (`../../_scene_clip/`, `ImageEncoder.feature_maps`).

Gatys-style: a Gram matrix (channel x channel, averaged over positions) of a conv block's
output describes texture and colour statistics and not where things are; the deepest conv
block's maps themselves describe what is where. Both losses are symmetric relative squared
differences, d(a, b) = |a - b|^2 / (|a|^2 + |b|^2), in [0, 1] for these non-negative (ReLU)
features: 0 for identical images, about 1 when nothing is shared. A plain ratio to the
reference's norm was tried first and exploded (to over 2,000) when the reference's
activations were small (a dark scene); the symmetric form stays bounded.
  STYLE_LOSS: mean of d over the Gram matrices of blocks 1-3 (32x32x32, 16x16x64, 16x16x96),
    IMAGE against STYLE. Measured on held-out scenes: blur 0.01-0.03, stripes or noise
    0.02-0.8, another scene 0.3-0.97.
  CONTENT_LOSS: d of block 4's maps (8x8x128), IMAGE against CONTENT. Blur 0.01-0.03, stripes
    or noise 0.04-0.57, another scene 0.55-0.82.
Every image of every request goes through the tower in one pass; a request with an image
Pillow cannot decode fails alone.
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

INPUTS = ("IMAGE", "CONTENT", "STYLE")
STYLE_BLOCKS = (0, 1, 2)
CONTENT_BLOCK = 3


def gram(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): channel correlations averaged over positions."""
    n, c, h, w = maps.shape
    flat = maps.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, |a - b|^2 / (|a|^2 + |b|^2): 0 when equal, at most 1 for non-negative rows."""
    a, b = a.flatten(1), b.flatten(1)
    scale = (a * a).sum(1) + (b * b).sum(1)
    return ((a - b) ** 2).sum(1) / scale.clamp_min(1e-12)


class TritonPythonModel:
    """Every (IMAGE, CONTENT, STYLE) triple of every request in one pass; a bad request
    fails alone."""

    def initialize(self, args: dict) -> None:
        torch.set_num_threads(1)  # the server shares the machine with the engine and the LLM
        self.network = load_network_module()
        self.encoder = self.network.load().image

    def execute(self, requests: list) -> list:
        groups: list[list[tuple[np.ndarray, ...]] | Exception] = []
        for request in requests:
            columns = [
                pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
                for name in INPUTS
            ]
            try:
                groups.append([self.decode(row) for row in zip(*columns, strict=True)])
            except ValueError as exc:
                groups.append(ValueError(f"scene_style: {exc}"))
        return respond(groups, self.losses, output=("STYLE_LOSS", "CONTENT_LOSS"))

    def decode(self, row: tuple[bytes, ...]) -> tuple[np.ndarray, ...]:
        images = []
        for name, data in zip(INPUTS, row, strict=True):
            try:
                images.append(self.network.decode_image(bytes(data)))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
        return tuple(images)

    @torch.inference_mode()
    def losses(self, triples: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
        n = len(triples)
        pixels = torch.from_numpy(np.stack([image for triple in triples for image in triple]))
        maps = [m.reshape(n, 3, *m.shape[1:]) for m in self.encoder.feature_maps(pixels)]
        style = torch.stack(
            [distance(gram(maps[b][:, 0]), gram(maps[b][:, 2])) for b in STYLE_BLOCKS]
        ).mean(0)
        content = distance(maps[CONTENT_BLOCK][:, 0], maps[CONTENT_BLOCK][:, 1])
        return style.reshape(n, 1).numpy(), content.reshape(n, 1).numpy()
