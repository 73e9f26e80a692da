"""VGG-19 features and the Gatys et al. style and content losses, in plain torch.

The network is torchvision's `vgg19().features` rebuilt layer for layer (no torchvision
import: it is large and only the layout is needed), so torchvision's checkpoint loads as
is: keys `features.0.weight`, `features.0.bias`, ... (its `classifier.*` are ignored). Get
it with `curl -L -o vgg19.pth https://download.pytorch.org/models/vgg19-dcbb9e9d.pth`
(torchvision's VGG19_Weights.IMAGENET1K_V1, 548 MB, BSD-3-Clause) or convert it to
.safetensors; point MILS_VGG_WEIGHTS at the file.

Losses (the definitions of the PyTorch neural-style tutorial; Gatys et al., CVPR 2016,
layers): features are the ReLU outputs (Caffe's in-place ReLU made "conv1_1" mean the
rectified response in the paper). Style: for each of relu1_1, relu2_1, relu3_1, relu4_1,
relu5_1 the Gram matrix G = F F^T / (C*H*W) of the image and of the style image; the style
loss is the sum over the five layers of the mean squared difference. Content: the mean
squared difference of relu4_2 features of the image and the content image. The MILS
objective (1000 * style + content, minimised) weighs them in the task, not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

# torchvision's vgg19 `cfg["E"]`: output channels of each 3x3 conv, "M" a 2x2 max-pool.
LAYOUT: tuple[int | str, ...] = (
    *(64, 64, "M", 128, 128, "M"),
    *(256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
)
# Indices in `features` of the ReLUs after conv1_1, conv2_1, conv3_1, conv4_1, conv5_1.
STYLE_LAYERS = (1, 6, 11, 20, 29)
CONTENT_LAYER = 22  # the ReLU after conv4_2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_HINT = (
    "download torchvision's VGG-19 checkpoint (curl -L -o vgg19.pth "
    "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth) and set MILS_VGG_WEIGHTS to it"
)


def vgg19_features() -> nn.Sequential:
    """torchvision's `vgg19().features`: same modules at the same indices."""
    layers: list[nn.Module] = []
    channels = 3
    for entry in LAYOUT:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(channels, int(entry), kernel_size=3, padding=1), nn.ReLU()]
        channels = int(entry)
    return nn.Sequential(*layers)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The `features.*` tensors of a .safetensors or torch.save file at `path`."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)  # some conversions nest it
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}


def load_features(path: str) -> nn.Sequential:
    """VGG-19 features with the weights of the file `path`, up to relu5_1 (the deepest
    layer the losses read), in eval mode without gradients; RuntimeError saying what is
    wrong with the file and how to get the right one."""
    if not path:
        raise RuntimeError(f"vgg_style: MILS_VGG_WEIGHTS is not set; {WEIGHTS_HINT}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise RuntimeError(
            f"vgg_style: MILS_VGG_WEIGHTS file {file} does not exist; {WEIGHTS_HINT}"
        )
    try:
        state = read_state(file)
    except Exception as exc:  # torch.load and safetensors raise many types
        raise RuntimeError(f"vgg_style: cannot read {file} ({exc}); {WEIGHTS_HINT}") from exc
    network = vgg19_features()
    problem = mismatch(network.state_dict(), state)
    if problem:
        raise RuntimeError(
            f"vgg_style: {file} is not a VGG-19 checkpoint in torchvision's layout "
            f"(features.0.weight, ...): {problem}; {WEIGHTS_HINT}"
        )
    network.load_state_dict(state, strict=True)
    return network[: max(STYLE_LAYERS) + 1].eval().requires_grad_(False)


def mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """What keeps `found` from loading into `expected` (keys without "features."), or ""."""
    missing = [k for k in expected if k not in found]
    shapes = [
        f"features.{k} is {tuple(found[k].shape)}, not {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    extra = [k for k in found if k not in expected]
    parts = [
        f"{len(missing)} tensors missing (features.{missing[0]}, ...)" if missing else "",
        "; ".join(shapes[:2]),
        f"{len(extra)} unexpected tensors (features.{extra[0]}, ...)" if extra else "",
    ]
    return "; ".join(part for part in parts if part)


def pixels(image: Image.Image, side: int) -> np.ndarray:
    """An RGB image as ImageNet-normalised float32 (3, side, side): squashed to a square so
    the image and its content reference compare position by position."""
    array = np.asarray(image.resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255
    array = (array - IMAGENET_MEAN) / IMAGENET_STD
    return array.transpose(2, 0, 1).astype(np.float32)


def gram(features: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, c, c) Gram matrices, divided by c*h*w."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def losses(
    network: nn.Sequential, image: torch.Tensor, content: torch.Tensor, style: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(style loss, content loss), each shape (n,), of `image` against `content` and
    `style` (each (n, 3, side, side), normalised): one forward pass over all 3n images."""
    n = image.shape[0]
    x = torch.cat([image, content, style])
    style_loss = torch.zeros(n, dtype=x.dtype, device=x.device)
    content_loss = style_loss
    for index, layer in enumerate(network):
        x = layer(x)
        if index in STYLE_LAYERS:
            grams = gram(x[:n]), gram(x[2 * n :])
            style_loss = style_loss + ((grams[0] - grams[1]) ** 2).mean(dim=(1, 2))
        if index == CONTENT_LAYER:
            content_loss = ((x[:n] - x[n : 2 * n]) ** 2).mean(dim=(1, 2, 3))
    return style_loss, content_loss
