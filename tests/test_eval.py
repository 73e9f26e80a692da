"""`mils eval`'s scoring (pycocoevalcap, through real Java) on hand-made captions, its rows
over steps, and its SPICE note; the CLI end to end is in tests/cli/test_cli_eval.py."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from mils._demo import scene_references
from mils._eval import METRICS, SampleCaptions, _spice, plan, score_rows, spice_missing
from mils._references import References
from mils.tasks.scenes import Split, canonical, change_one, scenes


def _in_range(scores: dict[str, float]) -> bool:
    return all(0 <= v <= 1 for m, v in scores.items() if m != "CIDEr") and scores["CIDEr"] >= 0


def test_a_caption_equal_to_a_reference_beats_a_near_miss_which_beats_an_unrelated_one() -> None:
    """Per sample and over the rows: a caption identical to a reference scores BLEU-4 1 and
    the highest CIDEr; the same caption with one attribute changed scores less, an unrelated
    caption least. CIDEr is compared only between rows of the same samples (its n-gram
    weights come from their references)."""
    world = list(itertools.islice(scenes(Split.HELD_OUT), 4))
    refs = {f"s{i}": scene_references(scene) for i, scene in enumerate(world)}
    right = {sid: texts[0] for sid, texts in refs.items()}
    near = {f"s{i}": canonical(change_one(s, random.Random(i))) for i, s in enumerate(world)}
    wrong = {sid: "two people riding horses in a snowy forest at dawn" for sid in refs}
    scored = score_rows({"right": right, "near": near, "wrong": wrong}, refs, spice=False)
    assert list(scored.rows) == ["right", "near", "wrong"]
    for sid in refs:
        each = {row: scored.per_sample[row][sid] for row in scored.rows}
        assert each["right"]["BLEU-4"] > 0.99 and each["wrong"]["BLEU-4"] < 0.1
        assert each["right"]["CIDEr"] > each["near"]["CIDEr"] > each["wrong"]["CIDEr"]
    rows = scored.rows
    assert list(rows["right"]) == list(METRICS) and all(map(_in_range, rows.values()))
    assert all(rows["right"][m] > rows["near"][m] > rows["wrong"][m] for m in METRICS)
    assert rows["right"]["BLEU-4"] > 0.99 and rows["right"]["METEOR"] > 0.99


def test_rows_cover_every_step_and_a_sample_that_stopped_keeps_its_last_best() -> None:
    """Rows are final, then each committed step; a sample stopped early (patience) is scored
    with its last best in later rows, so every row scores the same samples."""
    samples = [
        SampleCaptions("a", ("/x/a.png",), "done", "a2", {0: "a0", 1: "a1", 2: "a2"}),
        SampleCaptions("b", ("/x/b.png",), "done", "b0", {0: "b0"}),
        SampleCaptions("c", ("/x/c.png",), "pending", None, {}),
        SampleCaptions("d", ("/x/d.png",), "failed", "d1", {0: "d0", 1: "d1"}),
    ]
    refs = References(Path("r"), {"a": ["x"], "b": ["y"], "d": ["z"]}, ["a", "b", "d"])
    chosen = plan(samples, refs, Path("run"))
    assert chosen.rows == {
        "final": {"a": "a2", "b": "b0", "d": "d1"},
        "step 0": {"a": "a0", "b": "b0", "d": "d0"},
        "step 1": {"a": "a1", "b": "b0", "d": "d1"},
        "step 2": {"a": "a2", "b": "b0", "d": "d1"},
    }
    assert chosen.without_caption == ["c"] and chosen.not_done == {"d": "failed"}


def _corenlp(folder: Path) -> Namespace:
    """pycocoevalcap's CoreNLP download settings, pointed at `folder`."""
    return Namespace(
        SPICEDIR=str(folder),
        SPICELIB="lib",
        JAR="stanford-corenlp-3.6.0",
        CORENLP="stanford-corenlp-full-2015-12-09",
    )


def _add_jars(folder: Path) -> None:
    (folder / "lib").mkdir()
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (folder / "lib" / name).write_bytes(b"")


def test_spice_note_names_the_missing_jars_and_how_to_get_them(tmp_path: Path) -> None:
    """Without the CoreNLP jars SPICE is not attempted (its first use downloads them); the
    note says which are missing, where they go and where they come from; with them, none."""
    note = spice_missing(Namespace(corenlp=_corenlp(tmp_path)))
    assert note is not None
    assert "stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar" in note
    assert "cannot work offline" in note and str(tmp_path / "lib") in note
    assert "stanford-corenlp-full-2015-12-09.zip" in note
    _add_jars(tmp_path)
    assert spice_missing(Namespace(corenlp=_corenlp(tmp_path))) is None


_JAVA_SAYS = "import sys; print('Parsing reference captions'); sys.stderr.write('{}'); sys.exit({})"


class _Spice:
    """pycocoevalcap's Spice with the Java part replaced by a child process that prints."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def compute_score(
        self, gts: dict[str, list[str]], res: dict[str, list[str]]
    ) -> tuple[float, list[dict[str, dict[str, float]]]]:
        error = "java.lang.reflect.InaccessibleObjectException" if self.fail else ""
        subprocess.check_call([sys.executable, "-c", _JAVA_SAYS.format(error, int(self.fail))])
        assert sorted(gts) == sorted(res)
        return 0.0, [{"All": {"f": len(res[key][0]) / 10}} for key in sorted(gts)]


def test_spice_scores_every_row_in_one_run_and_a_failure_leaves_the_rest(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """With the jars there, SPICE is added to every row and sample (a row's SPICE is the mean
    of its samples'), its Java output kept off stdout; when it fails, the note carries its
    last words (and the Java 8 hint) and the other metrics are unchanged."""
    _add_jars(tmp_path)
    rows = {"final": {"a": "xx", "b": "xxxx"}, "step 0": {"a": "x", "b": "x"}}
    res = {(row, sid): [text] for row, caps in rows.items() for sid, text in caps.items()}
    gts = {"a": ["ref a"], "b": ["ref b"]}
    cap = Namespace(corenlp=_corenlp(tmp_path), Spice=_Spice)
    corpus = {row: {"BLEU-1": 0.5} for row in rows}
    each = {row: {sid: {"BLEU-1": 0.5} for sid in caps} for row, caps in rows.items()}
    assert _spice(cap, rows, gts, res, corpus, each) is None
    assert corpus == {
        "final": {"BLEU-1": 0.5, "SPICE": pytest.approx(0.3)},
        "step 0": {"BLEU-1": 0.5, "SPICE": pytest.approx(0.1)},
    }
    assert each["final"]["b"] == {"BLEU-1": 0.5, "SPICE": 0.4}
    cap.Spice = lambda: _Spice(fail=True)
    before = {row: dict(scores) for row, scores in corpus.items()}
    note = _spice(cap, rows, gts, res, corpus, each)
    assert note is not None and note.startswith("SPICE failed")
    assert "InaccessibleObjectException" in note and "Java 8" in note
    assert corpus == before
    assert "Parsing reference captions" not in capfd.readouterr().out


def test_the_cli_does_not_import_pycocoevalcap() -> None:
    """The metrics (and their Java) load only when `mils eval` scores."""
    code = "import sys, mils.cli; print([m for m in sys.modules if m.startswith('pycocoevalcap')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
