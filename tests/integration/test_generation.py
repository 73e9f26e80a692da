"""The generation half end to end on real servers: `mils enhance`, `mils stylize` and `mils
arithmetic` on the local stack (llama.cpp with SmolLM2; one Triton serving the closed world's
renderer, editor, style losses and scorers), the render cache proven by Triton's own counts,
an images API whose faults fail single candidates, and bad input named."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from cli_harness import (
    assert_complete,
    inferences,
    log_events,
    mils,
    on_local_stack,
    query,
    results,
)

from benchmarks.image_server import ImageOptions
from benchmarks.llm_server import LLMCostModel, LoadLLMServer
from mils.adapters.local_stack import LlamaServer, TritonServer
from mils.tasks.scenes import MAX_PROMPT_CHARS, edit_image, render_text, scene_of_image
from mils.tasks.sounds import write_sounds

pytestmark = pytest.mark.integration

LOOP = ("--keep", "6", "--requested", "5", "--max-tokens", "200", "--no-progress")


def load_llm_flags(llm: LoadLLMServer) -> list[str]:
    return ["--generator-url", llm.base_url, "--generator-model", "load-llm"]


def test_enhance_prompts_renders_each_text_once(
    llama_server: LlamaServer, local_triton: TritonServer, tmp_path: Path
) -> None:
    """Prompts from a file and a flag, 2 steps of t2i-enhance with SmolLM2: every sample's
    first candidate is its prompt as written, every candidate's render is kept in the run
    directory, and the renderer drew each distinct text once (the render cache), however
    many samples proposed it."""
    on_local_stack(tmp_path, local_triton, llama_server)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a small red circle at the top left\n\na tiny crimson ball up high\n")
    flag_prompt = "two large blue squares on a white background"
    before = inferences(local_triton)
    run = tmp_path / "run"
    proc = mils(
        ["enhance", str(prompts), "--prompt", flag_prompt, "--steps", "2", *LOOP,
         "--out", str(run)],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = ["prompts-1", "prompts-3", "prompt-1"]
    assert_complete(run, ids, 2)
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "t2i-enhance"
    assert config["endpoints"]["renderer"]["model"] == "scene_render"
    assert config["endpoints"]["scorer"]["text_model"] == "scene_text"

    first = dict(query(run, "SELECT sample_id, text FROM candidates WHERE step = 0"))
    assert first == {
        "prompts-1": "a small red circle at the top left",
        "prompts-3": "a tiny crimson ball up high",
        "prompt-1": flag_prompt,
    }
    for row in results(run).values():
        image = (run / row["best_artefact"]).read_bytes()
        assert scene_of_image(image) is not None  # a closed-world render, scene attached
    artefacts = query(run, "SELECT artefact FROM candidates")
    assert all(a and (run / a).is_file() for (a,) in artefacts)

    after = inferences(local_triton)
    distinct = query(run, "SELECT COUNT(DISTINCT text) FROM candidates")[0][0]
    rendered = after["scene_render"] - before.get("scene_render", 0)
    assert rendered == distinct, (rendered, distinct, len(artefacts))
    # The prompt of each sample is embedded once as text, each render once as an image.
    assert after["scene_image"] - before.get("scene_image", 0) == distinct


def test_stylize_pairs_a_missing_style_image_fails_alone(
    load_llm: LoadLLMServer, local_triton: TritonServer, tmp_path: Path
) -> None:
    """Two content/style pairs, one with a style image that does not exist: the good pair
    runs 2 steps, its loss never rises, its terms and images are kept; the other fails
    naming the missing file; the exit status says a sample failed."""
    on_local_stack(tmp_path, local_triton, load_llm)
    content = render_text("a large blue square at the center on a white background", 0)
    (tmp_path / "content.png").write_bytes(content)
    style = edit_image(content, "make the background black and add stripes", 0)
    (tmp_path / "style.png").write_bytes(style)
    run = tmp_path / "run"
    proc = mils(
        ["stylize", "content.png", "style.png", "content.png", "gone.png", "--steps", "2",
         *LOOP, "--out", str(run), *load_llm_flags(load_llm)],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = results(run)
    good, bad = rows["content-style"], rows["content-gone"]
    assert bad["status"] == "failed" and "gone.png" in bad["error"]
    assert good["status"] == "done"
    assert set(good["best_terms"]) == {"style", "content"}
    scores = [step["best_score"] for step in good["trajectory"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)  # minimised
    assert scene_of_image((run / good["best_artefact"]).read_bytes()) is not None


def test_arithmetic_captions_merges_and_renders(
    llama_server: LlamaServer, local_triton: TritonServer, tmp_path: Path
) -> None:
    """A scene and a sound: each captioned by its kind's task, the captions merged by the
    LLM, the merged prompt improved and rendered; arithmetic.json says what each stage made."""
    on_local_stack(tmp_path, local_triton, llama_server)
    (tmp_path / "scene.png").write_bytes(render_text("a small green star at the center", 3))
    [sound] = write_sounds(tmp_path, 1)
    out = tmp_path / "arith"
    proc = mils(
        ["arithmetic", "scene.png", str(sound), "--steps", "1", *LOOP, "--out", str(out)],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "arithmetic.json").read_text())
    assert [c["status"] for c in summary["captions"]] == ["done", "done"]
    assert all(c["text"] for c in summary["captions"])
    assert summary["merged"]
    assert summary["enhanced"]["status"] == "done"
    assert (out / summary["image"]).read_bytes() == (out / "result.png").read_bytes()
    assert summary["enhanced"]["score"] >= summary["enhanced"]["first_score"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "caption-1-image-caption",
        "caption-2-audio-caption",
        "enhance",
    ]
    assert f"merged\t{summary['merged']}" in proc.stdout


def test_images_api_faults_fail_single_candidates(
    local_triton: TritonServer, tmp_path: Path
) -> None:
    """Renders through an OpenAI-compatible images API that refuses some prompts (HTTP 400,
    as a content policy) and fails others (HTTP 500): refused candidates are dropped alone,
    failed renders are retried, and the run finishes every sample."""
    # The load-model LLM's fresh lines (3 in 10) end in ", <detail>"; the prompts and the
    # variations of what scored have no comma: the refused ones are exactly the fresh lines.
    images = ImageOptions(refuse_word=",", error_rate=0.2)
    cost = LLMCostModel(capacity=8, prefill_ms=1, decode_tokens_per_s=50_000, seed=1)
    with LoadLLMServer(cost=cost, images=images, log_path=tmp_path / "llm.log") as llm:
        on_local_stack(tmp_path, local_triton, llm)
        run = tmp_path / "run"
        proc = mils(
            ["enhance", "--prompt", "a small red circle", "--prompt", "three pink stars",
             "--steps", "3", *LOOP, "--out", str(run), *load_llm_flags(llm),
             "--renderer-kind", "openai", "--renderer-url", llm.base_url,
             "--renderer-model", "closed-world"],
            tmp_path,
        )  # fmt: skip
        with urllib.request.urlopen(f"{llm.base_url}/images/stats", timeout=10) as r:
            stats = json.load(r)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, ["prompt-1", "prompt-2"], 3)
    assert stats["refused"] > 0 and stats["failed"] > 0
    stored = [text for (text,) in query(run, "SELECT text FROM candidates")]
    assert stored and not [text for text in stored if "," in text]
    finished = [e for e in log_events(run) if e["event"] == "run_finished"][-1]
    assert finished["texts_unscorable"] == stats["refused"]
    assert finished["faults"].get("5xx", 0) > 0  # retried, not dropped


def test_bad_generation_inputs_are_named(local_triton: TritonServer, tmp_path: Path) -> None:
    """An empty prompt file and an odd number of stylize images stop before anything runs;
    a prompt over the renderer's limit fails its sample saying so, the other one runs."""
    (tmp_path / "empty.txt").write_text("\n  \n")
    proc = mils(["enhance", "empty.txt"], tmp_path)
    assert proc.returncode == 2
    assert "empty.txt holds no prompts" in proc.stderr

    proc = mils(["stylize", "a.png", "b.png", "c.png"], tmp_path)
    assert proc.returncode == 2
    assert "CONTENT STYLE pairs (c.png has no style image)" in proc.stderr

    cost = LLMCostModel(capacity=8, prefill_ms=1, decode_tokens_per_s=50_000, seed=2)
    with LoadLLMServer(cost=cost, log_path=tmp_path / "llm.log") as llm:
        on_local_stack(tmp_path, local_triton, llm)
        run = tmp_path / "run"
        long_prompt = "a red circle " * (MAX_PROMPT_CHARS // 10)
        proc = mils(
            ["enhance", "--prompt", long_prompt, "--prompt", "a red circle", "--steps", "1",
             *LOOP, "--out", str(run), *load_llm_flags(llm)],
            tmp_path,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = results(run)
    assert rows["prompt-2"]["status"] == "done"
    assert rows["prompt-1"]["status"] == "failed"
    assert "input 'prompt' could not be scored" in rows["prompt-1"]["error"]
    unscorable = [e for e in log_events(run) if e["event"] == "text_unscorable"]
    assert any(f"at most {MAX_PROMPT_CHARS}" in e["error"] for e in unscorable)
