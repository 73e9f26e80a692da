"""What a person sees while a run goes: in a real pseudo-terminal of 80 columns, and when
the output is not a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, endpoint_args, env
from fault_proxy import FaultProxy

from benchmarks.llm_server import LLMFaults, LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
COLUMNS = 80


def slow_run(
    images: list[Path], proxy: FaultProxy, triton: TritonServer, out: Path, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mils",
        "caption",
        *map(str, images),
        "--steps",
        "3",
        *SMALL_LOOP,
        "--out",
        str(out),
        "--generator-in-flight",
        "2",
        *endpoint_args(proxy.base_url, triton),
        *extra,
    ]


def run_in_terminal(argv: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal of 80x24 as stdin, stdout and stderr."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    environ = env() | {"TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": "24"}
    proc = subprocess.Popen(
        argv, cwd=cwd, env=environ, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


def screen_lines(output: str) -> list[str]:
    """Every line the terminal showed, escape codes removed."""
    return [ANSI.sub("", line) for line in re.split(r"\r\n|\r|\n", output)]


def test_live_display_in_an_80_column_terminal(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Mid-run the terminal shows a progress bar with samples, steps/s and ETA, and the
    generator endpoint with its requests in flight; no line is wider than the terminal;
    the end shows the summary table and the best captions."""
    with FaultProxy(load_llm.base_url, latency_s=0.4) as proxy:
        argv = slow_run(many_images[:6], proxy, rel_triton, tmp_path / "run")
        code, output = run_in_terminal(argv, tmp_path)
    lines = screen_lines(output)
    assert code == 0, "\n".join(lines[-30:])
    live = [line for line in lines if "ETA" in line and "steps/s" in line]
    assert live, "\n".join(lines[-40:])
    assert any("━" in line and "samples" in line for line in live)
    assert any(proxy.base_url.split("//")[1][:20] in line for line in lines)
    assert any("in flight" in line for line in lines)
    assert "run summary" in output and "img000" in output
    # Plain prints are wrapped by the terminal itself: the run directory's path, and the
    # tab-separated listing of best texts on stdout (lines for machines; a caption's length
    # is the LLM's).
    too_wide = [
        x
        for x in lines
        if len(x) > COLUMNS and not x.startswith("run directory:") and "\t" not in x
    ]
    assert too_wide == []


def test_output_that_is_not_a_terminal_has_plain_lines(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Piped, the progress is a plain line every few seconds (no escape codes); with
    --progress json each line is a JSON object."""
    for mode in ("auto", "json"):
        with FaultProxy(load_llm.base_url, latency_s=0.8) as proxy:
            argv = slow_run(
                many_images[:6],
                proxy,
                rel_triton,
                tmp_path / mode,
                "--progress",
                mode,
                "--log-level",
                "error",
            )
            proc = subprocess.run(argv, cwd=tmp_path, env=env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "\x1b[" not in proc.stderr and "\x1b[" not in proc.stdout
        progress = [line for line in proc.stderr.splitlines() if "ETA" in line or "eta_s" in line]
        assert progress, proc.stderr
        if mode == "json":
            assert all(json.loads(line)["total"] == 6 for line in progress)
        else:
            assert all(line.startswith(tuple("0123456789")) for line in progress)


def test_a_rate_limit_pause_shows_when_the_generator_resumes(
    many_images: list[Path], rel_triton: TritonServer, tmp_path: Path
) -> None:
    """While a 429 pauses the only generator endpoint, the live display says so, with the
    wall-clock time it resumes; the run still ends with every sample done."""
    faults = LLMFaults(rate_limit=2, rate_window_s=4.0, retry_header="llm_provider-retry-after")
    with LoadLLMServer(faults=faults, log_path=tmp_path / "llm.log") as llm:
        argv = [
            sys.executable,
            "-m",
            "mils",
            "caption",
            *map(str, many_images[:3]),
            "--steps",
            "2",
            *SMALL_LOOP,
            "--out",
            str(tmp_path / "run"),
            *endpoint_args(llm.base_url, rel_triton),
        ]
        code, output = run_in_terminal(argv, tmp_path)
    lines = screen_lines(output)
    assert code == 0, "\n".join(lines[-30:])
    paused = [line for line in lines if "rate limited (HTTP 429)" in line]
    assert paused, "\n".join(lines[-40:])
    assert any(re.search(r"generator paused until \d\d:\d\d:\d\d \(in 0:0\d\)", x) for x in paused)
    assert all(len(line) <= COLUMNS for line in paused)
