"""Image inputs: read a sample's file as raw bytes, expand CLI inputs, name samples.

The engine process stays light, so nothing here decodes pixels: `ImageReader` checks that a
file exists, has a sane size and starts with the magic bytes of an accepted image format,
then hands the bytes over untouched; decoding happens inside the Triton model.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from mils.engine.errors import ConfigError, InputError

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_IMAGE_BYTES",
    "IMAGE_EXTENSIONS",
    "ImageReader",
    "TextReader",
    "bundled_samples",
    "expand_inputs",
    "image_format",
    "sample_id_for",
]

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
ACCEPTED_FORMATS = "JPEG, PNG, GIF, BMP, WEBP, TIFF"
# Enough of the header to recognise every accepted format (WEBP needs 12 bytes).
_SNIFF_BYTES = 16

# scikit-image sample images written by `bundled_samples` (all colour or grayscale, none boolean).
_BUNDLED = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


def image_format(head: bytes) -> str | None:
    """Name the image format from the first bytes of a file, or None if not accepted."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


class ImageReader:
    """Reads image files as bytes for the scorer; implements `engine.protocols.MediaReader`.

    Args:
        max_bytes: files larger than this are refused (a guard against feeding a video or a
            disk image to the scorer by mistake).
    """

    __slots__ = ("_max_bytes",)

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
        if max_bytes < 1:
            raise ConfigError(
                f"image size limit max_bytes is {max_bytes}; it must be at least 1 byte"
            )
        self._max_bytes = max_bytes

    async def read(self, source: str) -> bytes:
        """Return the bytes of the image at `source`.

        Raises:
            InputError: the file is missing, a directory, unreadable, empty, too large or
                not an accepted image format; the message names the path and the fix.
        """
        return await asyncio.to_thread(self._read_sync, source)

    def _read_sync(self, source: str) -> bytes:
        shown = repr(source)  # repr keeps odd (non-UTF-8, control-char) names printable
        try:
            data = _read_checked(Path(source), self._max_bytes)
        except FileNotFoundError:
            raise InputError(
                f"image {shown} does not exist; check the path", source=source
            ) from None
        except IsADirectoryError:
            raise InputError(
                f"image {shown} is a directory; pass the image files, or the directory "
                "as an input so its images are expanded",
                source=source,
            ) from None
        except PermissionError:
            raise InputError(
                f"image {shown} is not readable (permission denied); fix its permissions",
                source=source,
            ) from None
        except _TooLarge as exc:
            raise InputError(
                f"image {shown} is {exc.size:,} bytes, over the {self._max_bytes:,}-byte "
                "limit; downscale it or raise the image size limit",
                source=source,
            ) from None
        except OSError as exc:
            raise InputError(
                f"image {shown} cannot be read ({exc.strerror or exc}); check the file",
                source=source,
            ) from None
        if not data:
            raise InputError(
                f"image {shown} is empty (0 bytes); replace it with a real image",
                source=source,
            )
        if image_format(data[:_SNIFF_BYTES]) is None:
            raise InputError(
                f"image {shown} is not an image in an accepted format ({ACCEPTED_FORMATS}); "
                "convert it, or drop it from the inputs",
                source=source,
            )
        return data


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _read_checked(path: Path, max_bytes: int) -> bytes:
    """Read the file, checking its size on the open handle (no stat-then-open race)."""
    if path.is_dir():  # open() on a directory raises IsADirectoryError only on some systems
        raise IsADirectoryError(str(path))
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        # A FIFO or device would block open() or read forever: refuse before opening.
        raise OSError(0, "not a regular file (a pipe, socket or device)")
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise _TooLarge(size)
        # Read one byte past the limit in case the file grew after fstat.
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _TooLarge(len(data))
    return data


class TextReader:
    """A text input (a prompt to improve): the source is the text itself."""

    __slots__ = ()

    async def read(self, source: str) -> bytes:
        if not source.strip():
            raise InputError("a text input is empty; give the text itself", source=source)
        return source.encode("utf-8", errors="surrogateescape")


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Expand files, directories and glob patterns into a sorted, de-duplicated path list.

    Files named explicitly are kept whatever their extension (the reader will say if they are
    not images); directories and globs contribute only files with an image extension. Paths
    naming the same file (by its real path) count once.
    Directories are not searched recursively; use a `**` glob for that.
    A pattern matching nothing is kept as is, so the reader reports it as missing.
    """
    found: set[str] = set()
    for pattern in patterns:
        found.update(_expand_one(pattern))
    # One sample per file: "a.png", "./a.png" and a symlink to it are the same input.
    unique: dict[str, str] = {}
    for path in sorted(found):
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values())


def _expand_one(pattern: str) -> list[str]:
    path = Path(pattern)
    if path.is_dir():
        try:
            return [str(p) for p in path.iterdir() if p.is_file() and _is_image_name(p)]
        except OSError as exc:
            raise ConfigError(
                f"cannot list input directory {pattern!r} ({exc.strerror or exc}); fix its "
                "permissions or pass its images one by one"
            ) from None
    if path.exists() or not glob.has_magic(pattern):
        return [str(path)]
    matches = [Path(m) for m in glob.glob(pattern, recursive=True)]
    hits = [str(p) for p in matches if p.is_file() and _is_image_name(p)]
    return hits or [pattern]


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ID_CHARS = 100


def sample_id_for(path: str | os.PathLike[str], taken: set[str]) -> str:
    """Return a safe, unique sample id from the file name of `path`, and add it to `taken`.

    The id is the file name without directory or extension: only [A-Za-z0-9._-] survive
    (other runs become "_"), leading dots are dropped so an id is never ".", ".." or hidden,
    a name with no letter or digit becomes "sample", and a clash gets "-2", "-3", ... appended.
    """
    name = os.path.basename(os.fspath(path).replace("\\", "/").rstrip("/"))
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    base = _UNSAFE.sub("_", stem).lstrip(".")[:_MAX_ID_CHARS]
    if not re.search(r"[A-Za-z0-9]", base):
        base = "sample"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


def bundled_samples(dest_dir: str | os.PathLike[str]) -> list[Path]:
    """Write a few scikit-image sample images into `dest_dir` as PNG; return their paths.

    For demos and tests. Needs the `local` extra (scikit-image, Pillow); files already
    present are kept, so repeated calls are cheap.
    """
    try:
        import skimage.data
        from PIL import Image
    except ImportError as exc:
        raise ConfigError(
            f"bundled sample images need scikit-image and Pillow ({exc.name} is missing); "
            "pip install 'mils[local]'"
        ) from None
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in _BUNDLED:
        target = dest / f"{name}.png"
        if not target.exists():
            # Write then rename, so a concurrent reader never sees half a file.
            partial = target.with_suffix(".png.part")
            Image.fromarray(getattr(skimage.data, name)()).save(partial, format="PNG")
            partial.replace(target)
        paths.append(target)
    return paths
