"""Which captioning task each input file calls for, when the caller names none: one run may
caption images, videos and sounds together, each file by its kind's task."""

from __future__ import annotations

from collections.abc import Sequence

from mils.adapters.media import MEDIA_KINDS, MediaKind, media_kind
from mils.engine import ConfigError
from mils.tasks import AUDIO_CAPTION, IMAGE_CAPTION, VIDEO_CAPTION, Task

__all__ = ["CAPTION_TASKS", "describe", "media_kinds", "other_kinds", "tasks_for_files"]

CAPTION_TASKS: dict[str, Task] = {
    "image": IMAGE_CAPTION,
    "video": VIDEO_CAPTION,
    "audio": AUDIO_CAPTION,
}
"""The captioning task of each kind of media file."""
_KIND_OF_TASK = {task.name: kind for kind, task in CAPTION_TASKS.items()}


def media_kinds(task: Task) -> list[MediaKind]:
    """The kinds of media files `task` reads (what a directory given to it contributes)."""
    read = {spec.kind.value for spec in task.inputs}
    return [kind for kind in MEDIA_KINDS if kind.name in read]


def tasks_for_files(paths: Sequence[str]) -> dict[str, list[str]]:
    """The captioning task of each of `paths` (task name -> its files, in input order;
    tasks in the order image, video, audio), from each file's kind (its extension, else its
    first bytes). Files of no known kind count as images, whose reader then says what is
    wrong with them."""
    found: dict[str, list[str]] = {}
    for path in paths:
        kind = media_kind(path)
        found.setdefault(kind.name if kind else "image", []).append(path)
    return {CAPTION_TASKS[kind].name: found[kind] for kind in CAPTION_TASKS if kind in found}


def describe(groups: dict[str, list[str]]) -> str:
    """What `tasks_for_files` found, for messages and the log ("2 video file(s)")."""
    return ", ".join(
        f"{len(paths)} {_KIND_OF_TASK[task]} file(s)" for task, paths in groups.items()
    )


def other_kinds(task: Task, paths: Sequence[str]) -> None:
    """Refuse media files of another kind than `task` reads (a task named for files that
    call for another).

    Raises:
        ConfigError: some are; the message names the first and says what to do.
    """
    kinds = {kind.name for kind in media_kinds(task)}
    if not kinds:
        return  # a task of text inputs: its reader judges the files
    others = [
        (p, found.name) for p in paths if (found := media_kind(p)) and found.name not in kinds
    ]
    if others:
        path, other = others[0]
        more = f" (and {len(others) - 1} more of other kinds)" if len(others) > 1 else ""
        raise ConfigError(
            f"`task` {task.name} reads {' and '.join(sorted(kinds))} files, but {path} is "
            f"{'an' if other[0] in 'aeiou' else 'a'} {other} file{more}; leave out `task` to "
            "caption every kind in one run (each file by its kind's task), or leave out "
            "those files"
        )
