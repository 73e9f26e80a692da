"""The video scorer's networks: a small CLIP-style video-text dual encoder for moving scenes.

Shared by training (`train.py` beside this file) and serving (`motion_text/1/model.py`,
`motion_video/1/model.py`, which load this file by path), so the weights always meet the
code that made them. This folder is not a Triton model (its name starts with "_").

Text: the scene scorer's text tower (`_scene_clip/network.py`, loaded from there: hashed
character n-grams, then a 2-layer transformer), reading up to MAX_WORDS words, since a clip
of three moving objects takes longer to say than a still scene.
Video: what is in the clip from the frames stacked as channels of one image (early fusion,
a CNN like the scene image tower's), and how it moves from the centres of mass of per-frame
feature maps followed over time (see `VideoEncoder`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common.scene_network import load_network_module
from _common.video import DEFAULT_MAX_SECONDS, decode_video, sample_indices

scene_network = load_network_module()

EMBED_DIM = 128
"""Size of the shared embedding space."""
MAX_WORDS = 64
FRAMES = 8
"""Frames the video tower sees, sampled evenly over the clip."""
SIDE = 64
"""Frames are resized to SIDE x SIDE."""
POINTS = 32
"""Feature maps per frame whose centres of mass the video tower follows over time."""
WEIGHTS = Path(__file__).resolve().parent / "weights.pt"


def clip_frames(total: int) -> list[int]:
    """Which of a clip's `total` frames the video tower sees (as the server samples them)."""
    return sample_indices(total, FRAMES)


def decode_clip(data: bytes, limit: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Encoded video bytes -> (FRAMES, SIDE, SIDE, 3) uint8 RGB, or ValueError naming the
    problem (see `_common/video.py`)."""
    return np.stack(decode_video(data, FRAMES, size=(SIDE, SIDE), limit=limit))


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class VideoEncoder(nn.Module):
    """(N, FRAMES, SIDE, SIDE, 3) uint8 clips -> EMBED_DIM vectors (not normalised).

    Two paths. What: early fusion, the FRAMES frames stacked as channels of one image, into
    a CNN like the scene image tower's (its head keeps the 8x8 layout). Where, per frame: a
    shallow CNN makes POINTS feature maps of each frame, each read as the centre of mass of
    its activation and its total (a spatial soft-argmax); how those centres move from frame
    to frame is the motion (direction, speed), and how the totals change is what appears or
    disappears. Convolutions alone see motion only within their small receptive fields,
    while a slow object travels 12 px over a clip and a fast one 30: measured here, a CNN
    with the frames stacked learned no direction at all in 900 steps.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3 * FRAMES, 48, 2),  # 32x32
            _block(48, 64, 2),  # 16x16
            _block(64, 96, 2),  # 8x8
            nn.Conv2d(96, 32, 1),
            nn.ReLU(inplace=True),
        )
        self.points = nn.Sequential(
            _block(3, 32, 2),  # 32x32
            nn.AvgPool2d(2),  # 16x16: centres of mass stay sub-pixel; a quarter of the work
            nn.Conv2d(32, POINTS, 1),
            nn.Softplus(),
        )
        grid = torch.linspace(-1.0, 1.0, SIDE // 4)
        self.register_buffer("grid_x", grid.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("grid_y", grid.view(1, 1, -1, 1), persistent=False)
        self.head = nn.Sequential(
            nn.Linear(32 * 8 * 8 + FRAMES * POINTS * 3, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, EMBED_DIM),
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t, h, w, c = clips.shape
        x = clips.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (n, t, c, h, w)
        what = self.features(x.reshape(n, t * c, h, w)).flatten(1)
        maps = self.points(x.reshape(n * t, c, h, w))  # (n*t, POINTS, h/4, w/4), positive
        mass = maps.sum(dim=(2, 3)) + 1e-4
        cx = (maps * self.grid_x).sum(dim=(2, 3)) / mass
        cy = (maps * self.grid_y).sum(dim=(2, 3)) / mass
        where = torch.stack([cx, cy, maps.mean(dim=(2, 3))], dim=-1).reshape(n, -1)
        return self.head(torch.cat([what, where], dim=1))


class MotionClip(nn.Module):
    """Both towers and the learned temperature of the contrastive loss."""

    def __init__(self) -> None:
        super().__init__()
        self.text = scene_network.TextEncoder(max_words=MAX_WORDS)
        self.video = VideoEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text(texts), dim=-1)

    def embed_videos(self, clips: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.video(clips), dim=-1)


def load(path: Path = WEIGHTS) -> MotionClip:
    """The trained network in eval mode, in float32 (the file stores float16)."""
    model = MotionClip()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def save(model: MotionClip, path: Path = WEIGHTS) -> None:
    """Write the weights as float16 (half the size; scores move by about 1e-3)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, path)
