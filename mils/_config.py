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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mils.adapters import BatchSettings, GeneratorSettings, ScorerSettings
from mils.engine import Budget, ConcurrencyConfig, ConfigError, LoopConfig, RetryConfig
from mils.engine.config import from_dict
from mils.engine.logs import redact_url

__all__ = ["RunConfig", "read_toml"]


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
            },
        }

    def to_toml(self) -> str:
        """The settings as a TOML file that `read_toml` (and `mils ... --config`) accepts."""
        data = self.to_json()
        endpoints = data.pop("endpoints")
        sections = {k: v for k, v in data.items() if v is not None}  # no [batch]: live
        sections |= {k: v for k, v in endpoints.items() if v}
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
}


def read_toml(path: Path) -> dict[str, Any]:
    """A settings file (TOML: `task`, then [loop], [generator], [scorer], [concurrency],
    [retry], [budget], [batch]: batch mode) in the shape of config.json. Unknown keys are
    errors, named.

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
    endpoints = {k: data.pop(k) for k in ("generator", "scorer") if k in data}
    return {**data, "endpoints": endpoints} if endpoints else data


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
