"""ImageReader input errors, expand_inputs and sample_id_for, on real files in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mils.adapters.media import (
    ImageReader,
    bundled_samples,
    expand_inputs,
    image_format,
    sample_id_for,
)
from mils.engine.errors import InputError

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


async def read_error(source: str, reader: ImageReader | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        await (reader or ImageReader()).read(source)
    assert info.value.source == source
    return info.value


async def test_reads_a_valid_image_unchanged(tmp_path: Path) -> None:
    """A real PNG comes back byte for byte."""
    source = write(tmp_path / "ok.png", PNG)
    assert await ImageReader().read(source) == PNG


async def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing file is an InputError naming the path."""
    source = str(tmp_path / "nope.jpg")
    err = await read_error(source)
    assert source in str(err) and "does not exist" in str(err)


async def test_directory_is_refused(tmp_path: Path) -> None:
    """A directory is refused with a hint to pass it as an input to expand."""
    err = await read_error(str(tmp_path))
    assert "is a directory" in str(err)


async def test_permission_error_is_translated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES from open() becomes an InputError, also when tests run as root."""
    source = write(tmp_path / "locked.png", PNG)

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", deny)
    err = await read_error(source)
    assert "permission denied" in str(err) and source in str(err)


async def test_empty_file_is_refused(tmp_path: Path) -> None:
    """A zero-byte file is refused."""
    err = await read_error(write(tmp_path / "empty.png", b""))
    assert "empty (0 bytes)" in str(err)


async def test_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    """A file larger than max_bytes is refused, naming both sizes."""
    source = write(tmp_path / "big.png", PNG + b"\x00" * 100)
    err = await read_error(source, ImageReader(max_bytes=64))
    assert "over the 64-byte limit" in str(err)


async def test_file_at_the_limit_is_read(tmp_path: Path) -> None:
    """Exactly max_bytes is still accepted."""
    data = PNG + b"\x00" * (64 - len(PNG))
    assert await ImageReader(max_bytes=64).read(write(tmp_path / "edge.png", data)) == data


async def test_non_image_names_the_accepted_formats(tmp_path: Path) -> None:
    """A text file with an image extension is refused, listing accepted formats."""
    err = await read_error(write(tmp_path / "notes.jpg", b"hello, not an image"))
    assert "JPEG, PNG, GIF, BMP, WEBP, TIFF" in str(err)


async def test_odd_file_name_is_read_and_named(tmp_path: Path) -> None:
    """A non-UTF-8, space-holding file name works, and errors show it printably."""
    odd = os.fsdecode(b"caf\xe9 photo\xff.png")  # Latin-1 bytes: not valid UTF-8
    good = write(tmp_path / odd, JPEG)
    assert await ImageReader().read(good) == JPEG
    bad = write(tmp_path / os.fsdecode(b"bad\xfe.png"), b"GIF00")
    err = await read_error(bad)
    assert "\\udcfe" in str(err)  # shown escaped, so the message stays valid text
    str(err).encode("utf-8")


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (JPEG, "JPEG"),
        (PNG, "PNG"),
        (b"GIF89a....", "GIF"),
        (b"BM......", "BMP"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"II*\x00....", "TIFF"),
        (b"MM\x00*....", "TIFF"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"%PDF-1.7", None),
    ],
)
def test_image_format_by_magic_bytes(head: bytes, fmt: str | None) -> None:
    """Each accepted format is recognised by its magic bytes; look-alikes are not."""
    assert image_format(head) == fmt


def test_expand_directory_is_non_recursive_and_filters_by_extension(tmp_path: Path) -> None:
    """A directory yields its image files only, not subdirectories' files."""
    for name in ("b.PNG", "a.jpg", "notes.txt"):
        write(tmp_path / name, PNG)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "c.png", PNG)
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.PNG")]


def test_expand_globs_files_and_duplicates(tmp_path: Path) -> None:
    """Globs, explicit files and repeats merge into one sorted, de-duplicated list."""
    for name in ("x.png", "y.webp", "z.txt"):
        write(tmp_path / name, PNG)
    got = expand_inputs(
        [str(tmp_path / "*"), str(tmp_path / "x.png"), str(tmp_path), str(tmp_path / "z.txt")]
    )
    assert got == [str(tmp_path / n) for n in ("x.png", "y.webp", "z.txt")]


def test_expand_recursive_glob(tmp_path: Path) -> None:
    """A ** glob reaches into subdirectories."""
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "c.png", PNG)
    assert expand_inputs([str(tmp_path / "**" / "*.png")]) == [str(tmp_path / "sub" / "c.png")]


def test_expand_keeps_unmatched_inputs_for_the_reader_to_report(tmp_path: Path) -> None:
    """A missing file or an empty glob is kept so the run reports it rather than drops it."""
    missing, empty_glob = str(tmp_path / "gone.png"), str(tmp_path / "*.gif")
    assert expand_inputs([missing, empty_glob]) == sorted([missing, empty_glob])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("photos/cat.jpg", "cat"),
        ("../x", "x"),
        ("a/b", "b"),
        ("..", "sample"),
        (".", "sample"),
        ("/", "sample"),
        (".hidden.png", "hidden"),
        ("my photo (1).jpeg", "my_photo_1_"),
        ("a\\..\\evil.png", "evil"),
        (os.fsdecode(b"caf\xe9.png"), "caf_"),
        ("日本.jpg", "sample"),
    ],
)
def test_sample_id_is_safe(path: str, expected: str) -> None:
    """Ids keep only [A-Za-z0-9._-], never contain separators, and are never . or .."""
    sample_id = sample_id_for(path, set())
    assert sample_id == expected
    assert "/" not in sample_id and "\\" not in sample_id
    assert sample_id not in (".", "..") and not sample_id.startswith(".")


def test_sample_id_collisions_get_suffixes() -> None:
    """Clashing names get -2, -3, ... and every id is recorded in `taken`."""
    taken: set[str] = set()
    ids = [sample_id_for(p, taken) for p in ("a/cat.png", "b/cat.jpg", "cat", "cat-2.png")]
    assert ids == ["cat", "cat-2", "cat-3", "cat-2-2"]
    assert taken == set(ids)


async def test_bundled_samples_are_readable_images(tmp_path: Path) -> None:
    """The bundled scikit-image samples are written once and pass the reader."""
    paths = bundled_samples(tmp_path)
    assert len(paths) >= 4 and all(p.parent == tmp_path for p in paths)
    for path in paths:
        assert image_format(await ImageReader().read(str(path))) == "PNG"
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert [p.stat().st_mtime_ns for p in bundled_samples(tmp_path)] == mtimes
