"""Scene scorer, text tower, for the Triton python backend: UTF-8 texts in, unit vectors out.

The network and its weights live in `../../_scene_clip/` (shared with the training script,
imported from there by path, so serving runs exactly the code the weights were trained
with). Any text embeds: unknown words are read from their character n-grams.
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


def texts_of(request) -> list[str]:
    """One request's texts, or ValueError when one is not UTF-8."""
    items = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
    try:
        return [bytes(item).decode("utf-8") for item in items]
    except UnicodeDecodeError as exc:
        raise ValueError(f"scene_text: TEXT is not valid UTF-8: {exc}") from exc


class TritonPythonModel:
    """Every text of every request in one forward pass; a bad request fails alone."""

    def initialize(self, args: dict) -> None:
        torch.set_num_threads(1)  # the server shares the machine with the engine and the LLM
        self.encoder = load_network_module().load().text

    def execute(self, requests: list) -> list:
        groups: list[list[str] | Exception] = []
        for request in requests:
            try:
                groups.append(texts_of(request))
            except ValueError as exc:
                groups.append(exc)
        return respond(groups, self.embed)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        out = torch.nn.functional.normalize(self.encoder(texts), dim=-1)
        return out.float().numpy()
