"""Reference captions for `mils eval`: read from a file or folder, matched to a run's samples.

Two layouts are read:

- a COCO captions JSON (`{"images": [{"id", "file_name"}], "annotations": [{"image_id",
  "caption"}]}`), the format of the COCO and nocaps caption sets;
- a folder with one text file per sample, `<sample id or file stem>.txt`, one reference per
  line.

A sample matches references by its id, or by the file name (or stem) of its input, which is
how a user knows their images; the sample id is the file stem, so both usually agree. Texts
are whitespace-normalised here: the Java PTB tokenizer reads one caption per line, so a line
break inside a caption would shift every caption after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mils.engine import ConfigError

__all__ = ["References", "clean_text", "load_references", "shown"]

_SHOWN = 5
"""How many names an error or a note lists before "..."."""
_LAYOUTS = (
    'pass a COCO captions JSON ({"images": [{"id", "file_name"}], "annotations": '
    '[{"image_id", "caption"}]}) or a folder of <sample id>.txt files, one reference a line'
)


def clean_text(text: str) -> str:
    """`text` on one line with single spaces (and no `|||`, METEOR's field separator)."""
    return " ".join(text.replace("|||", " ").split())


def shown(names: Sequence[str]) -> str:
    """The first few of `names`, comma-separated, with "..." when there are more."""
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


@dataclass(frozen=True, slots=True)
class References:
    """Reference captions by name (a file name, its stem, or a text file's stem)."""

    source: Path
    by_name: dict[str, list[str]]
    """Each name -> its references, in the order read."""
    names: list[str]
    """The names as the source gives them (COCO file names, text file stems), for messages."""

    def match(self, sample_id: str, inputs: Iterable[str]) -> list[str] | None:
        """The references of a sample, by its id, then its inputs' file names and stems."""
        keys = [sample_id]
        for path in inputs:
            name = PurePosixPath(path.replace(os.sep, "/")).name
            keys += [name, name.rsplit(".", 1)[0]]
        return next((self.by_name[k] for k in keys if k in self.by_name), None)


def load_references(path: Path) -> References:
    """Read the references at `path`: a COCO captions JSON file or a folder of .txt files.

    Raises:
        ConfigError: `path` is missing, unreadable, not one of the two layouts, or holds no
            reference; the message names the file and the expected layout.
    """
    if path.is_dir():
        return _from_folder(path)
    if not path.is_file():
        raise ConfigError(f"references {path} do not exist; {_LAYOUTS}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read references {path}: {exc}; {_LAYOUTS}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"references {path} are not JSON ({exc.msg} at line {exc.lineno}); {_LAYOUTS}"
        ) from None
    return _from_coco(path, data)


def _from_coco(path: Path, data: Any) -> References:
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise ConfigError(f'references {path} have no "images" and "annotations"; {_LAYOUTS}')
    names: dict[Any, str] = {}
    for i, image in enumerate(_list(path, data, "images")):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            raise ConfigError(f'references {path}: images[{i}] has no "file_name"; {_LAYOUTS}')
        names[image.get("id")] = image["file_name"]
    captions: dict[str, list[str]] = {}
    for i, note in enumerate(_list(path, data, "annotations")):
        if not isinstance(note, dict) or not isinstance(note.get("caption"), str):
            raise ConfigError(f'references {path}: annotations[{i}] has no "caption"; {_LAYOUTS}')
        if note.get("image_id") not in names:
            raise ConfigError(
                f"references {path}: annotations[{i}] has image_id {note.get('image_id')!r}, "
                f'which no entry of "images" has as its "id"; fix the file'
            )
        if text := clean_text(note["caption"]):
            captions.setdefault(names[note["image_id"]], []).append(text)
    by_name: dict[str, list[str]] = {}
    stems: dict[str, list[list[str]]] = {}
    for file_name, texts in captions.items():
        base = PurePosixPath(file_name.replace("\\", "/")).name
        if base in by_name:
            raise ConfigError(
                f"references {path} name two images {base!r}; a sample is matched by its "
                "file name, so give every image a distinct one"
            )
        by_name[base] = texts
        stems.setdefault(base.rsplit(".", 1)[0], []).append(texts)
    # A stem ("cat" of cat.jpg) also matches, unless two files share it (cat.jpg, cat.png).
    by_name |= {stem: found[0] for stem, found in stems.items() if len(found) == 1}
    return _checked(path, by_name, list(captions))


def _list(path: Path, data: dict[str, Any], key: str) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise ConfigError(f'references {path}: "{key}" is not a list; {_LAYOUTS}')
    return value


def _from_folder(folder: Path) -> References:
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise ConfigError(f"references folder {folder} has no .txt file; {_LAYOUTS}")
    by_name: dict[str, list[str]] = {}
    for file in files:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read references {file}: {exc}; {_LAYOUTS}") from None
        if texts := [t for t in map(clean_text, lines) if t]:
            by_name[file.stem] = texts
    return _checked(folder, by_name, list(by_name))


def _checked(source: Path, by_name: Mapping[str, list[str]], names: list[str]) -> References:
    if not by_name:
        raise ConfigError(f"references {source} hold no caption; {_LAYOUTS}")
    return References(source=source, by_name=dict(by_name), names=names)
