"""CLAP audio tower for the Triton python backend: raw encoded audio in, embeddings out.

Loads transformers `ClapModel` + its feature extractor from `model_name_or_path`
(config.pbtxt parameter; the environment variable MILS_CLAP_MODEL overrides it unless the
config pins it). Decoding happens here (`_common/audio.py`: PCM WAV with numpy, other
containers with PyAV), mixed to mono and resampled to the feature extractor's rate (48 kHz
for LAION CLAP), so clients send the encoded file; audio that is empty, undecodable or longer
than `max_seconds` (config.pbtxt) fails its request only. Runs on cuda when torch sees one.

Audio longer than the extractor's window (`max_length_s`, 10 s for LAION CLAP) is cut to its
first window here: the extractor would otherwise pick a random crop, and the same file must
always embed the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoFeatureExtractor, ClapModel

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.audio import MAX_SECONDS, decode_audio
from _common.batching import respond
from _common.hub import features, model_name_or_path

DEFAULT_MODEL = "laion/clap-htsat-unfused"


class TritonPythonModel:
    """Batches every clip of every request into one forward pass; bad requests fail alone."""

    def initialize(self, args: dict) -> None:
        name = model_name_or_path(args, "MILS_CLAP_MODEL", DEFAULT_MODEL)
        params = json.loads(args["model_config"]).get("parameters", {})
        self.max_seconds = float(params.get("max_seconds", {}).get("string_value") or MAX_SECONDS)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = ClapModel.from_pretrained(name).to(self.device).eval()
        self.extractor = AutoFeatureExtractor.from_pretrained(name)
        self.rate = int(self.extractor.sampling_rate)
        # A fused model reads 4 mel views; an unfused one 1 (whatever the saved extractor says).
        self.truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"

    def execute(self, requests: list) -> list:
        clips: list[list[np.ndarray] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy().reshape(-1)
            try:
                clips.append([self.read(bytes(item)) for item in items])
            except ValueError as exc:
                clips.append(ValueError(f"clap_audio: {exc}"))
        return respond(clips, self.embed)

    def read(self, data: bytes) -> np.ndarray:
        """Encoded bytes -> mono samples at the extractor's rate, at most one window long."""
        samples = decode_audio(data, self.rate, self.max_seconds)
        return samples[: self.extractor.nb_max_samples]

    @torch.inference_mode()
    def embed(self, clips: list[np.ndarray]) -> np.ndarray:
        """Extract features (mel, padding) and return float32 audio features."""
        batch = self.extractor(
            clips, sampling_rate=self.rate, truncation=self.truncation, return_tensors="pt"
        ).to(self.device)
        out = features(self.model.get_audio_features(**batch))
        return out.float().cpu().numpy()
