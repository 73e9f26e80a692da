"""Samples of the generation tasks from the command line: prompt files, image pairs.

A prompt file is a .txt (one prompt per line) or a .csv (a "prompt" column, else the first);
image pairs come as CONTENT STYLE arguments or a CSV of content,style paths (relative to it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from mils.adapters import sample_id_for
from mils.engine import ConfigError
from mils.engine.scheduler import Sample

__all__ = ["image_pairs", "prompt_samples"]


def prompt_samples(files: Sequence[Path], prompts: Sequence[str]) -> list[Sample]:
    """One sample per prompt: `{file stem}-{line}` for a file's, `prompt-{n}` for the others.

    Raises:
        ConfigError: a file cannot be read or holds no prompt, or there is no prompt at all.
    """
    samples: list[Sample] = []
    taken: set[str] = set()
    for path in files:
        texts = _prompts_in(path)
        if not texts:
            raise ConfigError(
                f"{path} holds no prompts; write one prompt per line (.txt) or a prompt "
                "column (.csv)"
            )
        stem = _stem(path)
        samples += [
            Sample(sample_id_for(f"{stem}-{n}", taken), {"prompt": text}) for n, text in texts
        ]
    for n, text in enumerate(prompts, 1):
        if not text.strip():
            raise ConfigError(f"--prompt number {n} is empty; give it the prompt to improve")
        samples.append(Sample(sample_id_for(f"prompt-{n}", taken), {"prompt": text.strip()}))
    if not samples:
        raise ConfigError("no prompts; pass prompt files (.txt, .csv) or --prompt TEXT")
    return samples


def _stem(path: Path) -> str:
    """The file's id part, without dots (a later id would lose what follows one)."""
    return sample_id_for(path, set()).replace(".", "_")


def _prompts_in(path: Path) -> list[tuple[int, str]]:
    """(line or row number, prompt) of a .txt or .csv file; blank ones skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the prompt file {path} ({reason}); pass a UTF-8 .txt or .csv file"
        ) from None
    if path.suffix.lower() != ".csv":
        return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = header.index("prompt") if "prompt" in header else 0
    body = rows[1:] if "prompt" in header else rows
    first = 2 if "prompt" in header else 1
    return [
        (n, row[column].strip())
        for n, row in enumerate(body, first)
        if len(row) > column and row[column].strip()
    ]


def image_pairs(images: Sequence[Path], pairs_file: Path | None) -> list[Sample]:
    """One sample per (content, style) pair, with an id from both file names.

    Raises:
        ConfigError: an odd number of images, an unreadable or malformed pairs file, or
            no pair at all.
    """
    if len(images) % 2:
        raise ConfigError(
            f"{len(images)} images given; pass them in CONTENT STYLE pairs ({images[-1]} "
            "has no style image)"
        )
    pairs = [(images[i], images[i + 1]) for i in range(0, len(images), 2)]
    if pairs_file is not None:
        pairs += _pairs_in(pairs_file)
    if not pairs:
        raise ConfigError("no images; pass CONTENT STYLE image pairs or --pairs FILE")
    taken: set[str] = set()
    return [
        Sample(
            sample_id_for(f"{_stem(c)}-{_stem(s)}", taken),
            {"content": str(c), "style": str(s)},
        )
        for c, s in pairs
    ]


def _pairs_in(path: Path) -> list[tuple[Path, Path]]:
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the pairs file {path} ({reason}); pass --pairs") from None
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["content", "style"]:
        rows = rows[1:]
    pairs = []
    for n, row in enumerate(rows, 1):
        cells = [cell.strip() for cell in row if cell.strip()]
        if not cells:
            continue
        if len(cells) != 2:
            raise ConfigError(
                f"{path} row {n} has {len(cells)} values; each row is content,style (two paths)"
            )
        pairs.append((path.parent / cells[0], path.parent / cells[1]))
    if not pairs:
        raise ConfigError(f"{path} holds no pairs; write rows of content,style image paths")
    return pairs
