"""Build a tiny randomly initialised CLAP model folder, loadable with from_pretrained.

Exercises the real loading path of `triton_models/clap_*` without downloading weights: a
hand-written byte-level BPE vocabulary (RoBERTa's special tokens, every byte, a few merges)
for the RoBERTa tokenizer, 2-layer 32-wide text tower, a 2-stage HTSAT (Swin) audio tower on
64 mel bins, and a feature extractor at 48 kHz (as LAION CLAP), 1-second window.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_clip import _byte_chars

TINY_CLAP_DIM = 16
TINY_CLAP_RATE = 48_000
_MERGES = [("t", "h"), ("th", "e"), ("Ġ", "t"), ("b", "e"), ("e", "p")]


def build_tiny_clap(path: Path) -> Path:
    """Write config, weights, tokenizer and feature extractor of a tiny CLAP to `path`."""
    import torch
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        RobertaTokenizer,
    )

    tokens = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        *_byte_chars(),
        *("".join(m) for m in _MERGES),
        "<mask>",
    ]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in _MERGES) + "\n"
    )
    tokenizer = RobertaTokenizer.from_pretrained(path, model_max_length=32)
    config = ClapConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 34,  # RoBERTa: 32 tokens after the padding index
            "pad_token_id": vocab["<pad>"],
            "bos_token_id": vocab["<s>"],
            "eos_token_id": vocab["</s>"],
            "projection_dim": TINY_CLAP_DIM,
        },
        audio_config={
            "spec_size": 128,
            "num_mel_bins": 64,
            "patch_embeds_hidden_size": 16,
            "hidden_size": 32,
            "depths": [1, 1],
            "num_attention_heads": [2, 2],
            "window_size": 4,
            "patch_stride": [4, 4],
            "patch_size": 4,
            "enable_fusion": False,
            "projection_dim": TINY_CLAP_DIM,
            "projection_hidden_size": 32,
        },
        projection_dim=TINY_CLAP_DIM,
    )
    torch.manual_seed(0)
    ClapModel(config).eval().save_pretrained(path)
    # 1 s at 48 kHz, hop 480: 101 frames, within the 128 x 2 time steps the tower takes.
    extractor = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=TINY_CLAP_RATE,
        hop_length=480,
        max_length_s=1,
        truncation="rand_trunc",
    )
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    return path
