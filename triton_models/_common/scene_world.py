"""The closed world's pixels (`tasks/_scene_world.py`: scenes, `render_text`, `edit_image`) for
the scene_render and scene_edit models, loaded by path.

The Triton server does not have mils installed (the Triton image copies only the model
repository and this one file), so the models cannot `import mils.tasks.scenes`; that file's
pixel half imports nothing from mils and sits beside the model repository in every layout: the
source checkout (tasks/ beside triton_models/), the wheel (mils/tasks beside
mils/triton_models) and the Triton image (/opt/mils/tasks beside /opt/mils/triton_models).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from _common.batching import respond
from _common.networks import ROOT, load_file

WORLD = ROOT.parent / "tasks" / "_scene_world.py"


def load_scene_world() -> ModuleType:
    """`tasks/_scene_world.py` as a module (once per process)."""
    return load_file("mils_scene_world", WORLD)


def world_model(model: str, function: str, inputs: tuple[str, ...]) -> type:
    """A python-backend model applying the world's `function` to each item's `inputs`
    (TEXT decoded as UTF-8, SEED as an int, IMAGE as bytes), answering IMAGE (PNG bytes).

    The work is the check: a text is read (and an image's scene chunk found) while drawing
    it, so each request's items are drawn in turn, all of them in one `execute`, and a
    request with an item the world refuses fails alone, with the reason.
    """

    def item(name: str, value: Any) -> Any:
        if name == "SEED":
            return int(value)
        if name == "TEXT":
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"TEXT is not UTF-8 ({exc})") from exc
        return bytes(value)

    class TritonPythonModel:
        def initialize(self, args: dict) -> None:
            self.function = getattr(load_scene_world(), function)

        def execute(self, requests: list) -> list:
            groups: list[list[bytes] | Exception] = []
            for request in requests:
                columns = [
                    pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
                    for name in inputs
                ]
                try:
                    groups.append(
                        [
                            self.function(*(item(n, v) for n, v in zip(inputs, row, strict=True)))
                            for row in zip(*columns, strict=True)
                        ]
                    )
                except ValueError as exc:
                    groups.append(ValueError(f"{model}: {exc}"))
            return respond(groups, self.images, output="IMAGE")

        @staticmethod
        def images(items: list[bytes]) -> np.ndarray:
            out = np.empty((len(items), 1), dtype=object)
            out[:, 0] = items
            return out

    TritonPythonModel.__doc__ = f"{model}: `{function}` per item; a bad request fails alone."
    return TritonPythonModel
