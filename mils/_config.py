"""What a run is made of, as data: saved in its run directory as config.json, read back to
resume it.

Holds no secret: generator settings say where the API key is found, never the key; extra
HTTP headers (which may carry credentials) are not saved; credentials written into a URL
(user:password@) are saved masked, so a resume asks for the URL again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mils.adapters import GeneratorSettings, ScorerSettings
from mils.engine import ConcurrencyConfig, ConfigError, LoopConfig, RetryConfig
from mils.engine.config import from_dict
from mils.engine.logs import redact_url

__all__ = ["RunConfig"]


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
            "endpoints": {
                "generator": generator,
                "scorer": asdict(self.scorer) if self.scorer else {},
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConfig:
        """Rebuild a saved configuration (keys it no longer knows are ignored).

        Raises:
            ConfigError: the file does not hold a run configuration.
        """
        try:
            endpoints = data.get("endpoints", {})
            return cls(
                task=str(data["task"]),
                loop=from_dict(LoopConfig, data.get("loop", {})),
                concurrency=from_dict(ConcurrencyConfig, data.get("concurrency", {})),
                retry=from_dict(RetryConfig, data.get("retry", {})),
                generator=generator_settings(endpoints.get("generator", {})),
                scorer=scorer_settings(endpoints.get("scorer", {})),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"config.json is not a mils run configuration ({type(exc).__name__}: {exc})"
            ) from None


def generator_settings(saved: Mapping[str, Any]) -> tuple[GeneratorSettings, ...]:
    """One GeneratorSettings per saved base URL (validated: ConfigError)."""
    if not saved:
        return ()
    values = {k: v for k, v in saved.items() if k in _GENERATOR_FIELDS}
    urls: Sequence[str] = saved["base_urls"]
    if values.get("api_key_file"):
        values["api_key_file"] = Path(values["api_key_file"])
    return tuple(GeneratorSettings(base_url=url, **values) for url in urls)


def scorer_settings(saved: Mapping[str, Any]) -> ScorerSettings | None:
    if not saved:
        return None
    values = dict(saved)
    if "image_model" in values:  # the name before targets other than images
        values.setdefault("target_model", values.pop("image_model"))
    return from_dict(ScorerSettings, values)


_GENERATOR_FIELDS = {f.name for f in dataclasses.fields(GeneratorSettings)} - {"base_url"}
