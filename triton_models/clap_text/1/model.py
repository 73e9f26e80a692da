"""CLAP text tower for the Triton python backend: raw UTF-8 text in, embeddings out.

Loads transformers `ClapModel` + its tokenizer from `model_name_or_path` (config.pbtxt
parameter; the environment variable MILS_CLAP_MODEL overrides it unless the config pins
it). Tokenisation happens here, so clients send plain text. Runs on cuda when torch sees
one, else cpu.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer, ClapModel

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.batching import respond
from _common.hub import features, model_name_or_path

DEFAULT_MODEL = "laion/clap-htsat-unfused"


class TritonPythonModel:
    """Batches every text of every request into one forward pass; bad requests fail alone."""

    def initialize(self, args: dict) -> None:
        name = model_name_or_path(args, "MILS_CLAP_MODEL", DEFAULT_MODEL)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = ClapModel.from_pretrained(name).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        # RoBERTa's position ids start after the padding index: two positions are not usable.
        self.max_length = min(
            self.tokenizer.model_max_length,
            self.model.config.text_config.max_position_embeddings - 2,
        )

    def execute(self, requests: list) -> list:
        texts: list[list[str] | Exception] = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            try:
                texts.append([bytes(item).decode("utf-8") for item in items])
            except UnicodeDecodeError as exc:
                texts.append(ValueError(f"clap_text: TEXT is not valid UTF-8: {exc}"))
        return respond(texts, self.embed)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        """Tokenise (padding, truncation) and return float32 text features."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = features(self.model.get_text_features(**batch))
        return out.float().cpu().numpy()
