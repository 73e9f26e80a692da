"""MILS tasks: one module per task, each declaring a `Task`."""

from __future__ import annotations

from mils.engine.errors import ConfigError
from mils.tasks.base import EmbeddingSpec, Input, InputKind, ObjectiveSpec, RenderSpec, Task
from mils.tasks.image_caption import TASK as IMAGE_CAPTION

__all__ = [
    "IMAGE_CAPTION",
    "TASKS",
    "EmbeddingSpec",
    "Input",
    "InputKind",
    "ObjectiveSpec",
    "RenderSpec",
    "Task",
    "get_task",
]

TASKS: dict[str, Task] = {task.name: task for task in (IMAGE_CAPTION,)}


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
