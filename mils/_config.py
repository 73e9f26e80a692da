"""What a run is made of, as data: saved in its run directory as config.json, read back to
resume it.

Holds no secret: generator settings say where the API key is found, never the key; extra
HTTP headers (which may carry credentials) are not saved; credentials written into a URL
(user:password@) are saved masked, so a resume asks for the URL again.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mils.adapters import BatchSettings, GeneratorSettings, ScorerSettings
from mils.adapters.renderers import RendererSettings
from mils.engine import Budget, ConcurrencyConfig, ConfigError, LoopConfig, RetryConfig
from mils.engine.config import from_dict
from mils.engine.logs import redact_url

__all__ = ["MIXED", "RunConfig", "TaskSettings", "read_toml"]

MIXED = "mixed"
"""`RunConfig.task` of a run of several tasks (images, videos and sounds together)."""
_MODEL_KEYS = ("text_model", "target_model", "target_input")
"""The scorer settings each task of a run of several tasks has of its own."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSettings:
    """What one task of a run of several tasks has of its own: its loop, and the encoder
    pair it scores with on the run's scorer server."""

    loop: LoopConfig
    text_model: str | None = None
    """None when the caller passed its own scorer objects."""
    target_model: str | None = None
    target_input: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """A run's task, loop, concurrency, retries and endpoints."""

    task: str
    loop: LoopConfig
    concurrency: ConcurrencyConfig = dataclasses.field(default_factory=ConcurrencyConfig)
    retry: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    generator: tuple[GeneratorSettings, ...] = ()
    """Generator endpoints; empty when the caller passed its own generator objects."""
    scorer: ScorerSettings | None = None
    """The Triton encoder pair; None when the caller passed its own scorer object."""
    budget: Budget = dataclasses.field(default_factory=Budget)
    """Token prices and the spend at which the run stops."""
    batch: BatchSettings | None = None
    """How generator requests go as Batch API jobs; None: live requests."""
    renderer: RendererSettings | None = None
    """Where a render-then-score task renders its candidates; None for the other tasks,
    and when the caller passed its own renderer object."""
    tasks: Mapping[str, TaskSettings] = dataclasses.field(default_factory=dict)
    """A run of several tasks (`task` is MIXED): each task's own loop and encoder pair, by
    task name; `loop` and `scorer` are then its first task's. Empty in a run of one."""

    @property
    def task_names(self) -> tuple[str, ...]:
        """The run's tasks: those of `tasks`, else `task`."""
        return tuple(self.tasks) or (self.task,)

    def loop_for(self, task: str) -> LoopConfig:
        """The loop of `task` (one of `task_names`)."""
        return self.tasks[task].loop if self.tasks else self.loop

    def scorer_for(self, task: str) -> ScorerSettings | None:
        """The scorer settings of `task`: the run's server with the task's encoder pair."""
        own = self.tasks.get(task)
        if self.scorer is None or own is None:
            return self.scorer
        models = {k: getattr(own, k) for k in _MODEL_KEYS if getattr(own, k) is not None}
        return dataclasses.replace(self.scorer, **models)

    def to_json(self) -> dict[str, Any]:
        generator: dict[str, Any] = {}
        if self.generator:
            first = asdict(self.generator[0])
            first.pop("extra_headers", None)
            first.pop("base_url")
            if first.get("api_key_file") is not None:
                first["api_key_file"] = str(first["api_key_file"])
            generator = {"base_urls": [redact_url(g.base_url) for g in self.generator], **first}
        return {
            "task": self.task,
            "loop": asdict(self.loop),
            "concurrency": asdict(self.concurrency),
            "retry": asdict(self.retry),
            "budget": asdict(self.budget),
            "batch": asdict(self.batch) if self.batch else None,
            "endpoints": {
                "generator": generator,
                "scorer": asdict(self.scorer) if self.scorer else {},
                **({"renderer": _renderer_json(self.renderer)} if self.renderer else {}),
            },
            **({"tasks": _tasks_json(self.tasks)} if self.tasks else {}),
        }

    def to_toml(self) -> str:
        """The settings as a TOML file that `read_toml` (and `mils ... --config`) accepts."""
        data = self.to_json()
        endpoints = data.pop("endpoints")
        tasks = data.pop("tasks", {})
        if tasks and endpoints["scorer"]:  # each task's models are in its own section
            endpoints["scorer"] = {
                k: v for k, v in endpoints["scorer"].items() if k not in _MODEL_KEYS
            }
        sections = {k: v for k, v in data.items() if v is not None}  # no [batch]: live
        sections |= {k: v for k, v in endpoints.items() if v}
        sections |= {
            f"tasks.{json.dumps(task)}.{part}": values
            for task, parts in tasks.items()
            for part, values in parts.items()
            if values
        }
        lines = [f"task = {_toml_value(sections.pop('task'))}"]
        for name, values in sections.items():
            lines += ["", f"[{name}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_json(cls, data: Any, *, source: str | None = "config.json") -> RunConfig:
        """Rebuild a saved configuration; keys it no longer knows are ignored.

        Args:
            source: the file the data came from, named in errors (None: the errors name
                parameters, for a caller that built `data` from its own options).

        Raises:
            ConfigError: a key is missing or holds a value of the wrong type or range; the
                message names the key (`loop.steps`).
        """
        try:
            data = _section(data, "the file")
            if not isinstance(data.get("task"), str):
                raise ConfigError(f"task is {data.get('task')!r}; it must name a task")
            endpoints = _section(data.get("endpoints", {}), "endpoints")
            return cls(
                task=data["task"],
                loop=_typed(LoopConfig, data.get("loop", {}), "loop"),
                concurrency=_typed(ConcurrencyConfig, data.get("concurrency", {}), "concurrency"),
                retry=_typed(RetryConfig, data.get("retry", {}), "retry"),
                budget=_typed(Budget, data.get("budget", {}), "budget"),
                batch=_batch_settings(data.get("batch")),
                generator=_generator_settings(endpoints.get("generator", {})),
                scorer=_scorer_settings(endpoints.get("scorer", {})),
                renderer=_renderer_settings(endpoints.get("renderer", {})),
                tasks=_task_settings(data.get("tasks", {})),
            )
        except ConfigError as exc:
            if source is None:
                raise
            # Name keys of the file, not parameters (`steps`) that the CLI would show as flags.
            said = re.sub(r"`(\w+)`", r"\1", str(exc))
            raise ConfigError(f"{source}: {said}; correct the file") from None


def _generator_settings(saved: Any) -> tuple[GeneratorSettings, ...]:
    """One GeneratorSettings per saved base URL (validated: ConfigError naming the key)."""
    saved = _section(saved, "endpoints.generator")
    if not saved:
        return ()
    urls = saved.get("base_urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"endpoints.generator.base_urls is {urls!r}; it must be a list of URLs")
    values = {k: v for k, v in saved.items() if k in _GENERATOR_FIELDS}
    if isinstance(values.get("api_key_file"), str):
        values["api_key_file"] = Path(values["api_key_file"])
    return tuple(
        _typed(GeneratorSettings, {**values, "base_url": url}, "endpoints.generator")
        for url in urls
    )


def _batch_settings(saved: Any) -> BatchSettings | None:
    """Batch mode's settings, or None (live requests) when the section is absent."""
    if saved is None:
        return None
    batch: BatchSettings = _typed(BatchSettings, saved, "batch")
    return batch


def _scorer_settings(saved: Any) -> ScorerSettings | None:
    saved = _section(saved, "endpoints.scorer")
    if not saved:
        return None
    values = dict(saved)
    if "image_model" in values:  # the name before targets other than images
        values.setdefault("target_model", values.pop("image_model"))
    if "url" not in values:
        raise ConfigError("endpoints.scorer has no url")
    return _typed(ScorerSettings, values, "endpoints.scorer")


def _tasks_json(tasks: Mapping[str, TaskSettings]) -> dict[str, Any]:
    """The "tasks" section of a run of several tasks: per task, its loop and its encoder
    pair (the keys of the scorer section that differ by task)."""
    return {
        name: {
            "loop": asdict(own.loop),
            "scorer": {k: getattr(own, k) for k in _MODEL_KEYS if getattr(own, k) is not None},
        }
        for name, own in tasks.items()
    }


def _task_settings(saved: Any) -> dict[str, TaskSettings]:
    tasks = {}
    for name, own in _section(saved, "tasks").items():
        own = _section(own, f"tasks.{name}")
        scorer = _section(own.get("scorer", {}), f"tasks.{name}.scorer")
        for key, value in scorer.items():
            if key not in _MODEL_KEYS or not isinstance(value, str):
                raise ConfigError(
                    f"tasks.{name}.scorer.{key} is {value!r}; a task's scorer section holds "
                    f"the strings {', '.join(_MODEL_KEYS)}"
                )
        loop = _typed(LoopConfig, own.get("loop", {}), f"tasks.{name}.loop")
        tasks[name] = TaskSettings(loop=loop, **scorer)
    return tasks


def _renderer_json(settings: RendererSettings) -> dict[str, Any]:
    """The renderer's settings without its API key (found again from `api_key_env`)."""
    saved = asdict(settings)
    saved.pop("api_key")
    saved["url"] = redact_url(settings.url)
    return saved


def _renderer_settings(saved: Any) -> RendererSettings | None:
    saved = _section(saved, "endpoints.renderer")
    if not saved:
        return None
    missing = [key for key in ("kind", "url", "model") if key not in saved]
    if missing:
        raise ConfigError(f"endpoints.renderer has no {missing[0]}")
    values = {k: v for k, v in saved.items() if k != "api_key"}
    renderer: RendererSettings = _typed(RendererSettings, values, "endpoints.renderer")
    return renderer


_GENERATOR_FIELDS = {f.name for f in dataclasses.fields(GeneratorSettings)}


def _typed(cls: type[Any], values: Any, section: str) -> Any:
    """Build config dataclass `cls` from JSON, refusing a value of the wrong type by name.

    Keys `cls` does not know are ignored (a newer version may have dropped them); the
    range checks of `cls` itself run as usual.
    """
    values = _section(values, section)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in values and not _fits(values[field.name], hints[field.name]):
            raise ConfigError(
                f"{section}.{field.name} is {values[field.name]!r}, not "
                f"{_describe(hints[field.name])} (delete the key for the default)"
            )
    return from_dict(cls, dict(values))


def _section(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} is {type(value).__name__} {value!r:.60}, not an object")
    return value


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON value can stand for a field of type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, Path):
        return isinstance(value, (str, Path))
    if origin is not None and issubclass(origin, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def _describe(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    args = typing.get_args(tp) or (tp,)
    return " or ".join(names.get(a, "null" if a is type(None) else str(a)) for a in args)


_FILE_KEYS: dict[str, set[str]] = {
    "loop": {f.name for f in dataclasses.fields(LoopConfig)},
    "concurrency": {f.name for f in dataclasses.fields(ConcurrencyConfig)},
    "retry": {f.name for f in dataclasses.fields(RetryConfig)},
    "budget": {f.name for f in dataclasses.fields(Budget)},
    "batch": {f.name for f in dataclasses.fields(BatchSettings)},
    "generator": (_GENERATOR_FIELDS - {"base_url", "extra_headers"}) | {"base_urls"},
    "scorer": {f.name for f in dataclasses.fields(ScorerSettings)},
    "renderer": {f.name for f in dataclasses.fields(RendererSettings)} - {"api_key"},
}


def read_toml(path: Path) -> dict[str, Any]:
    """A settings file (TOML: `task`, then [loop], [generator], [scorer], [renderer],
    [concurrency], [retry], [budget], [batch]: batch mode) in the shape of config.json.
    Unknown keys are errors, named.

    Raises:
        ConfigError: the file cannot be read or parsed, or holds an unknown key.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the settings file {path}: {exc}; pass `config`") from None
    for name, value in data.items():
        if name == "task":
            continue
        if name == "tasks":
            _check_tasks(path, value)
            continue
        if name not in _FILE_KEYS:
            raise ConfigError(
                f"{path}: unknown key {name!r}; the file takes task and the sections "
                f"{', '.join(_FILE_KEYS)}"
            )
        section = _section(value, f"[{name}] of {path}")
        unknown = sorted(set(section) - _FILE_KEYS[name])
        if unknown:
            raise ConfigError(
                f"{path}: unknown key {name}.{unknown[0]}; [{name}] takes "
                f"{', '.join(sorted(_FILE_KEYS[name]))}"
            )
    endpoints = {k: data.pop(k) for k in ("generator", "scorer", "renderer") if k in data}
    return {**data, "endpoints": endpoints} if endpoints else data


def _check_tasks(path: Path, tasks: Any) -> None:
    """Refuse a [tasks.NAME.*] section of a settings file that holds an unknown key."""
    for task, parts in _section(tasks, f"[tasks] of {path}").items():
        for part, values in _section(parts, f"[tasks.{task}] of {path}").items():
            known = {"loop": _FILE_KEYS["loop"], "scorer": set(_MODEL_KEYS)}.get(part)
            if known is None:
                raise ConfigError(
                    f"{path}: unknown key tasks.{task}.{part}; a task's section takes loop "
                    "and scorer"
                )
            section = _section(values, f"[tasks.{task}.{part}] of {path}")
            if unknown := sorted(set(section) - known):
                raise ConfigError(
                    f"{path}: unknown key tasks.{task}.{part}.{unknown[0]}; it takes "
                    f"{', '.join(sorted(known))}"
                )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no TOML form for {value!r}")
