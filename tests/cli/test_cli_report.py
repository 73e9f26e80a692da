"""`mils report` on a real run (`mils caption` of demo scenes on the real load-model LLM
server and Triton), its page opened in a real headless browser: Debian's chromium driven by
Playwright. The suite runs as root and scripts/setup.sh installs chromium, so a missing
browser fails these tests, saying how to install it; nothing is skipped."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_harness import SMALL_LOOP, endpoint_args, mils, results
from PIL import Image

from benchmarks.llm_server import LoadLLMServer
from mils._demo import write_demo_scenes, write_scene_references
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
PAYLOAD = '<script>window.__mils_pwned = 1; console.error("pwned")</script>'
STEPS = 2


@pytest.fixture(scope="module")
def report_page(
    load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A 2-step run of 3 demo scenes and a copy of one named with HTML, whose initial pool
    lines all carry a <script> payload (so every step-0 best does); scene-3.png deleted
    after the run; its report with the scenes' references (one of them a payload too)."""
    root = tmp_path_factory.mktemp("report")
    truth = write_demo_scenes(root / "samples", count=3)
    odd = root / "samples" / "<i>odd&.png"
    shutil.copy(root / "samples" / "scene-1.png", odd)
    pool = root / "pool.txt"
    pool.write_text("".join(f"{PAYLOAD} a {w} shape on a background\n" for w in ("red", "blue")))
    run = root / "run"
    proc = mils(
        ["caption", *map(str, truth), str(odd), "--init-pool", str(pool), "--steps", str(STEPS),
         *SMALL_LOOP, "--out", str(run), "--no-progress",
         *endpoint_args(load_llm.base_url, rel_triton)],
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    references = write_scene_references(root / "samples" / "references.json", truth)
    coco = json.loads(references.read_text())
    coco["annotations"].append({"id": 999, "image_id": 1, "caption": f"</li>{PAYLOAD}"})
    references.write_text(json.dumps(coco))
    (root / "samples" / "scene-3.png").unlink()
    page = root / "page.html"
    proc = mils(["report", str(run), "--references", str(references), "--out", str(page)], root)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {page} (" in proc.stderr and "4 of 4 samples" in proc.stderr
    return run, page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (the system's, never a downloaded one)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install 'mils[test]' (scripts/setup.sh does)")
    if not CHROMIUM.is_file():
        pytest.fail(
            f"no chromium at {CHROMIUM}: the report's browser test needs Debian's chromium; "
            "scripts/setup.sh installs it where apt-get works (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()


def test_the_page_shows_a_card_per_sample_and_runs_nothing(
    report_page: tuple[Path, Path], browser: Any, tmp_path: Path
) -> None:
    """In chromium: no console error or page error (a blocked script or image would log
    one), a card per sample, the <script> captions and reference shown as text with no
    script element in the document and nothing run, the deleted scene named as missing,
    thumbnails decoded, and a screenshot that is not blank."""
    run, page_file = report_page
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        assert problems == []
        cards = page.locator("article.card")
        assert cards.count() == 4
        ids = [cards.nth(i).locator("h3").inner_text() for i in range(4)]
        assert ids == list(results(run))
        assert page.locator("script").count() == 0
        assert page.evaluate("typeof window.__mils_pwned") == "undefined"
        text = page.locator("body").inner_text()
        assert PAYLOAD in text and f"</li>{PAYLOAD}" in text and "<i>odd&.png" in text
        assert "progress lines; plotted below" in text  # the run logged its generator limit
        missing = page.locator("article.card", has_text="scene-3.png")
        assert "missing: no file at this path now" in missing.inner_text()
        widths = page.eval_on_selector_all(
            "figure img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
        )
        assert len(widths) == 3 and all(w > 0 for w in widths)  # scene-3's is gone
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 1000 and pixels.std() > 20, pixels.std()


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    """Exit 2, naming the folder and what to pass instead; no page is written."""
    proc = mils(["report", str(tmp_path)], tmp_path)
    assert proc.returncode == 2
    assert f"{tmp_path} is not a mils run directory" in proc.stderr
    assert not (tmp_path / "report.html").exists()
