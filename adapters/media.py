"""Media inputs: read a sample's file as raw bytes, expand CLI inputs, name samples.

The engine process stays light, so nothing here decodes pixels or samples: a reader
(`ImageReader`, `VideoReader`, `AudioReader`) checks that a file exists, has a sane size
and starts with the magic bytes of an accepted format of its kind, then hands the bytes
over untouched; decoding (and limits on a clip's length) happen inside the Triton model.
`media_kind` tells which kind a file is, from its name or else its first bytes, so a run
can pick its task from its inputs.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mils.engine.errors import ConfigError, InputError

__all__ = [
    "ACCEPTED_FORMATS",
    "AUDIO",
    "DEFAULT_MAX_IMAGE_BYTES",
    "IMAGE",
    "IMAGE_EXTENSIONS",
    "MEDIA_KINDS",
    "VIDEO",
    "AudioReader",
    "ImageReader",
    "MediaFileReader",
    "MediaKind",
    "TextReader",
    "VideoReader",
    "audio_format",
    "bundled_samples",
    "expand_inputs",
    "image_format",
    "media_kind",
    "sample_id_for",
    "video_format",
]

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_AUDIO_BYTES = 200 * 1024 * 1024
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


def video_format(head: bytes) -> str | None:
    """Name the video container from the first bytes of a file, or None if not accepted."""
    if head[4:8] == b"ftyp":
        return "MP4"  # also QuickTime (.mov) and M4V: the same ISO base media container
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska"  # .mkv and .webm
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    return None


def audio_format(head: bytes) -> str | None:
    """Name the audio format from the first bytes of a file, or None if not accepted."""
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "WAV"
    if head.startswith(b"fLaC"):
        return "FLAC"
    if head.startswith(b"OggS"):
        return "Ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


@dataclass(frozen=True, slots=True)
class MediaKind:
    """What a reader accepts: its formats by name and by first bytes, and a size limit."""

    name: str
    """The input kind it reads ("image", "video", "audio")."""
    noun: str
    """How messages call one file ("image", "video", "audio file")."""
    extensions: frozenset[str]
    sniff: Callable[[bytes], str | None]
    accepted: str
    """The accepted formats, for messages."""
    max_bytes: int
    shrink: str
    """What to do with a file over the size limit."""


IMAGE = MediaKind(
    name="image",
    noun="image",
    extensions=IMAGE_EXTENSIONS,
    sniff=image_format,
    accepted=ACCEPTED_FORMATS,
    max_bytes=DEFAULT_MAX_IMAGE_BYTES,
    shrink="downscale it or raise the image size limit",
)
VIDEO = MediaKind(
    name="video",
    noun="video",
    extensions=frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif"}),
    sniff=video_format,
    accepted="MP4/MOV, WEBM/MKV, AVI, GIF",
    max_bytes=DEFAULT_MAX_VIDEO_BYTES,
    shrink="cut the clip you want captioned out of it, or raise the video size limit",
)
AUDIO = MediaKind(
    name="audio",
    noun="audio file",
    extensions=frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"}),
    sniff=audio_format,
    accepted="WAV, FLAC, Ogg, MP3",
    max_bytes=DEFAULT_MAX_AUDIO_BYTES,
    shrink="cut the part you want captioned out of it, or raise the audio size limit",
)
MEDIA_KINDS: tuple[MediaKind, ...] = (IMAGE, VIDEO, AUDIO)


def media_kind(path: str | os.PathLike[str]) -> MediaKind | None:
    """The kind of media file `path` is: by its extension (a .gif is an image), else by its
    first bytes; None when neither says (a missing or unknown file)."""
    suffix = Path(path).suffix.lower()
    for kind in MEDIA_KINDS:
        if suffix in kind.extensions:
            return kind
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return None
    return next((kind for kind in MEDIA_KINDS if kind.sniff(head)), None)


class MediaFileReader:
    """Reads media files of one kind as bytes for the scorer; implements
    `engine.protocols.MediaReader`.

    Args:
        kind: what it accepts (`IMAGE`, `VIDEO`, `AUDIO`).
        max_bytes: files larger than this are refused; default the kind's limit (a guard
            against feeding a disk image, or hours of footage, to the scorer by mistake).
    """

    __slots__ = ("_kind", "_max_bytes")

    def __init__(self, kind: MediaKind, *, max_bytes: int | None = None) -> None:
        max_bytes = kind.max_bytes if max_bytes is None else max_bytes
        if max_bytes < 1:
            raise ConfigError(
                f"{kind.name} size limit max_bytes is {max_bytes}; it must be at least 1 byte"
            )
        self._kind, self._max_bytes = kind, max_bytes

    async def read(self, source: str) -> bytes:
        """Return the bytes of the file at `source`.

        Raises:
            InputError: the file is missing, a directory, unreadable, empty, too large or
                not in an accepted format; the message names the path and the fix.
        """
        return await asyncio.to_thread(self._read_sync, source)

    def _read_sync(self, source: str) -> bytes:
        kind, what = self._kind, self._kind.noun
        shown = f"{what} {source!r}"  # repr keeps odd (non-UTF-8, control-char) names printable
        try:
            data = _read_checked(Path(source), self._max_bytes)
        except FileNotFoundError:
            raise InputError(f"{shown} does not exist; check the path", source=source) from None
        except IsADirectoryError:
            raise InputError(
                f"{shown} is a directory; pass the {what}s, or the directory as an input "
                f"so its {kind.name} files are expanded",
                source=source,
            ) from None
        except PermissionError:
            raise InputError(
                f"{shown} is not readable (permission denied); fix its permissions",
                source=source,
            ) from None
        except _TooLarge as exc:
            raise InputError(
                f"{shown} is {exc.size:,} bytes, over the {self._max_bytes:,}-byte "
                f"limit; {kind.shrink}",
                source=source,
            ) from None
        except OSError as exc:
            raise InputError(
                f"{shown} cannot be read ({exc.strerror or exc}); check the file",
                source=source,
            ) from None
        if not data:
            raise InputError(
                f"{shown} is empty (0 bytes); replace it with a real {what}", source=source
            )
        if kind.sniff(data[:_SNIFF_BYTES]) is None:
            raise InputError(
                f"{shown} is not {_a(kind.name)} {kind.name} file in an accepted format "
                f"({kind.accepted}); convert it, or drop it from the inputs",
                source=source,
            )
        return data


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class ImageReader(MediaFileReader):
    """Reads image files (`IMAGE`)."""

    __slots__ = ()

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
        super().__init__(IMAGE, max_bytes=max_bytes)


class VideoReader(MediaFileReader):
    """Reads video files (`VIDEO`): the container is checked here, its frames in Triton."""

    __slots__ = ()

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_VIDEO_BYTES) -> None:
        super().__init__(VIDEO, max_bytes=max_bytes)


class AudioReader(MediaFileReader):
    """Reads audio files (`AUDIO`): the format is checked here, the samples in Triton."""

    __slots__ = ()

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_AUDIO_BYTES) -> None:
        super().__init__(AUDIO, max_bytes=max_bytes)


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


def expand_inputs(patterns: Sequence[str], kinds: Sequence[MediaKind] = MEDIA_KINDS) -> list[str]:
    """Expand files, directories and glob patterns into a sorted, de-duplicated path list.

    Files named explicitly are kept whatever their extension (the reader will say if they are
    not of its kind); directories and globs contribute only files with an extension of one
    of `kinds` (by default any image, video or audio file). Paths naming the same file (by
    its real path) count once.
    Directories are not searched recursively; use a `**` glob for that.
    A pattern matching nothing is kept as is, so the reader reports it as missing.
    """
    extensions = frozenset().union(*(kind.extensions for kind in kinds))
    found: set[str] = set()
    for pattern in patterns:
        found.update(_expand_one(pattern, extensions))
    # One sample per file: "a.png", "./a.png" and a symlink to it are the same input.
    unique: dict[str, str] = {}
    for path in sorted(found):
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values())


def _expand_one(pattern: str, extensions: frozenset[str]) -> list[str]:
    path = Path(pattern)
    if path.is_dir():
        try:
            return [
                str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions
            ]
        except OSError as exc:
            raise ConfigError(
                f"cannot list input directory {pattern!r} ({exc.strerror or exc}); fix its "
                "permissions or pass its files one by one"
            ) from None
    if path.exists() or not glob.has_magic(pattern):
        return [str(path)]
    matches = [Path(m) for m in glob.glob(pattern, recursive=True)]
    hits = [str(p) for p in matches if p.is_file() and p.suffix.lower() in extensions]
    return hits or [pattern]


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
