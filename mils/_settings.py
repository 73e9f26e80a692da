"""A run's settings from the command line: flags over a `--config` file over the saved run
(resume) or the task's defaults (caption); endpoints fall back to the local stack. A run of
several tasks (a folder of images, videos and sounds) gets each task's settings the same
way, the flags applying to every task."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from mils._config import MIXED, RunConfig, TaskSettings
from mils._local import LOCAL_RENDERERS, LOCAL_SCORERS, local_urls
from mils._prices import prices_for
from mils.engine import ConfigError, LoopConfig
from mils.tasks import RenderSpec, Task

__all__ = ["mixed_settings", "run_settings"]

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
            "reply_format",
            "rpm",
            "tpm",
        )
    },
    "api_key_file": ("generator", "api_key_file"),
    "batch_poll_s": ("batch", "poll_s"),
    "batch_linger_s": ("batch", "linger_s"),
    "generator_url": ("generator", "base_urls"),
    "generator_model": ("generator", "model"),
    "scorer_url": ("scorer", "url"),
    "scorer_protocol": ("scorer", "protocol"),
    "text_model": ("scorer", "text_model"),
    "image_model": ("scorer", "target_model"),
    "style_model": ("scorer", "style_model"),
    "renderer_kind": ("renderer", "kind"),
    "renderer_url": ("renderer", "url"),
    "renderer_model": ("renderer", "model"),
    "render_seed": ("renderer", "seed"),
    "image_size": ("renderer", "size"),
    "renderer_api_key_env": ("renderer", "api_key_env"),
    "renderer_timeout": ("renderer", "timeout_s"),
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
    _own_settings(data, task.name)
    data["task"] = task.name  # what the caller chose (flag, file or saved run)
    _generator_mode(data, args)
    for dest, (section, key) in _WHERE.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "generator_in_flight" and value == "auto":
            value = None
        elif dest == "api_key_file":
            value = str(value)
        _section(data, section)[key] = value
    local = _local_endpoints(_section(data, "generator"), _section(data, "scorer"))
    _scorer_models(_section(data, "scorer"), task, local=local)
    _renderer(data, task, local=local)
    if getattr(args, "prices", None) is not None:
        _table_prices(data, args, batch=data.get("batch") is not None)
    return RunConfig.from_json(data, source=None)


def mixed_settings(
    args: argparse.Namespace,
    *,
    saved: RunConfig | None,
    tasks: Sequence[Task],
    file: dict[str, Any],
) -> RunConfig:
    """The settings of a new or resumed run of several tasks: each task's loop and encoder
    pair as `run_settings` makes them (the loop flags apply to every task), the rest shared.

    Raises:
        ConfigError: as `run_settings`; or an encoder flag (or [scorer] model key of the
            --config file), which would give one model to every kind of media.
    """
    flags = {"text_model": "--text-model", "image_model": "--target-model"}
    given = [flag for dest, flag in flags.items() if getattr(args, dest, None) is not None]
    scorer = (file.get("endpoints") or {}).get("scorer") or {}
    given += [f"[scorer] {key}" for key in ("text_model", "target_model") if key in scorer]
    if given:
        raise ConfigError(
            f"{given[0]} gives one model to a run of {len(tasks)} tasks "
            f"({', '.join(t.name for t in tasks)}); leave the models to each task, or run "
            "each kind of media on its own with --task"
        )
    each = {t.name: run_settings(args, saved=saved, task=t, file=file) for t in tasks}
    first = each[tasks[0].name]
    own = {
        name: TaskSettings(
            loop=config.loop,
            **(
                {
                    "text_model": config.scorer.text_model,
                    "target_model": config.scorer.target_model,
                    "target_input": config.scorer.target_input,
                }
                if config.scorer
                else {}
            ),
        )
        for name, config in each.items()
    }
    return dataclasses.replace(first, task=MIXED, tasks=own)


def _own_settings(data: dict[str, Any], task: str) -> None:
    """A run of several tasks keeps each task's loop and encoder pair in its "tasks"
    section: put `task`'s where a run of one keeps them."""
    own = data.pop("tasks", None) or {}
    if task in own:
        _overlay(data, {"loop": own[task].get("loop", {}), "scorer": own[task].get("scorer", {})})


def _table_prices(data: dict[str, Any], args: argparse.Namespace, *, batch: bool) -> None:
    """Set the budget's prices from the --prices table, for the run's generator model;
    --price-in and --price-out, when given, win over it (and it over the --config file
    and the saved run)."""
    model = _section(data, "generator")["model"]
    price_in, price_out = prices_for(args.prices, model, batch=batch)
    budget = _section(data, "budget")
    if args.price_in is None:
        budget["price_in"] = price_in
    if args.price_out is None:
        budget["price_out"] = price_out


def _generator_mode(data: dict[str, Any], args: argparse.Namespace) -> None:
    """Batch mode is a [batch] section (from a flag, the file or the saved run); live is
    none. Batch options without batch mode are refused rather than ignored."""
    mode = getattr(args, "generator_mode", None)
    if mode == "live":
        data["batch"] = None
    elif mode == "batch" and data.get("batch") is None:
        data["batch"] = {}
    options = [f for f in ("batch_poll_s", "batch_linger_s") if getattr(args, f, None) is not None]
    if options and data.get("batch") is None:
        raise ConfigError(
            f"--{options[0].removesuffix('_s').replace('_', '-')} is for batch mode; add "
            "--generator-mode batch"
        )


def _overlay(data: dict[str, Any], file: dict[str, Any]) -> None:
    for name, value in file.items():
        if isinstance(value, dict):
            _section(data, name).update(value)
        else:
            data[name] = value


_ENDPOINTS = ("generator", "scorer", "renderer")


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    holder = data.setdefault("endpoints", {}) if name in _ENDPOINTS else data
    section: dict[str, Any] = holder.setdefault(name, {})
    return section


def _scorer_models(sc: dict[str, Any], task: Task, *, local: bool) -> None:
    """The task's own encoder pair where nothing chose one (the local stack's when it
    serves the run, `Task.scorer` otherwise)."""
    models = LOCAL_SCORERS.get(task.name) if local else task.scorer
    if models is not None and models.style:
        sc.setdefault("style_model", models.style)
    elif models is not None:
        sc.setdefault("text_model", models.text)
        sc.setdefault("target_model", models.target)
        sc.setdefault("target_input", models.target_input)


def _renderer(data: dict[str, Any], task: Task, *, local: bool) -> None:
    """A render-then-score task's renderer: what was chosen, else a Triton model beside
    the scorer (the local stack's closed-world renderer, or the task's real-weights one).

    Raises:
        ConfigError: renderer settings for a task that renders nothing.
    """
    spec = task.objective
    chosen = data.get("endpoints", {}).get("renderer")
    if not isinstance(spec, RenderSpec):
        if chosen:
            raise ConfigError(
                f"task {task.name!r} renders nothing; `renderer_url`, `renderer_model` and "
                "the other renderer settings are for t2i-enhance and style-transfer"
            )
        data.get("endpoints", {}).pop("renderer", None)
        return
    renderer = _section(data, "renderer")
    renderer.setdefault("url", _section(data, "scorer")["url"])
    renderer.setdefault("kind", "triton")
    default = LOCAL_RENDERERS.get(task.name) if local and renderer["kind"] == "triton" else None
    renderer.setdefault("model", default or spec.renderer)
    renderer.setdefault("image_input", spec.edits)


def _local_endpoints(gen: dict[str, Any], sc: dict[str, Any]) -> bool:
    """Fill in what the flags, the file and the saved run left open from the local stack;
    return whether the scorer is the local stack's."""
    local_scorer = False
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
        if "url" not in sc:
            sc["url"] = local["scorer_url" if protocol == "grpc" else "scorer_http_url"]
            local_scorer = True
    gen.setdefault("model", "default")
    return local_scorer
