"""The text tower of a closed-world scorer (scene_text, motion_text, sound_text) as a Triton
python-backend model: UTF-8 texts in, unit vectors out.

The network and its weights live in the scorer's own folder (`_scene_clip`, `_motion_clip`,
`_sound_clap`), shared with its training script and loaded from there by path, so serving
runs exactly the code the weights were trained with. Any text embeds: unknown words are read
from their character n-grams.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from _common.batching import respond
from _common.networks import load_network


def text_tower(folder: str, model: str) -> type:
    """The `TritonPythonModel` class of Triton model `model`, the text tower of `folder`."""

    class TritonPythonModel:
        """Every text of every request in one forward pass; a bad request fails alone."""

        def initialize(self, args: dict[str, Any]) -> None:
            torch.set_num_threads(1)  # the server shares the machine with the engine and LLM
            self.encoder = load_network(folder).load().text

        def execute(self, requests: list[Any]) -> list[Any]:
            groups: list[list[str] | Exception] = []
            for request in requests:
                try:
                    groups.append(_texts(request, model))
                except ValueError as exc:
                    groups.append(exc)
            return respond(groups, self.embed)

        @torch.inference_mode()
        def embed(self, texts: list[str]) -> np.ndarray:
            out = torch.nn.functional.normalize(self.encoder(texts), dim=-1)
            return out.float().numpy()

    return TritonPythonModel


def _texts(request: Any, model: str) -> list[str]:
    """One request's texts, or ValueError when one is not UTF-8."""
    items = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
    try:
        return [bytes(item).decode("utf-8") for item in items]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{model}: TEXT is not valid UTF-8: {exc}") from exc
