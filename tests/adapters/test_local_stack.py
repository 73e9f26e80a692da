"""The local-stack process managers against the real servers."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from mils.adapters.local_stack import LlamaServer, ServerInfo, TritonServer, load_state, save_state
from mils.engine.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in a process group, read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def test_llama_server_lists_the_smollm2_alias(llama_server: LlamaServer) -> None:
    """The llama.cpp server is up and serves SmolLM2 under the alias we gave it."""
    assert llama_server.base_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{llama_server.base_url}/models", timeout=10) as response:
        models = json.load(response)
    assert [m["id"] for m in models["data"]] == ["smollm2"]
    assert llama_server.info().urls == {"base_url": llama_server.base_url}


def test_detached_triton_is_stopped_from_its_saved_state(tmp_path: Path) -> None:
    """`local up/down` path: a detached server, described as JSON, is stopped by another
    handle, and its whole process group (python-backend stubs included) is gone."""
    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=["toyclip_text"],
        log_path=tmp_path / "triton.log",
        detach=True,
    )
    server.start()
    try:
        info = server.info()
        assert info.pgid == info.pid and info.urls["grpc"] == server.grpc_url
        assert len(group_members(info.pgid)) >= 2  # tritonserver + the model's stub
        save_state(tmp_path / "state.json", {"triton": info})
        loaded = load_state(tmp_path / "state.json")["triton"]
        assert loaded == ServerInfo.from_json(json.loads(json.dumps(info.to_json())))
        loaded.stop(timeout=10)
        assert not loaded.is_running() and group_members(info.pgid) == []
    finally:
        server.stop()  # reaps our child; a no-op signal-wise once the group is gone


def test_triton_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    """A model that cannot load makes start() raise ConfigError quoting the server log."""
    server = TritonServer(
        model_repository=REPO / "triton_models",
        models=["no_such_model"],
        log_path=tmp_path / "triton.log",
        startup_timeout=60,
    )
    with pytest.raises(ConfigError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code" in message and str(tmp_path / "triton.log") in message
    assert "no_such_model" in message.split("last lines:", 1)[1]
    assert server.pid is None
