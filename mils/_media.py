"""Which captioning task a run's input files call for, when the caller names none."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mils.adapters.media import MEDIA_KINDS, MediaKind, media_kind
from mils.engine import ConfigError
from mils.tasks import AUDIO_CAPTION, IMAGE_CAPTION, VIDEO_CAPTION, Task

__all__ = ["CAPTION_TASKS", "media_kinds", "task_for_files"]

CAPTION_TASKS: dict[str, Task] = {
    "image": IMAGE_CAPTION,
    "video": VIDEO_CAPTION,
    "audio": AUDIO_CAPTION,
}
"""The captioning task of each kind of media file."""


def media_kinds(task: Task) -> list[MediaKind]:
    """The kinds of media files `task` reads (what a directory given to it contributes)."""
    read = {spec.kind.value for spec in task.inputs}
    return [kind for kind in MEDIA_KINDS if kind.name in read]


def task_for_files(paths: Sequence[str]) -> tuple[Task, str]:
    """The captioning task for `paths` and why (for the log), from each file's kind (its
    extension, else its first bytes). Files of no known kind count as images, whose reader
    then says what is wrong with them.

    Raises:
        ConfigError: the files are of several kinds (one run captions one kind).
    """
    kinds = Counter(kind.name if (kind := media_kind(p)) else "image" for p in paths)
    if len(kinds) > 1:
        counts = ", ".join(f"{n} {name}" for name, n in sorted(kinds.items()))
        raise ConfigError(
            f"the inputs mix kinds of media ({counts} files); a run captions one kind: "
            "run each kind on its own, or pass `task` to keep only its files"
        )
    name = next(iter(kinds), "image")
    return CAPTION_TASKS[name], f"{kinds[name]} {name} file(s)"
