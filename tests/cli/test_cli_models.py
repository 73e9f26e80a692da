"""`mils models pull | list`: a CLIP-family checkpoint installed as a Triton model pair.

Loading and serving the pair is covered where `mils local up` serves it
(tests/integration/test_caption_cli.py); here: what is written, and every refusal.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path

from cli_harness import mils


class _Hub:
    """A socket where the hub should be: it counts the connections made and drops each."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()


def test_pull_a_checkpoint_folder_writes_a_model_pair(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """Weights copied, two configs named after the alias pointing at them, shared code."""
    proc = mils(["models", "pull", str(tiny_clip_dir), "--as", "tiny"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--text-model tiny_text --image-model tiny_image" in proc.stdout
    repo = tmp_path / ".mils" / "models"
    weights = repo / "_weights" / "tiny"
    assert (weights / "model.safetensors").read_bytes() == (
        tiny_clip_dir / "model.safetensors"
    ).read_bytes()
    for model in ("tiny_text", "tiny_image"):
        config = (repo / model / "config.pbtxt").read_text()
        assert f'name: "{model}"' in config
        assert json.dumps(str(weights.resolve())) in config
        assert (repo / model / "1" / "model.py").is_file()
    assert (repo / "_common" / "batching.py").is_file()
    listed = mils(["models", "list"], cwd=tmp_path)
    assert listed.stdout.split() == ["tiny_image", "tiny_text"]


def test_pull_offline_fails_at_once_saying_what_to_do(tmp_path: Path) -> None:
    """A hub that drops every connection: exit 2 after one try (no retry loop), the URL
    tried, the offline route, no debris."""
    hub = _Hub()
    try:
        proc = mils(
            ["models", "pull", "openai/clip-vit-base-patch32"],
            cwd=tmp_path,
            extra_env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"},
        )
    finally:
        hub.close()
    assert proc.returncode == 2
    assert 1 <= hub.connections <= 2  # the HTTP client may reconnect once; no retry loop
    assert f"cannot download openai/clip-vit-base-patch32 from {hub.url}" in proc.stderr
    assert "mils models pull DIR" in proc.stderr
    assert not (tmp_path / ".mils").exists()


def test_pull_refuses_what_is_not_a_clip_checkpoint(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """A folder without a CLIP-family config, without weights or with an unreadable file, or
    a bad alias, is refused with the reason; nothing is installed."""
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    proc = mils(["models", "pull", str(other)], cwd=tmp_path)
    assert proc.returncode == 2 and "'bert' model" in proc.stderr and "siglip" in proc.stderr

    empty = tmp_path / "noweights"
    shutil.copytree(tiny_clip_dir, empty, ignore=shutil.ignore_patterns("*.safetensors"))
    proc = mils(["models", "pull", str(empty)], cwd=tmp_path)
    assert proc.returncode == 2 and "no weights" in proc.stderr

    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip_dir, broken)
    (broken / "vocab.extra").symlink_to(tmp_path / "gone")  # a file that cannot be read
    proc = mils(["models", "pull", str(broken)], cwd=tmp_path)
    assert proc.returncode == 2 and "cannot copy" in proc.stderr and "Traceback" not in proc.stderr

    proc = mils(["models", "pull", str(tiny_clip_dir), "--as", "Bad-Name"], cwd=tmp_path)
    assert proc.returncode == 2 and "--as" in proc.stderr
    assert mils(["models", "list"], cwd=tmp_path).stdout.startswith("no models")
