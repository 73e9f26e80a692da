"""X-CLIP video tower for the Triton python backend: raw video bytes in, embeddings out.

Loads transformers `AutoModel` (an `XCLIPModel`) + `AutoProcessor` (an `XCLIPProcessor`)
from `model_name_or_path` (config.pbtxt parameter; the environment variable
MILS_XCLIP_MODEL overrides it unless the config pins it). Decoding (PyAV, in
`../../_common/video.py`) samples the model's `num_frames` frames evenly over the clip; the
processor resizes, crops and normalises them. A file that is not a video, has no video
stream, is truncated, has no decodable frame, or is longer than the `max_seconds` parameter
fails its request only, saying which. Runs on cuda when torch sees one, else cpu.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModel, AutoProcessor

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.hub import features, model_name_or_path
from _common.video import decode_video, max_seconds

DEFAULT_MODEL = "microsoft/xclip-base-patch32"


class TritonPythonModel:
    """Batches every clip of every request into one forward pass; bad requests fail alone."""

    def initialize(self, args: dict) -> None:
        name = model_name_or_path(args, "MILS_XCLIP_MODEL", DEFAULT_MODEL)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(name).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(name)
        self.frames = self.model.config.vision_config.num_frames
        self.limit = max_seconds(json.loads(args["model_config"]).get("parameters", {}))

    def execute(self, requests: list) -> list:
        clips: list[list[list[np.ndarray]] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "VIDEO").as_numpy().reshape(-1)
            try:
                clips.append([decode_video(bytes(x), self.frames, limit=self.limit) for x in items])
            except ValueError as exc:
                clips.append(ValueError(f"xclip_video: {exc}"))
        return respond(clips, self.embed)

    @torch.inference_mode()
    def embed(self, clips: list[list[np.ndarray]]) -> np.ndarray:
        """Preprocess (resize, crop, normalise) and return float32 video features."""
        pixels = self.processor(videos=clips, return_tensors="pt")["pixel_values"]
        out = features(self.model.get_video_features(pixel_values=pixels.to(self.device)))
        return out.float().cpu().numpy()
