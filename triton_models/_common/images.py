"""Images in and out of the renderer models: encoded bytes -> RGB, RGB -> PNG bytes."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError


def decode_rgb(data: bytes, name: str = "IMAGE") -> Image.Image:
    """Encoded bytes (any format Pillow reads) -> an RGB image, or ValueError naming the
    input `name` and the problem."""
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert("RGB")  # convert() forces the full decode: truncation shows here
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"cannot decode {name} ({len(data)} bytes): not an image format Pillow reads"
        ) from exc
    except Exception as exc:  # Pillow raises several types for bad bytes
        raise ValueError(f"cannot decode {name} ({len(data)} bytes): {exc}") from exc


def encode_png(image: Image.Image) -> bytes:
    """The image as PNG bytes (lossless, and the same bytes for the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def fit(image: Image.Image, side: int, multiple: int = 8) -> Image.Image:
    """Scale `image` so its longer side is `side`, keeping its aspect, each side rounded
    down to a multiple of `multiple` (at least `multiple`): what a latent diffusion model's
    VAE can encode."""
    scale = side / max(image.size)
    width, height = (max(multiple, int(n * scale) // multiple * multiple) for n in image.size)
    if (width, height) == image.size:
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)
