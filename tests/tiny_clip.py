"""Build a tiny randomly initialised CLIP model folder, loadable with from_pretrained.

Exercises the real loading path of `triton_models/clip_*` without downloading weights:
a hand-written byte-level BPE vocabulary (every byte, with and without "</w>", plus a few
merges) for CLIPTokenizer, 2-layer 32-wide towers, 32 px images.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_MAX_LENGTH = 16
TINY_IMAGE_SIDE = 32
TINY_PROJECTION_DIM = 16
_MERGES = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]


def _byte_chars() -> list[str]:
    """GPT-2/CLIP bytes_to_unicode: the 256 printable stand-ins for raw bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


def write_tiny_bpe(path: Path) -> dict[str, int]:
    """Write the tiny byte-level BPE vocabulary (vocab.json, merges.txt) of CLIPTokenizer
    into `path`; token -> id."""
    chars = _byte_chars()
    tokens = [
        "<|startoftext|>",
        "<|endoftext|>",
        *chars,
        *(c + "</w>" for c in chars),
        *("".join(m) for m in _MERGES),
    ]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in _MERGES) + "\n"
    )
    return vocab


def build_tiny_clip(path: Path) -> Path:
    """Write config, weights, tokenizer and image processor of a tiny CLIP to `path`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = write_tiny_bpe(path)
    # from_pretrained reads vocab.json/merges.txt in transformers 4.x and 5.x alike (the
    # constructors' arguments differ between them).
    tokenizer = CLIPTokenizer.from_pretrained(path, model_max_length=TINY_MAX_LENGTH)
    special = {
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": TINY_MAX_LENGTH,
            **special,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIDE,
            "patch_size": 8,
        },
        projection_dim=TINY_PROJECTION_DIM,
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    side = TINY_IMAGE_SIDE
    CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(path)
    return path
