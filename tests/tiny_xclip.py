"""Build a tiny randomly initialised X-CLIP model folder, loadable with from_pretrained.

Exercises the real loading path of `triton_models/xclip_*` without downloading weights: the
tiny CLIP's hand-written BPE vocabulary (tests/tiny_clip.py) for the tokenizer, 2-layer
32-wide towers, 4 frames of 32 px, a VideoMAE image processor, saved as an XCLIPProcessor.
"""

from __future__ import annotations

from pathlib import Path

from tiny_clip import TINY_MAX_LENGTH, write_tiny_bpe

TINY_XCLIP_FRAMES = 4
TINY_XCLIP_SIDE = 32
TINY_XCLIP_PROJECTION_DIM = 16


def build_tiny_xclip(path: Path) -> Path:
    """Write config, weights, tokenizer and processor of a tiny X-CLIP to `path`."""
    import torch
    from transformers import (
        CLIPTokenizer,
        VideoMAEImageProcessor,
        XCLIPConfig,
        XCLIPModel,
        XCLIPProcessor,
    )

    vocab = write_tiny_bpe(path)
    tokenizer = CLIPTokenizer.from_pretrained(path, model_max_length=TINY_MAX_LENGTH)
    config = XCLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": TINY_MAX_LENGTH,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mit_hidden_size": 16,
            "mit_intermediate_size": 32,
            "mit_num_attention_heads": 2,
            "image_size": TINY_XCLIP_SIDE,
            "patch_size": 8,
            "num_frames": TINY_XCLIP_FRAMES,
        },
        projection_dim=TINY_XCLIP_PROJECTION_DIM,
        prompt_layers=1,
        prompt_num_attention_heads=2,
    )
    torch.manual_seed(0)
    XCLIPModel(config).eval().save_pretrained(path)
    side = TINY_XCLIP_SIDE
    processor = VideoMAEImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    XCLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return path
