"""Build tiny randomly initialised diffusers pipelines and a random VGG-19 checkpoint.

Exercises the real loading paths of `triton_models/sd_render`, `pix2pix_edit` and
`vgg_style` without downloading weights: a Stable Diffusion and an InstructPix2Pix pipeline
(a 2-level 32/64-channel UNet, a 2-block VAE, a 2-layer 32-wide CLIP text encoder on the tiny
CLIP's hand-written BPE vocabulary from tests/tiny_clip.py, a DDIM scheduler) saved with
`save_pretrained`, and a VGG-19 `features` state dict of the real shape (torchvision's key
layout, so real weights load through the same code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiny_clip import write_tiny_bpe

TINY_SD_SIDE = 32
# CLIPTokenizer needs a model_max_length for padding; the pipelines pad every prompt to it.
TINY_SD_MAX_TOKENS = 77
# torchvision's vgg19 `cfg["E"]`: output channels of each conv, "M" a 2x2 max-pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", *(256,) * 4, "M", *(512,) * 4, "M", *(512,) * 4, "M")


def _components(in_channels: int, tokenizer: Any) -> dict[str, object]:
    """The modules and scheduler of a tiny Stable Diffusion (random weights, seed 0)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=TINY_SD_SIDE // 4,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_SD_SIDE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TINY_SD_MAX_TOKENS,
        )
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def _tokenizer(path: Path) -> Any:
    """The tiny CLIP BPE tokenizer, written to `path/tokenizer` and loaded back."""
    from transformers import CLIPTokenizer

    folder = path / "tokenizer"
    write_tiny_bpe(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=TINY_SD_MAX_TOKENS)


def _build(path: Path, pipeline_class: str, in_channels: int) -> Path:
    import diffusers

    tokenizer = _tokenizer(path)
    pipeline = getattr(diffusers, pipeline_class)(
        **_components(in_channels, tokenizer),
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)
    return path


def build_tiny_sd(path: Path) -> Path:
    """A tiny random StableDiffusionPipeline folder (from_pretrained-loadable) at `path`."""
    return _build(path, "StableDiffusionPipeline", in_channels=4)


def build_tiny_pix2pix(path: Path) -> Path:
    """A tiny random StableDiffusionInstructPix2PixPipeline folder at `path`: its UNet reads
    the noisy latents and the input image's latents side by side (8 channels)."""
    return _build(path, "StableDiffusionInstructPix2PixPipeline", in_channels=8)


def vgg19_features_state_dict(seed: int = 0) -> dict[str, object]:
    """Random weights for VGG-19's `features` with torchvision's keys (`features.0.weight`,
    ...) and shapes: what `torchvision.models.vgg19(weights=...)` checkpoints hold (their
    `classifier.*` entries left out: the losses never read them). About 80 MB of float32."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state: dict[str, object] = {}
    index, channels = 0, 3
    for entry in VGG19_LAYOUT:
        if entry == "M":
            index += 1
            continue
        out = int(entry)
        fan_in = channels * 9
        weight = torch.randn(out, channels, 3, 3, generator=generator) * (2.0 / fan_in) ** 0.5
        state[f"features.{index}.weight"] = weight
        state[f"features.{index}.bias"] = torch.zeros(out)
        index, channels = index + 2, out  # conv, then its ReLU
    return state


def write_vgg19_weights(path: Path) -> Path:
    """Save the random VGG-19 features to `path` (.pth: torch.save; .safetensors too)."""
    import torch

    state = vgg19_features_state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))  # type: ignore[arg-type]
    else:
        torch.save(state, path)
    return path
