"""The scene scorer's networks: a small CLIP-style dual encoder for the closed world of scenes.

Shared by training (`train.py` beside this file) and serving (`scene_text/1/model.py`,
`scene_image/1/model.py`, which import this file by path), so the weights always meet the
code that made them. This folder is not a Triton model (its name starts with "_"; the
server loads models explicitly by name).

Text: every word becomes the mean of its hashed character 3-, 4- and 5-grams (plus the whole
word), fastText-style, so a word never seen in training still gets a vector from its pieces
and no text can fail to embed; a 2-layer transformer then reads the words in order, which is
what tells "a red circle and a blue square" from "a blue circle and a red square".
Image: a 4-layer CNN whose head keeps the 8x8 spatial layout (a flatten, not a global pool),
because where an object is matters as much as what it is.
"""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.nn import functional as F

EMBED_DIM = 128
"""Size of the shared embedding space."""
WIDTH = 128
BUCKETS = 1 << 14
"""Hash buckets for character n-grams (0 is padding)."""
NGRAMS = (3, 4, 5)
MAX_WORDS = 48
"""Longer texts are cut: scene captions are short, and a cap bounds the cost of junk."""
SIDE = 64
"""Images are resized to SIDE x SIDE."""
WEIGHTS = Path(__file__).resolve().parent / "weights.pt"

_WORD = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def words(text: str, limit: int = MAX_WORDS) -> list[str]:
    """Lower-cased words, numbers and punctuation marks of `text` (at most `limit`)."""
    return _WORD.findall(text.lower())[:limit]


def ngram_ids(word: str) -> list[int]:
    """Hash bucket ids (1..BUCKETS-1) of the word itself and of its character n-grams."""
    marked = f"<{word}>"
    grams = [marked] + [marked[i : i + n] for n in NGRAMS for i in range(len(marked) - n + 1)]
    return [1 + zlib.crc32(g.encode()) % (BUCKETS - 1) for g in grams[:64]]


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> (SIDE, SIDE, 3) uint8 RGB, or ValueError naming the problem."""
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")  # convert() forces the full decode
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"cannot decode IMAGE ({len(data)} bytes): not an image format Pillow reads"
        ) from exc
    except Exception as exc:  # Pillow raises several types for bad bytes
        raise ValueError(f"cannot decode IMAGE ({len(data)} bytes): {exc}") from exc
    if image.size != (SIDE, SIDE):
        image = image.resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)


class TextEncoder(nn.Module):
    """Texts -> EMBED_DIM vectors (not normalised), reading at most `max_words` words (the
    video scorer, `_motion_clip`, reads longer captions with this same tower)."""

    def __init__(self, max_words: int = MAX_WORDS) -> None:
        super().__init__()
        self.max_words = max_words
        self.grams = nn.EmbeddingBag(BUCKETS, WIDTH, mode="mean", padding_idx=0)
        self.cls = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.position = nn.Parameter(torch.randn(1, max_words + 1, WIDTH) * 0.02)
        layer = nn.TransformerEncoderLayer(
            WIDTH,
            nhead=4,
            dim_feedforward=2 * WIDTH,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.project = nn.Linear(WIDTH, EMBED_DIM)

    def forward(self, texts: list[str]) -> torch.Tensor:
        tokenised = [words(t, self.max_words) or ["<empty>"] for t in texts]
        vocab = sorted({w for ws in tokenised for w in ws})
        index = {w: i for i, w in enumerate(vocab)}
        ids = [ngram_ids(w) for w in vocab]  # each unique word of the batch embedded once
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
        offsets = torch.tensor(np.cumsum([0] + [len(r) for r in ids[:-1]]), dtype=torch.long)
        vectors = self.grams(flat, offsets)
        longest = max(len(ws) for ws in tokenised)
        slots = torch.zeros(len(texts), longest, dtype=torch.long)
        pad = torch.ones(len(texts), longest + 1, dtype=torch.bool)
        for row, ws in enumerate(tokenised):
            slots[row, : len(ws)] = torch.tensor([index[w] for w in ws])
            pad[row, : len(ws) + 1] = False
        x = torch.cat([self.cls.expand(len(texts), 1, WIDTH), vectors[slots]], dim=1)
        x = self.transformer(x + self.position[:, : longest + 1], src_key_padding_mask=pad)
        return self.project(self.norm(x[:, 0]))


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ImageEncoder(nn.Module):
    """(N, SIDE, SIDE, 3) uint8 images -> EMBED_DIM vectors (not normalised)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, 32, 2),  # 32x32
            _block(32, 64, 2),  # 16x16
            _block(64, 96, 1),
            _block(96, 128, 2),  # 8x8
            nn.Conv2d(128, 32, 1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, EMBED_DIM),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(_scaled(pixels)))

    def feature_maps(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The four conv blocks' outputs, (N, C, H, W) each: 32x32x32, 16x16x64, 16x16x96 and
        8x8x128, what the style and content losses (`scene_style`) compare. The embedding
        (`forward`) goes on from the last of them."""
        maps, x = [], _scaled(pixels)
        for block in self.features[:4]:
            x = block(x)
            maps.append(x)
        return maps


def _scaled(pixels: torch.Tensor) -> torch.Tensor:
    """(N, SIDE, SIDE, 3) uint8 -> (N, 3, SIDE, SIDE) floats in [-1, 1]."""
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class SceneClip(nn.Module):
    """Both towers and the learned temperature of the contrastive loss."""

    def __init__(self) -> None:
        super().__init__()
        self.text = TextEncoder()
        self.image = ImageEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text(texts), dim=-1)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pixels), dim=-1)


def load(path: Path = WEIGHTS) -> SceneClip:
    """The trained network in eval mode, in float32 (the file stores float16)."""
    model = SceneClip()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def save(model: SceneClip, path: Path = WEIGHTS) -> None:
    """Write the weights as float16 (half the size; scores move by about 1e-3)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, path)
