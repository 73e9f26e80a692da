"""CLIP/SigLIP text tower for the Triton python backend: raw UTF-8 text in, embeddings out.

Loads transformers `AutoModel` + `AutoTokenizer` from `model_name_or_path` (config.pbtxt
parameter; the environment variable MILS_CLIP_MODEL overrides it). Tokenisation happens
here, so clients send plain text. Runs on cuda when torch sees one, else cpu.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModel, AutoTokenizer

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.hub import features, model_name_or_path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


class TritonPythonModel:
    """Batches every text of every request into one forward pass; bad requests fail alone."""

    def initialize(self, args: dict) -> None:
        name = model_name_or_path(args, "MILS_CLIP_MODEL", DEFAULT_MODEL)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(name).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        # SigLIP was trained on max_length padding; CLIP on the longest in the batch.
        self.padding = "max_length" if "siglip" in self.model.config.model_type else True
        self.max_length = min(self.tokenizer.model_max_length,
                              self.model.config.text_config.max_position_embeddings)

    def execute(self, requests: list) -> list:
        texts: list[list[str] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            try:
                texts.append([bytes(item).decode("utf-8") for item in items])
            except UnicodeDecodeError as exc:
                texts.append(ValueError(f"clip_text: TEXT is not valid UTF-8: {exc}"))
        return respond(texts, self.embed)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        """Tokenise (padding, truncation) and return float32 text features."""
        batch = self.tokenizer(texts, padding=self.padding, truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(self.device)
        out = features(self.model.get_text_features(**batch))
        return out.float().cpu().numpy()
