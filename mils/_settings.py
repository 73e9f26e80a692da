"""A run's settings from the command line: flags over a `--config` file over the saved run
(resume) or the task's defaults (caption); endpoints fall back to the local stack."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict
from typing import Any

from mils._config import RunConfig
from mils._local import LOCAL_IMAGE_MODEL, LOCAL_TEXT_MODEL, local_urls
from mils.engine import ConfigError, LoopConfig
from mils.tasks import Task

__all__ = ["run_settings"]

# Flag destination -> (section of config.json, key in it).
_WHERE: dict[str, tuple[str, str]] = {
    **{f.name: ("loop", f.name) for f in dataclasses.fields(LoopConfig)},
    **{
        name: ("concurrency", name)
        for name in ("samples_in_flight", "generator_in_flight", "score_batch", "score_wait_ms")
    },
    "retries": ("retry", "attempts"),
    **{
        name: ("budget", name)
        for name in ("price_in", "price_out", "max_cost", "max_tokens_total", "max_requests")
    },
    "max_rate_limit_wait": ("retry", "max_rate_limit_wait_s"),
    **{
        name: ("generator", name)
        for name in (
            "temperature",
            "top_p",
            "max_tokens",
            "read_timeout",
            "api_key_env",
            "prompt_mode",
        )
    },
    "api_key_file": ("generator", "api_key_file"),
    "generator_url": ("generator", "base_urls"),
    "generator_model": ("generator", "model"),
    "scorer_url": ("scorer", "url"),
    "scorer_protocol": ("scorer", "protocol"),
    "text_model": ("scorer", "text_model"),
    "image_model": ("scorer", "target_model"),
}


def run_settings(
    args: argparse.Namespace, *, saved: RunConfig | None, task: Task, file: dict[str, Any]
) -> RunConfig:
    """The settings of a new run (`saved` None) or a resumed one; `file` is the --config
    file's content (`read_toml`), or {}.

    Raises:
        ConfigError: a setting is invalid, the config file holds an unknown key, or there
            are no endpoints and no local stack.
    """
    data: dict[str, Any] = saved.to_json() if saved else {"loop": asdict(task.loop)}
    _overlay(data, file)
    data["task"] = task.name  # what the caller chose (flag, file or saved run)
    for dest, (section, key) in _WHERE.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "generator_in_flight" and value == "auto":
            value = None
        elif dest == "api_key_file":
            value = str(value)
        _section(data, section)[key] = value
    _local_endpoints(_section(data, "generator"), _section(data, "scorer"))
    return RunConfig.from_json(data, source=None)


def _overlay(data: dict[str, Any], file: dict[str, Any]) -> None:
    for name, value in file.items():
        if isinstance(value, dict):
            _section(data, name).update(value)
        else:
            data[name] = value


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    holder = data.setdefault("endpoints", {}) if name in ("generator", "scorer") else data
    section: dict[str, Any] = holder.setdefault(name, {})
    return section


def _local_endpoints(gen: dict[str, Any], sc: dict[str, Any]) -> None:
    """Fill in what the flags, the file and the saved run left open from the local stack."""
    if "base_urls" not in gen or "url" not in sc:
        local = local_urls()
        if not local:
            raise ConfigError(
                "no endpoints: pass --generator-url and --scorer-url, or start the offline "
                "local stack first with `mils local up`"
            )
        if "base_urls" not in gen:
            gen["base_urls"] = [local["generator_url"]]
            gen.setdefault("model", local["generator_model"])
            gen.setdefault("prompt_mode", local["prompt_mode"])
        protocol = sc.get("protocol", "grpc")
        sc.setdefault("url", local["scorer_url" if protocol == "grpc" else "scorer_http_url"])
        sc.setdefault("text_model", LOCAL_TEXT_MODEL)
        sc.setdefault("target_model", LOCAL_IMAGE_MODEL)
    gen.setdefault("model", "default")
