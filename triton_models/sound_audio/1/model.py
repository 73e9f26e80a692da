"""Sound scorer, audio tower, for the Triton python backend: encoded audio in, unit vectors out.

The network and its weights live in `../../_sound_clap/` (shared with the training script,
imported from there by path). Decoding happens here (`_common/audio.py`: PCM WAV with numpy,
other containers with PyAV; mono, resampled to the network's 16 kHz), so clients send the
encoded file; audio that is empty, undecodable or longer than `max_seconds` (config.pbtxt)
fails its request only.
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
from _common.audio import MAX_SECONDS, decode_audio
from _common.batching import respond
from _common.sound_network import load_network_module


class TritonPythonModel:
    """Every clip of every request in one forward pass; a bad request fails alone."""

    def initialize(self, args: dict) -> None:
        torch.set_num_threads(1)  # the server shares the machine with the engine and the LLM
        params = json.loads(args["model_config"]).get("parameters", {})
        self.max_seconds = float(params.get("max_seconds", {}).get("string_value") or MAX_SECONDS)
        self.network = load_network_module()
        self.encoder = self.network.load().audio

    def execute(self, requests: list) -> list:
        groups: list[list[np.ndarray] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy().reshape(-1)
            try:
                groups.append([self.read(bytes(item)) for item in items])
            except ValueError as exc:
                groups.append(ValueError(f"sound_audio: {exc}"))
        return respond(groups, self.embed)

    def read(self, data: bytes) -> np.ndarray:
        """Encoded bytes -> the network's fixed window of samples."""
        return self.network.fit(decode_audio(data, self.network.RATE, self.max_seconds))

    @torch.inference_mode()
    def embed(self, clips: list[np.ndarray]) -> np.ndarray:
        out = torch.nn.functional.normalize(self.encoder(torch.from_numpy(np.stack(clips))), dim=-1)
        return out.float().numpy()
