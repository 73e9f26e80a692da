"""MILS tasks: one module per task, each declaring a `Task`."""

from __future__ import annotations

from mils.engine.errors import ConfigError
from mils.tasks.audio_caption import TASK as AUDIO_CAPTION
from mils.tasks.base import (
    EmbeddingSpec,
    Input,
    InputKind,
    ObjectiveSpec,
    RenderSpec,
    ScorerModels,
    Task,
)
from mils.tasks.image_caption import TASK as IMAGE_CAPTION
from mils.tasks.style_transfer import TASK as STYLE_TRANSFER
from mils.tasks.t2i_enhance import TASK as T2I_ENHANCE
from mils.tasks.video_caption import TASK as VIDEO_CAPTION

__all__ = [
    "AUDIO_CAPTION",
    "IMAGE_CAPTION",
    "STYLE_TRANSFER",
    "T2I_ENHANCE",
    "TASKS",
    "VIDEO_CAPTION",
    "EmbeddingSpec",
    "Input",
    "InputKind",
    "ObjectiveSpec",
    "RenderSpec",
    "ScorerModels",
    "Task",
    "get_task",
]

TASKS: dict[str, Task] = {
    task.name: task
    for task in (IMAGE_CAPTION, VIDEO_CAPTION, AUDIO_CAPTION, T2I_ENHANCE, STYLE_TRANSFER)
}


def get_task(name: str) -> Task:
    """The task called `name`.

    Raises:
        ConfigError: no such task; the message lists the known ones.
    """
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"unknown task {name!r}; choose one of: {known}") from None
