"""What the models on hub weights (clip_*, xclip_*, clap_*) share: which checkpoint to load,
and the projected features of a transformers output."""

from __future__ import annotations

import json
import os
from typing import Any

import torch


def model_name_or_path(args: dict[str, Any], env: str, default: str) -> str:
    """The environment variable `env`, else the config.pbtxt parameter `model_name_or_path`,
    else `default`; the parameter alone when the config pins it (`pinned` "true": a pair
    installed by `mils models pull`)."""
    params = json.loads(args["model_config"]).get("parameters", {})
    configured = params.get("model_name_or_path", {}).get("string_value") or default
    if params.get("pinned", {}).get("string_value") == "true":
        return str(configured)
    return os.environ.get(env) or str(configured)


def features(output: object) -> torch.Tensor:
    """transformers 4.x returns a tensor; 5.x a ModelOutput whose pooler_output is projected."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]
