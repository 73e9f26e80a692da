"""Server processes: start in their own group, poll health, stop the whole tree.

The base of the local stack's servers (`adapters.local_stack`) and of the benchmark's
load-model servers. Attached servers get PR_SET_PDEATHSIG so a killed parent does not
orphan them; detached ones are described by a JSON-able `ServerInfo` and stopped later
from another process.

PR_SET_PDEATHSIG fires when the *thread* that forked exits: start attached servers from a
long-lived thread (the main thread), never from a short-lived worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from mils.engine.errors import ConfigError
from mils.engine.logs import get_logger

__all__ = [
    "HOST",
    "ManagedServer",
    "ServerInfo",
    "free_port",
    "free_ports",
    "load_state",
    "save_state",
]

log = get_logger(__name__)

HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 120.0  # seconds; Triton with torch models takes ~10-20 s on 2 cores
DEFAULT_STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL (Triton drains for 5 s)
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
    model: str = ""
    """What it serves, where that matters (llama: the model alias requests name)."""

    def to_json(self) -> dict[str, Any]:
        """A plain dict for json.dump."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerInfo:
        """Inverse of `to_json`."""
        return cls(
            kind=str(data["kind"]),
            pid=int(data["pid"]),
            pgid=int(data["pgid"]),
            urls={str(k): str(v) for k, v in data["urls"].items()},
            log_path=str(data["log_path"]),
            model=str(data.get("model", "")),
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
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now: held together while chosen,
    since a port just released is often the next one handed out."""
    with contextlib.ExitStack() as held:
        socks = [
            held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class ManagedServer:
    """Start, health-poll and stop one server process in its own process group."""

    kind = "server"

    def __init__(self, *, log_path: Path, startup_timeout: float, detach: bool) -> None:
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_with: list[str] = []

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
        command = self._started_with = self._command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info(
            "local_server_starting", kind=self.kind, command=command, log_path=str(self.log_path)
        )
        started = time.monotonic()
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
                preexec_fn=None if self.detach else _die_with_parent(os.getpid()),
            )
        try:
            self._wait_ready(started + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "local_server_ready",
            kind=self.kind,
            pid=self._proc.pid,
            urls=self._urls(),
            seconds=round(time.monotonic() - started, 2),
        )
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
        return (
            f"{self.kind} server {what} (command: {' '.join(self._started_with)}); "
            f"full log: {self.log_path}; last lines:\n{tail}"
        )

    def info(self) -> ServerInfo:
        """Describe the running server as data (for a state file)."""
        if self._proc is None:
            raise ConfigError(f"{self.kind} server is not running; call start() first")
        return ServerInfo(
            kind=self.kind,
            pid=self._proc.pid,
            pgid=self._proc.pid,
            urls=self._urls(),
            log_path=str(self.log_path),
            model=self._model(),
        )

    def _model(self) -> str:
        return ""

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


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
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
