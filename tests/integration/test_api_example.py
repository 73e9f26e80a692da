"""The README's API example (examples/caption_api.py), run as a user would, on the real
llama.cpp (SmolLM2) and Triton servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mils.adapters.local_stack import LlamaServer, TritonServer
from mils.adapters.media import bundled_samples

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "caption_api.py"


def test_api_example_captions_images_on_real_servers(
    llama_server: LlamaServer, triton_server: TritonServer, tmp_path: Path
) -> None:
    """The example prints one caption per image and leaves a complete run directory."""
    images = bundled_samples(tmp_path / "images")[:2]
    env = dict(os.environ) | {
        "MILS_GENERATOR_URL": llama_server.base_url,
        "MILS_GENERATOR_MODEL": "smollm2",
        "MILS_SCORER_URL": triton_server.grpc_url,
        "MILS_TEXT_MODEL": "toyclip_text",
        "MILS_IMAGE_MODEL": "toyclip_image",
    }
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(out), *map(str, images)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = dict(line.split("\t", 1) for line in proc.stdout.splitlines())
    assert sorted(printed) == ["astronaut", "chelsea"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(row["status"] == "done" and len(row["trajectory"]) == 3 for row in rows)
    for row in rows:
        assert printed[row["sample_id"]].split("\t")[1] == row["best_text"]
    assert "2/2 done, 4 steps" in proc.stderr
