"""The sound scorer's networks: a small CLAP-style dual encoder for the closed world of sounds.

Shared by training (`train.py` beside this file) and serving (`sound_text/1/model.py`,
`sound_audio/1/model.py`, which import this file by path), so the weights always meet the
code that made them. This folder is not a Triton model (its name starts with "_").

Text: the scene scorer's text tower class (`_scene_clip/network.py`: words embedded from
hashed character n-grams, so unseen words still embed, then a 2-layer transformer that binds
adjectives to their noun); the same code, its own weights, trained here on sound captions.
Audio: a log-mel spectrogram (computed here with torch, no parameters) read by a 1-D CNN
over time with the mel bands as channels, then mean- and max-pooled over time: the mean of an
onset detector counts beeps, the max finds a quiet source under a loud one.
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

_scene = load_network_module()
TextEncoder = _scene.TextEncoder
words = _scene.words

EMBED_DIM = 128
"""Size of the shared embedding space."""
RATE = 16_000
"""Audio is resampled to RATE Hz mono before it reaches the network."""
WINDOW = 3.0
"""Seconds the audio tower hears: shorter audio is padded with silence, longer is cut."""
SAMPLES = round(RATE * WINDOW)
N_FFT = 512
HOP = 256
MELS = 48
FRAMES = SAMPLES // HOP + 1
WEIGHTS = Path(__file__).resolve().parent / "weights.pt"


def _mel_filters() -> np.ndarray:
    """(MELS, N_FFT // 2 + 1) triangular filters, evenly spaced on the mel scale, 60-7800 Hz."""

    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(np.array(60.0)), mel(np.array(7800.0)), MELS + 2))
    freqs = np.linspace(0.0, RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def fit(samples: np.ndarray) -> np.ndarray:
    """Mono float samples at RATE -> exactly SAMPLES float32 (cut, or padded with silence)."""
    out = np.zeros(SAMPLES, np.float32)
    clip = samples[:SAMPLES]
    out[: len(clip)] = clip
    return out


class LogMel(nn.Module):
    """(N, SAMPLES) waveforms -> (N, MELS, FRAMES) log-mel power, roughly in [-2, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filters", torch.from_numpy(_mel_filters()), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, N_FFT, HOP, window=self.window, return_complex=True)
        power = spec.real**2 + spec.imag**2
        return torch.log10(self.filters @ power + 1e-4) / 2


def _block(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(cout),
        nn.ReLU(inplace=True),
    )


class AudioEncoder(nn.Module):
    """(N, SAMPLES) float32 waveforms at RATE -> EMBED_DIM vectors (not normalised)."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = LogMel()
        self.features = nn.Sequential(
            _block(MELS, 96, 5, 1),
            _block(96, 128, 5, 2),
            _block(128, 128, 5, 2),
            _block(128, 128, 3, 2),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * 128, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, EMBED_DIM),
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.embed_mel(self.mel(audio))

    def embed_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """The tower after its (parameter-free) spectrogram: training caches the mels."""
        x = self.features(mel)
        return self.head(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))


class SoundClap(nn.Module):
    """Both towers and the learned temperature of the contrastive loss."""

    def __init__(self) -> None:
        super().__init__()
        self.text = TextEncoder()
        self.audio = AudioEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text(texts), dim=-1)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio(audio), dim=-1)


def load(path: Path = WEIGHTS) -> SoundClap:
    """The trained network in eval mode, in float32 (the file stores float16)."""
    model = SoundClap()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def save(model: SoundClap, path: Path = WEIGHTS) -> None:
    """Write the weights as float16 (half the size; scores move by about 1e-3)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, path)
