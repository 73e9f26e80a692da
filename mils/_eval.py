"""`mils eval RUN_DIR --references REFS`: the COCO caption metrics of a run, finally and per step.

The scores are pycocoevalcap's, the code behind published COCO caption numbers: captions and
references are tokenized by the Stanford PTB tokenizer, then scored with BLEU-1..4, METEOR,
ROUGE-L, CIDEr and, when its jars are there, SPICE. The tokenizer, METEOR and SPICE are Java
programs, so pycocoevalcap is imported (and Java started) only here, never by the engine.

Besides the final captions, each committed step is a row: the best text every sample had
after step s, where a sample that stopped earlier (`patience`) keeps its last best, so every
row scores the same samples and quality over steps can be plotted. Step 0 is the best line of
the initial pool, before any generation. CIDEr weighs n-grams by their rarity among the
references of the scored samples, so it is comparable only between rows of the same samples
(and is 0 for a single sample); the rows here always are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

from mils._references import References, clean_text, load_references, shown
from mils.engine import ConfigError, RunStore, StoreError

__all__ = ["METRICS", "Scored", "cmd_eval", "read_captions", "score_rows", "spice_missing"]

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SPICE = "SPICE"
FINAL = "final"
_NEEDS = "mils eval needs pycocoevalcap: pip install 'mils[eval]' (scripts/setup.sh installs it)"


# -- the run's captions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleCaptions:
    """One sample's best texts: the final one and the one after each committed step."""

    id: str
    inputs: tuple[str, ...]
    status: str
    final: str | None
    steps: dict[int, str] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    """The best score after each committed step (the keys of `steps`)."""
    best_score: float | None = None
    error: str | None = None
    """Why the sample failed, or None."""
    input_names: tuple[str, ...] = ()
    """The task's name of each of `inputs` ("image"), in the same order."""
    task: str = ""
    """The sample's task in a run of several tasks; "" in a run of one."""
    artefact: str | None = None
    """The best text's render (a path in the run directory), when the task renders."""


def read_captions(run_dir: Path) -> list[SampleCaptions]:
    """Every sample of the run at `run_dir` with its best texts (read-only, also mid-run).

    Raises:
        StoreError: `run_dir` is not a run of ours, or its database cannot be read.
    """
    if not RunStore.is_run(run_dir) or not (run_dir / "run.db").is_file():
        raise StoreError(
            f"{run_dir} is not a mils run directory; pass the --out folder of `mils caption`"
        )
    try:
        db = sqlite3.connect((run_dir / "run.db").resolve().as_uri() + "?mode=ro", uri=True)
        try:
            db.row_factory = sqlite3.Row
            samples = db.execute("SELECT * FROM samples ORDER BY ord").fetchall()
            steps = db.execute(
                "SELECT sample_id, step, best_text, best_score FROM steps ORDER BY step"
            )
            by_sample: dict[str, dict[int, str]] = {}
            scores: dict[str, dict[int, float]] = {}
            for sid, step, text, score in steps:
                by_sample.setdefault(sid, {})[step] = text
                scores.setdefault(sid, {})[step] = score
            artefacts = _best_artefacts(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {run_dir / 'run.db'}: {exc}") from None
    return [
        SampleCaptions(
            id=row["id"],
            inputs=tuple(named.values()),
            status=row["status"],
            final=row["best_text"],
            steps=by_sample.get(row["id"], {}),
            scores=scores.get(row["id"], {}),
            best_score=row["best_score"],
            error=row["error"],
            input_names=tuple(named),
            task=(row["task"] if "task" in row.keys() else None) or "",  # noqa: SIM118 - sqlite3.Row
            artefact=artefacts.get(row["id"]),
        )
        for row in samples
        for named in [_inputs(row)]
    ]


def _best_artefacts(db: sqlite3.Connection) -> dict[str, str]:
    """Sample id -> the render of its best text (the latest step's, when one was kept)."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(candidates)")}
    if "artefact" not in columns:
        return {}
    rows = db.execute(
        "SELECT c.sample_id, c.artefact FROM candidates c JOIN samples s ON s.id = c.sample_id "
        "WHERE c.text = s.best_text AND c.artefact IS NOT NULL ORDER BY c.step"
    )
    return {sid: artefact for sid, artefact in rows}


def _inputs(row: sqlite3.Row) -> dict[str, str]:
    """The sample's inputs by name (runs written before named inputs have only `source`)."""
    stored = row["inputs"] if "inputs" in row.keys() else None  # noqa: SIM118 - sqlite3.Row
    if stored:
        return dict(json.loads(stored))
    source = row["source"]
    return {"input": os.fsdecode(source) if isinstance(source, bytes) else source}


@dataclass(frozen=True, slots=True)
class Plan:
    """What is scored: rows of captions, each sample's references, and who was left out."""

    rows: dict[str, dict[str, str]]
    """Row name ("final", "step 0", ...) -> sample id -> caption."""
    references: dict[str, list[str]]
    without_references: list[str]
    without_caption: list[str]
    not_done: dict[str, str]
    """Scored samples that are not done -> their status."""


def plan(samples: Sequence[SampleCaptions], references: References, run_dir: Path) -> Plan:
    """Match samples to references and lay out the rows (final, then step 0, 1, ...).

    Raises:
        ConfigError: no sample has both a caption and references.
    """
    captioned = [s for s in samples if s.final is not None]
    refs = {s.id: r for s in captioned if (r := references.match(s.id, s.inputs)) is not None}
    if not refs:
        _no_match(samples, references, run_dir)
    scored = [s for s in captioned if s.id in refs]
    rows = {FINAL: {s.id: str(s.final) for s in scored}}
    for step in sorted({step for s in scored for step in s.steps}):
        rows[f"step {step}"] = {
            s.id: s.steps[max(k for k in s.steps if k <= step)]
            for s in scored
            if any(k <= step for k in s.steps)
        }
    return Plan(
        rows=rows,
        references=refs,
        without_references=[s.id for s in captioned if s.id not in refs],
        without_caption=[s.id for s in samples if s.final is None],
        not_done={s.id: s.status for s in scored if s.status != "done"},
    )


def _no_match(samples: Sequence[SampleCaptions], references: References, run_dir: Path) -> NoReturn:
    if not any(s.final is not None for s in samples):
        raise ConfigError(
            f"run {run_dir} has no caption yet (no committed step); "
            f"let it run, or `mils resume {run_dir}`"
        )
    ours = [s.id for s in samples if s.final is not None]
    raise ConfigError(
        f"none of the {len(ours)} captioned samples of {run_dir} ({shown(ours)}) has "
        f"references in {references.source} (which has references for {len(references.names)}: "
        f"{shown(references.names)}); a sample matches by its id or its input's file name "
        'or stem: a COCO "file_name", or <sample id>.txt in a folder. Pass the references '
        "of this run's images"
    )


# -- scoring ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scored:
    """The scores of each row, corpus-level and per sample."""

    rows: dict[str, dict[str, float]]
    """Row -> metric -> score over the row's samples."""
    per_sample: dict[str, dict[str, dict[str, float]]]
    """Row -> sample id -> metric -> score."""
    spice_note: str | None
    """Why SPICE is not among the metrics, or None when it is (or was not asked for)."""


def score_rows(
    rows: Mapping[str, Mapping[str, str]],
    references: Mapping[str, Sequence[str]],
    *,
    spice: bool = True,
) -> Scored:
    """Score each row's captions (sample id -> caption) against `references` (sample id ->
    reference captions) with pycocoevalcap.

    Raises:
        ConfigError: pycocoevalcap or Java is missing, or a Java tool stopped; the message
            says what to install.
    """
    cap = _pycocoevalcap()
    gts = _tokenize(cap, {sid: list(references[sid]) for sid in _samples(rows)})
    res = _tokenize(
        cap, {(row, s): [text] for row, caps in rows.items() for s, text in caps.items()}
    )
    corpus: dict[str, dict[str, float]] = {}
    each: dict[str, dict[str, dict[str, float]]] = {}
    with _meteor(cap) as meteor:
        for row, captions in rows.items():
            g = {sid: gts[sid] for sid in captions}
            r = {sid: res[(row, sid)] for sid in captions}
            corpus[row], each[row] = _score_row(cap, meteor, g, r)
    note = _spice(cap, rows, gts, res, corpus, each) if spice else None
    return Scored(rows=corpus, per_sample=each, spice_note=note)


def _samples(rows: Mapping[str, Mapping[str, str]]) -> list[str]:
    return list(dict.fromkeys(sid for captions in rows.values() for sid in captions))


def _pycocoevalcap() -> Any:
    """pycocoevalcap's scorers, once Java is known to be there."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.spice import get_stanford_models, spice
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise ConfigError(_NEEDS) from None
    if shutil.which("java") is None:
        raise ConfigError(
            "mils eval runs pycocoevalcap's tokenizer and METEOR, which are Java programs, "
            "and no `java` is on PATH; install a Java runtime (Debian/Ubuntu: apt-get install "
            "default-jre-headless; scripts/setup.sh does it where apt-get works)"
        )
    return argparse.Namespace(
        Bleu=Bleu,
        Cider=Cider,
        Meteor=Meteor,
        Rouge=Rouge,
        PTBTokenizer=PTBTokenizer,
        Spice=spice.Spice,
        corenlp=get_stanford_models,
    )


def _tokenize(cap: Any, texts: Mapping[Any, list[str]]) -> dict[Any, list[str]]:
    """PTB-tokenize (lower case, punctuation removed) each key's texts; one Java run."""
    # An empty line would be dropped and shift every later caption: "." tokenizes to "".
    given = {key: [{"caption": clean_text(t) or "."} for t in ts] for key, ts in texts.items()}
    with tempfile.TemporaryFile() as log:
        try:
            with _output_to(log):  # Java's "PTBTokenizer tokenized N tokens ..." line
                tokens: dict[Any, list[str]] = cap.PTBTokenizer().tokenize(given)
        except OSError as exc:
            raise ConfigError(
                f"pycocoevalcap's PTB tokenizer could not run ({exc}); it writes a temporary "
                "file beside its jar, so install pycocoevalcap where you can write (a virtualenv)"
            ) from None
        if any(len(tokens.get(key, ())) != len(ts) for key, ts in texts.items()):
            raise ConfigError(
                "pycocoevalcap's PTB tokenizer (java) returned fewer lines than it was given: "
                f"{_tail(log) or 'no message'}; check that `java -version` works"
            )
    return tokens


def _tail(log: IO[bytes], chars: int = 400) -> str:
    """The end of what a Java tool wrote to `log`."""
    log.seek(0)
    return log.read().decode(errors="replace").strip()[-chars:]


@contextmanager
def _meteor(cap: Any) -> Iterator[Any]:
    """One METEOR process for every row (it loads its paraphrase table once, in seconds)."""
    meteor = cap.Meteor()
    try:
        yield meteor
    except (OSError, ValueError) as exc:
        dead = meteor.meteor_p.poll() is not None  # else reading its stderr would block
        stderr = meteor.meteor_p.stderr.read().decode(errors="replace") if dead else ""
        raise ConfigError(
            f"METEOR (java -jar meteor-1.5.jar) stopped without a score ({exc}): "
            f"{stderr.strip()[-500:] or 'no message'}; it needs about 2 GB of memory and a "
            "working `java`"
        ) from None
    finally:
        # Meteor's own __del__ waits for its lock: a failed call must not leave it held.
        if meteor.lock.locked():
            meteor.lock.release()
        process = meteor.meteor_p
        process.stdin.close()
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def _score_row(
    cap: Any, meteor: Any, gts: dict[str, list[str]], res: dict[str, list[str]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The row's corpus scores and per-sample scores (every scorer iterates `gts` in order)."""
    bleu, bleu_each = cap.Bleu(4).compute_score(gts, res, verbose=0)
    results = [
        *zip(METRICS[:4], bleu, bleu_each, strict=True),
        ("METEOR", *meteor.compute_score(gts, res)),
        ("ROUGE-L", *cap.Rouge().compute_score(gts, res)),
        ("CIDEr", *cap.Cider().compute_score(gts, res)),
    ]
    corpus = {name: float(score) for name, score, _ in results}
    each = {
        sid: {name: float(scores[i]) for name, _, scores in results} for i, sid in enumerate(gts)
    }
    return corpus, each


# -- SPICE ---------------------------------------------------------------------------------


def spice_missing(cap: Any) -> str | None:
    """Why SPICE cannot run here (its Stanford CoreNLP jars are missing), or None."""
    models = cap.corenlp
    lib = Path(models.SPICEDIR) / models.SPICELIB
    wanted = [f"{models.JAR}.jar", f"{models.JAR}-models.jar"]
    missing = [name for name in wanted if not (lib / name).is_file()]
    if not missing:
        return None
    return (
        f"SPICE not computed: {lib} lacks {' and '.join(missing)} (Stanford CoreNLP), which "
        "SPICE needs. pycocoevalcap downloads them from nlp.stanford.edu on first use, which "
        "cannot work offline, so mils eval does not try. To add them, on a machine with "
        f"network download https://nlp.stanford.edu/software/{models.CORENLP}.zip (about "
        f"400 MB) and copy {' and '.join(wanted)} from its {models.CORENLP}/ folder into "
        f"{lib}; --no-spice skips SPICE without this note"
    )


def _spice(
    cap: Any,
    rows: Mapping[str, Mapping[str, str]],
    gts: dict[str, list[str]],
    res: dict[Any, list[str]],
    corpus: dict[str, dict[str, float]],
    each: dict[str, dict[str, dict[str, float]]],
) -> str | None:
    """Add SPICE to the scores (one Java run for all rows); or say why it is not there."""
    if note := spice_missing(cap):
        return note
    keys = {f"{i}:{sid}": (row, sid) for i, (row, caps) in enumerate(rows.items()) for sid in caps}
    with tempfile.TemporaryFile() as log:
        try:
            with _output_to(log):
                _, scores = cap.Spice().compute_score(
                    {k: gts[sid] for k, (_, sid) in keys.items()},
                    {k: res[v] for k, v in keys.items()},
                )
        except Exception as exc:  # any SPICE failure (Java, its output): the rest stands
            tail = _tail(log)
            hint = (
                "; SPICE 1.0 runs on Java 8 and fails on newer ones: put a Java 8 `java` first "
                "on PATH"
                if "InaccessibleObject" in tail
                else ""
            )
            return f"SPICE failed ({exc}): {tail or 'no message'}{hint}; the other metrics stand"
    for key, score in zip(sorted(keys), scores, strict=True):
        row, sid = keys[key]
        each[row][sid][SPICE] = float(score["All"]["f"])
    for row, captions in rows.items():
        corpus[row][SPICE] = sum(each[row][sid][SPICE] for sid in captions) / len(captions)
    return None


@contextmanager
def _output_to(file: IO[bytes]) -> Iterator[None]:
    """Send this process's stdout and stderr, and so its children's, to `file` meanwhile:
    SPICE's Java progress lines must not mix into the table on stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


# -- the command ----------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    """`mils eval`: print the table, write --json, note who was left out."""
    references = load_references(args.references)
    chosen = plan(read_captions(args.run_dir), references, args.run_dir)
    _notes(chosen, references)
    scored = score_rows(chosen.rows, chosen.references, spice=args.spice)
    if scored.spice_note:
        print(f"mils eval: {scored.spice_note}", file=sys.stderr)
    sys.stdout.write(format_table(chosen, scored))
    if args.json:
        _write_json(args.json, _report(args, chosen, scored))
    return 0


def _notes(chosen: Plan, references: References) -> None:
    total = len(chosen.references) + len(chosen.without_references)
    if chosen.without_references:
        print(
            f"mils eval: {len(chosen.without_references)} of {total} captioned samples have no "
            f"references in {references.source} and are not scored: "
            f"{shown(chosen.without_references)}",
            file=sys.stderr,
        )
    if chosen.without_caption:
        print(
            f"mils eval: {len(chosen.without_caption)} samples have no caption yet (no "
            f"committed step) and are not scored: {shown(chosen.without_caption)}",
            file=sys.stderr,
        )
    if chosen.not_done:
        print(
            f"mils eval: {len(chosen.not_done)} scored samples are not done "
            f"({shown(sorted(set(chosen.not_done.values())))}); their latest best is scored",
            file=sys.stderr,
        )


def _metrics(scored: Scored) -> list[str]:
    return [m for m in (*METRICS, SPICE) if m in scored.rows[FINAL]]


def format_table(chosen: Plan, scored: Scored) -> str:
    """Rows final, step 0, step 1, ...; columns: samples scored, then each metric."""
    metrics = _metrics(scored)
    header = ["row", "samples", *metrics]
    lines = [
        [row, str(len(chosen.rows[row])), *(f"{scores[m]:.3f}" for m in metrics)]
        for row, scores in scored.rows.items()
    ]
    widths = [max(map(len, column)) for column in zip(header, *lines, strict=True)]

    def aligned(line: list[str]) -> str:  # the row name to the left, numbers to the right
        cells = [c.rjust(w) for c, w in zip(line, widths, strict=True)]
        return "  ".join([line[0].ljust(widths[0]), *cells[1:]]) + "\n"

    return "".join(aligned(line) for line in [header, *lines])


def _report(args: argparse.Namespace, chosen: Plan, scored: Scored) -> dict[str, Any]:
    return {
        "run_dir": str(args.run_dir),
        "references": str(args.references),
        "metrics": _metrics(scored),
        "spice": scored.spice_note or ("computed" if args.spice else "not asked for (--no-spice)"),
        "samples": {
            "scored": list(chosen.references),
            "without_references": chosen.without_references,
            "without_caption": chosen.without_caption,
            "not_done": chosen.not_done,
        },
        "rows": [
            {
                "row": row,
                "step": None if row == FINAL else int(row.split()[1]),
                "samples": len(chosen.rows[row]),
                "scores": scores,
                "captions": chosen.rows[row],
                "per_sample": scored.per_sample[row],
            }
            for row, scores in scored.rows.items()
        ],
    }


def _write_json(path: Path, report: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write --json {path}: {exc.strerror or exc}; pass a file in a writable folder"
        ) from None
