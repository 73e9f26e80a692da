"""`mils report`'s page from run directories written through `RunStore` (no servers): every
text escaped, missing inputs named, cards chosen and bounded, only recorded numbers shown.
The page in a real browser, on a real run, is tests/cli/test_cli_report.py."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mils._references import References
from mils._report import DEFAULT_LIMIT, write_report
from mils._runlog import read_log
from mils.engine import ConfigError, RunStore, StepRecord, StoreError

PAYLOAD = '<script>window.__mils_pwned = 1; console.error("pwned")</script> a cat'
CONFIG = {"task": "image-caption", "loop": {"steps": 2, "keep": 6}}


def _image(path: Path, size: tuple[int, int] = (640, 480), seed: int = 0) -> str:
    """A noise photo: the worst case for a JPEG thumbnail's size."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return str(path)


def _run(
    run_dir: Path,
    samples: Sequence[tuple[str, str, Sequence[tuple[str, float]], str | None]],
    *,
    candidates: int = 3,
) -> Path:
    """A finished run: each (id, image path, best (text, score) per step from 0, error)."""
    entries = [(sid, {"image": path}) for sid, path, _, _ in samples]
    store = RunStore.create(run_dir, CONFIG, ["a photo"], entries)
    try:
        for sid, _, steps, error in samples:
            for step, (text, score) in enumerate(steps):
                # Step 0 ranks the initial pool: no new candidates, as the engine commits it.
                new = tuple((f"{sid} {step} {k}", score - 0.01 * k) for k in range(candidates))
                new = new if step else ()
                record = StepRecord(step, (score, text), score, new, ((score, text),))
                store.commit_step(sid, record)
            store.finish_sample(sid, error=error)
    finally:
        store.close()
    return run_dir


def test_every_text_is_escaped_and_the_page_allows_no_script(tmp_path: Path) -> None:
    """A caption, a failure reason, a reference and a file name holding HTML appear escaped,
    the page holds no <script> tag at all, and its CSP forbids scripts and outside images."""
    image = _image(tmp_path / "<b>odd&.png", (32, 24))
    run = _run(
        tmp_path / "run",
        [
            ("cat", image, [("a photo", 0.2), (PAYLOAD, 0.3)], None),
            ("dog", image, [("<img src=x onerror=alert(1)>", 0.1)], "scorer said <b>no</b>"),
        ],
    )
    refs = References(tmp_path / "refs", {"cat": ["</td><script>alert(2)</script>"]}, ["cat"])
    written = write_report(run, tmp_path / "page.html", references=refs)
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert (written.cards, written.samples, written.with_references) == (2, 2, 1)
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;window.__mils_pwned = 1; console.error(&quot;pwned&quot;)" in page
    assert "scorer said &lt;b&gt;no&lt;/b&gt;" in page
    assert "&lt;/td&gt;&lt;script&gt;alert(2)" in page and "&lt;b&gt;odd&amp;.png" in page
    csp = re.search(r'Content-Security-Policy"\s+content="([^"]+)"', page)
    assert csp is not None and "default-src 'none'" in csp[1] and "img-src data:" in csp[1]
    assert re.findall(r"src='([a-z]+):", page) == ["data"] * len(re.findall(r"src='", page))


def test_a_card_shows_its_thumbnail_or_says_the_input_is_gone(tmp_path: Path) -> None:
    """An existing image becomes an inline JPEG of at most 128 px; a deleted one is named as
    missing in its card; a file that is no image says it cannot be read."""
    here = _image(tmp_path / "here.jpg")
    gone = _image(tmp_path / "gone.png", (40, 40))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    run = _run(
        tmp_path / "run",
        [(sid, path, [("a photo", 0.5)], None) for sid, path in
         (("here", here), ("gone", gone), ("broken", str(broken)))],
    )  # fmt: skip
    Path(gone).unlink()
    write_report(run, tmp_path / "page.html")
    cards = _cards((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert "data:image/jpeg;base64," in cards["here"] and "width='128' height='96'" in cards["here"]
    assert "missing: no file at this path now" in cards["gone"] and "<img src" not in cards["gone"]
    assert "cannot be read as an image" in cards["broken"]


def _cards(page: str) -> dict[str, str]:
    """Sample id -> its card's HTML, in page order."""
    found = re.findall(r"<article class='card [a-z]+' id='sample-([^']+)'>(.*?)</article>", page)
    return dict(found)


def test_sort_and_limit_choose_the_cards_and_the_page_says_what_it_left_out(
    tmp_path: Path,
) -> None:
    """best, worst and failed orders, then the first `limit`; the note counts the others."""
    image = _image(tmp_path / "a.jpg", (16, 16))
    scores = {"s1": 0.5, "s2": 0.9, "s3": 0.1, "s4": 0.7}
    run = _run(
        tmp_path / "run",
        [(sid, image, [("t", v)], "boom" if sid == "s4" else None) for sid, v in scores.items()],
    )
    expected = {
        "input": ["s1", "s2", "s3"],
        "best": ["s2", "s4", "s1"],
        "worst": ["s3", "s1", "s4"],
        "failed": ["s4", "s1", "s2"],
    }
    for sort, ids in expected.items():
        write_report(run, tmp_path / f"{sort}.html", limit=3, sort=sort)
        page = (tmp_path / f"{sort}.html").read_text(encoding="utf-8")
        assert list(_cards(page)) == ids, sort
        assert "3 of 4 samples" in page and "1 not shown" in page
    write_report(run, tmp_path / "all.html", limit=0)
    assert len(_cards((tmp_path / "all.html").read_text(encoding="utf-8"))) == 4
    with pytest.raises(ConfigError, match="`sort` is 'random'; pass one of input, best, worst"):
        write_report(run, tmp_path / "x.html", sort="random")


def test_the_summary_shows_only_what_the_run_recorded(tmp_path: Path) -> None:
    """Without a log.jsonl, texts embedded and retries are "not recorded", not 0; with one,
    they are the sums of its run_finished lines, retries by fault kind, and the limit."""
    image = _image(tmp_path / "a.jpg", (16, 16))
    run = _run(tmp_path / "run", [("s1", image, [("t", 0.1), ("u", 0.2)], None)])
    write_report(run, tmp_path / "bare.html")
    bare = (tmp_path / "bare.html").read_text(encoding="utf-8")
    assert re.search(r"texts embedded</th><td>not recorded: no log.jsonl", bare)
    assert re.search(r"retries</th><td>not recorded", bare)
    assert "candidates scored</th><td>3 " in bare and "steps committed</th><td>1 " in bare
    (run / "log.jsonl").write_text(_log_lines(), encoding="utf-8")
    write_report(run, tmp_path / "logged.html")
    page = (tmp_path / "logged.html").read_text(encoding="utf-8")
    assert "texts embedded</th><td>31 sent to the scorer (sessions that finished)" in page
    assert "retries</th><td>3: timeout 2, 5xx 1" in page
    assert "transient faults</th><td>timeout 2, 5xx 1" in page
    assert "generator limit</th><td>4 to 9, last 9 (2 progress lines" in page
    assert "1 more did not log an end" in page and "endpoint_retry 3" in page


def _log_lines() -> str:
    """Two sessions, the first killed (no run_finished), as structlog writes them."""

    def line(event: str, ts: str, level: str = "info", **fields: object) -> str:
        when = f"2026-01-01T12:{ts}Z"
        return json.dumps({**fields, "event": event, "level": level, "timestamp": when}) + "\n"

    retry = {"endpoint": "http://g/v1", "attempt": 1}
    finished = {"texts_evaluated": 31, "generator_requests": 2, "wall_s": 10.0}
    return "".join(
        [
            line("run_started", "00:00", samples=1),
            line("progress", "00:05", gen_limit=4),
            line("endpoint_retry", "00:06", "warning", fault="timeout", **retry),
            line("run_started", "01:00", samples=1),
            line("endpoint_retry", "01:01", "warning", fault="timeout", **retry),
            line("endpoint_retry", "01:02", "warning", fault="5xx", **retry),
            line("progress", "01:05", gen_limit=9),
            line("step_committed", "01:06", "debug", step=1),
            '{"event": "run_finished", "cut off',
            "\n",
            line("run_finished", "01:10", faults={"timeout": 2, "5xx": 1}, **finished),
        ]
    )


def test_read_log_pairs_sessions_and_counts_what_it_cannot_read(tmp_path: Path) -> None:
    """A run_started without a run_finished is a session that did not end; a cut-off line is
    counted, not fatal; the limit series keeps its times."""
    (tmp_path / "log.jsonl").write_text(_log_lines(), encoding="utf-8")
    facts = read_log(tmp_path)
    assert [s.finished is not None for s in facts.sessions] == [False, True]
    assert facts.total("texts_evaluated") == 31 and facts.total("candidates_scored") is None
    assert facts.retries == {"timeout": 2, "5xx": 1} and facts.unreadable == 1
    assert [v for _, v in facts.limit] == [4, 9] and facts.limit[1][0] - facts.limit[0][0] == 60
    assert not read_log(tmp_path / "nowhere").found


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    """The message names the folder and what to pass."""
    with pytest.raises(StoreError, match="is not a mils run directory; pass the --out folder"):
        write_report(tmp_path, tmp_path / "page.html")


def test_a_run_of_10000_samples_gives_a_page_of_a_few_megabytes(tmp_path: Path) -> None:
    """With the default limit, 10,000 samples of 4 steps (noise photos, the largest JPEG
    thumbnails) give a page under 5 MB holding DEFAULT_LIMIT cards; the time is printed."""
    images = [_image(tmp_path / f"photo{i}.jpg", seed=i) for i in range(20)]
    rng = random.Random(0)
    samples = [
        (f"s{i:05d}", images[i % 20], [(f"caption {i} after {s}", rng.random()) for s in range(4)],
         "scorer said no" if i % 97 == 0 else None)
        for i in range(10_000)
    ]  # fmt: skip
    started = time.monotonic()
    run = _run(tmp_path / "run", samples, candidates=5)
    made = time.monotonic() - started
    started = time.monotonic()
    written = write_report(run, tmp_path / "page.html")
    took = time.monotonic() - started
    print(
        f"\n10,000 samples: run written in {made:.1f} s; report of {written.cards} cards "
        f"in {took:.1f} s, {written.bytes / 1e6:.2f} MB"
    )
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert written.bytes < 5_000_000 and written.cards == DEFAULT_LIMIT
    assert len(_cards(page)) == DEFAULT_LIMIT and f"{10_000 - DEFAULT_LIMIT} not shown" in page
    assert "10000: 9896 done, 104 failed" in page and "<td>104</td><td>scorer said no" in page
