"""LiteLLM's proxy as a managed test server, in front of the project's real LLM servers.

The proxy (`litellm[proxy]`, pinned in scripts/setup.sh) is installed into a venv of its
own, `.venv-litellm/`, because it pins openai, httpx, pydantic and aiohttp: installed into
`.venv` it would change what the engine is tested with. `MILS_LITELLM_BIN` points the tests
at another `litellm` binary. It runs offline with LiteLLM's bundled model cost map and
without a database (so a key other than the master key gets `400 No connected db.`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mils.adapters.local_stack import HOST, ManagedServer, free_port
from mils.engine.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "examples" / "litellm.yaml"
LITELLM_BIN_ENV = "MILS_LITELLM_BIN"
DEFAULT_LITELLM_BIN = REPO / ".venv-litellm" / "bin" / "litellm"


def find_litellm() -> Path:
    """The `litellm` binary: $MILS_LITELLM_BIN, else the one scripts/setup.sh installs.

    Raises:
        ConfigError: it is not there; the message says how to install it.
    """
    path = Path(os.environ.get(LITELLM_BIN_ENV) or DEFAULT_LITELLM_BIN)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(
            f"LiteLLM's proxy is not installed at {path}: run scripts/setup.sh (it installs "
            f"litellm[proxy] into {DEFAULT_LITELLM_BIN.parents[1].name}/), or set "
            f"{LITELLM_BIN_ENV} to a litellm binary"
        )
    return path


def deployment(name: str, upstream_model: str, api_base: str, **limits: int) -> dict[str, Any]:
    """One `model_list` entry: `name` served by the OpenAI-compatible server at `api_base`."""
    params = {"model": f"openai/{upstream_model}", "api_base": api_base, "api_key": "none"}
    return {"model_name": name, "litellm_params": params | limits}


def write_config(dest: Path, api_base: str, extra_models: Sequence[Mapping[str, Any]] = ()) -> Path:
    """examples/litellm.yaml with its deployments pointed at `api_base`, plus `extra_models`."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    for entry in config["model_list"]:
        entry["litellm_params"]["api_base"] = api_base
    config["model_list"] += [dict(m) for m in extra_models]
    dest.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return dest


class LiteLLMProxy(ManagedServer):
    """`litellm --config CONFIG --host 127.0.0.1 --port P` in its own process group.

    Args:
        config: the proxy's YAML config (its master key read from LITELLM_MASTER_KEY).
        master_key: the key clients must send; given to the proxy in its environment.
        log_path: where the proxy's output goes (kept for failures).
        binary: defaults to `find_litellm()`.
    """

    kind = "litellm"

    def __init__(
        self,
        *,
        config: Path,
        master_key: str,
        log_path: Path,
        binary: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        super().__init__(log_path=log_path, startup_timeout=startup_timeout, detach=False)
        self.config = config
        self.master_key = master_key
        self.binary = binary or find_litellm()
        self.port = port or free_port()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, "http://127.0.0.1:PORT/v1"."""
        return f"http://{HOST}:{self.port}/v1"

    def _urls(self) -> dict[str, str]:
        return {"base_url": self.base_url}

    def _ready_url(self) -> str:
        return f"http://{HOST}:{self.port}/health/liveliness"  # LiteLLM's spelling

    def _command(self) -> list[str]:
        return [str(self.binary), "--config", str(self.config), "--host", HOST, "--port",
                str(self.port)]  # fmt: skip

    def _env(self) -> dict[str, str]:
        # Its own venv only: nothing of the engine's (PYTHONPATH, VIRTUAL_ENV) leaks in.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return env | {
            "LITELLM_MASTER_KEY": self.master_key,
            # Offline: the bundled model cost map, not a download at start-up.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "NO_COLOR": "1",
        }
