"""The `mils` command line: a client of the public API (`mils.open_run`, `mils.resume_run`).

    mils caption INPUTS... [--out RUN_DIR] [endpoints] [loop] [concurrency]
    mils resume RUN_DIR [endpoint overrides]
    mils local up | down | status
    mils demo

Endpoints default to the local stack started by `mils local up` (state in ./.mils/), so
after `mils local up` a plain `mils caption photos/*.jpg` works offline. The library's
errors name parameters (`steps`); this module shows them as the flags that set them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

import mils
from mils._api import Run, load_run_config, open_run, resume_run
from mils._config import generator_settings, scorer_settings
from mils._display import show_progress
from mils._local import (
    LOCAL_IMAGE_MODEL,
    LOCAL_TEXT_MODEL,
    STATE_DIR,
    cmd_local,
    local_urls,
    model_repository,
)
from mils.adapters import GeneratorSettings, ScorerSettings, expand_inputs
from mils.adapters.local_stack import LlamaServer, TritonServer
from mils.adapters.openai_generator import DEFAULT_MAX_TOKENS
from mils.engine import (
    ConcurrencyConfig,
    ConfigError,
    LoopConfig,
    MilsError,
    RetryConfig,
    RunSummary,
    configure_logging,
)
from mils.engine.config import from_dict
from mils.engine.logs import get_logger
from mils.tasks import TASKS, get_task

__all__ = ["main"]

log = get_logger(__name__)

T = TypeVar("T")

DEMO_LOOP = LoopConfig(steps=3, keep=12, requested=8)
DEMO_MAX_TOKENS = 400
EXIT_FAILED_SAMPLES, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130
DEFAULT_GENERATOR_TIMEOUT = 300.0
_LOOP_FIELDS = {f.name for f in dataclasses.fields(LoopConfig)}

# Library parameters (named in error messages as `name`) and the flags that set them.
_FLAGS = {
    "api_key_file": "--generator-api-key-file",
    "base_url": "--generator-url",
    "model": "--generator-model",
    "out": "--out",
    "pool": "--init-pool",
    "read_timeout": "--generator-timeout",
    "retries": "--retries",
    "target_model": "--image-model",
    "text_model": "--text-model",
    **{
        name: "--" + name.replace("_", "-")
        for name in (
            *_LOOP_FIELDS,
            "samples_in_flight",
            "generator_in_flight",
            "score_batch",
            "score_in_flight",
            "score_wait_ms",
        )
    },
}


def _for_cli(message: str) -> str:
    """A library message with its parameter names (`steps`) shown as flags (--steps)."""
    return re.sub(r"`(\w+)`", lambda m: _FLAGS.get(m[1], m[0]), message)


# -- arguments ---------------------------------------------------------------------


def _endpoint_args(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Endpoint options; on resume they only override what the run saved."""
    dflt: Callable[[Any], Any] = (lambda value: value) if defaults else (lambda value: None)
    g = parser.add_argument_group("generator (OpenAI-compatible chat endpoint)")
    g.add_argument(
        "--generator-url",
        action="append",
        help="base URL, e.g. http://vllm:8000/v1 (default: the local stack from `mils local up`)",
    )
    g.add_argument("--generator-model", help="model name sent with each request")
    g.add_argument("--temperature", type=float, default=dflt(0.5))
    g.add_argument("--top-p", type=float, default=dflt(0.9))
    g.add_argument(
        "--max-tokens",
        type=int,
        default=dflt(DEFAULT_MAX_TOKENS),
        help=f"most tokens per reply ({DEFAULT_MAX_TOKENS}); a reply cut off loses its last line",
    )
    g.add_argument(
        "--generator-timeout",
        type=float,
        dest="read_timeout",
        default=dflt(DEFAULT_GENERATOR_TIMEOUT),
        help="seconds to wait for a reply before retrying it (default 300)",
    )
    g.add_argument(
        "--generator-api-key-env",
        dest="api_key_env",
        default=dflt("OPENAI_API_KEY"),
        help="environment variable holding the API key (default OPENAI_API_KEY)",
    )
    g.add_argument(
        "--generator-api-key-file",
        dest="api_key_file",
        help="file holding the API key (used when the variable is unset)",
    )
    s = parser.add_argument_group("scorer (Triton Inference Server)")
    s.add_argument("--scorer-url", help="Triton address host:port (gRPC port for grpc)")
    s.add_argument("--scorer-protocol", choices=("grpc", "http"), default=dflt("grpc"))
    s.add_argument("--text-model", help="Triton text encoder (default clip_text)")
    s.add_argument("--image-model", help="Triton image encoder (default clip_image)")


def _limit(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


def _run_args(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    dflt: Callable[[Any], Any] = (lambda value: value) if defaults else (lambda value: None)
    c = parser.add_argument_group("concurrency")
    base = ConcurrencyConfig()
    c.add_argument("--samples-in-flight", type=int, default=dflt(base.samples_in_flight))
    c.add_argument(
        "--generator-in-flight",
        type=_limit,
        default=dflt("auto"),
        help="requests in flight per generator endpoint, or 'auto' (adapts to its latency)",
    )
    c.add_argument("--score-batch", type=int, default=dflt(base.score_batch))
    c.add_argument("--score-wait-ms", type=float, default=dflt(base.score_wait_ms))
    c.add_argument(
        "--retries",
        type=int,
        default=dflt(RetryConfig().attempts),
        help="attempts per endpoint call, the first included",
    )
    o = parser.add_argument_group("output")
    o.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="console log level (the run's log.jsonl has all)",
    )
    o.add_argument("--no-progress", action="store_true", help="no live progress line")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mils",
        description="Run MILS: a text-only LLM proposes texts, a pretrained scorer scores "
        "them against your images, the best go back into the prompt, and the loop repeats.",
    )
    parser.add_argument("--version", action="version", version=f"mils {mils.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("caption", help="caption images with the MILS loop")
    cap.add_argument("inputs", nargs="+", help="image files, directories or glob patterns")
    cap.add_argument(
        "--task",
        default="image-caption",
        help="; ".join(f"{t.name}: {t.summary}" for t in TASKS.values()),
    )
    cap.add_argument("--out", type=Path, help="run directory (default runs/<task>-<time>)")
    cap.add_argument("--init-pool", type=Path, help="initial pool, one text per line")
    lp = cap.add_argument_group("the loop (defaults: the task's own, shown for image-caption)")
    lp.add_argument("--steps", type=int, help="optimisation steps per sample (10)")
    lp.add_argument("--keep", type=int, help="top candidates shown and carried on (50)")
    lp.add_argument("--requested", type=int, help="new candidates asked for per step (50)")
    lp.add_argument(
        "--exploration", type=float, help="fraction of shown slots given to random picks (0)"
    )
    lp.add_argument("--patience", type=int, help="stop a sample after N steps without gain (off)")
    lp.add_argument("--top-k", type=int, help="K of the mean-of-top-K recorded per step (10)")
    lp.add_argument(
        "--candidate-limit",
        type=int,
        help="most new candidates scored per step; extra lines in a reply are scored up to it "
        "(4 x --requested)",
    )
    lp.add_argument("--seed", type=int, help="seed of the exploration draws (0)")
    _endpoint_args(cap, defaults=True)
    _run_args(cap, defaults=True)

    res = sub.add_parser("resume", help="continue every unfinished sample of a run")
    res.add_argument("run_dir", type=Path)
    _endpoint_args(res, defaults=False)
    _run_args(res, defaults=False)

    loc = sub.add_parser("local", help="start/stop the offline local stack (llama.cpp + Triton)")
    loc.add_argument("action", choices=("up", "down", "status"))
    loc.add_argument(
        "--model-repository",
        type=Path,
        help="Triton model repository to serve (default: the one shipped with mils)",
    )

    demo = sub.add_parser("demo", help="caption generated scenes on a throwaway local stack")
    demo.add_argument("--out", type=Path, help="run directory (default runs/demo-<time>)")
    demo.add_argument("--steps", type=int, default=DEMO_LOOP.steps)
    return parser


# -- configuration -----------------------------------------------------------------


def _endpoints(
    args: argparse.Namespace, saved: dict[str, Any] | None = None
) -> tuple[tuple[GeneratorSettings, ...], ScorerSettings]:
    """Generator and scorer settings: flags, else the saved run, else the local stack."""
    saved = saved or {}
    gen = dict(saved.get("generator", {}))
    sc = dict(saved.get("scorer", {}))
    for key in (
        "temperature",
        "top_p",
        "max_tokens",
        "read_timeout",
        "api_key_env",
        "api_key_file",
    ):
        if (value := getattr(args, key)) is not None:
            gen[key] = str(value) if key == "api_key_file" else value
    if args.scorer_protocol:
        sc["protocol"] = args.scorer_protocol
    if args.generator_url:
        gen["base_urls"] = args.generator_url
    if args.generator_model:
        gen["model"] = args.generator_model
    if args.scorer_url:
        sc["url"] = args.scorer_url
    if args.text_model is not None:
        sc["text_model"] = args.text_model
    if args.image_model is not None:
        sc["target_model"] = args.image_model
    if "base_urls" not in gen or "url" not in sc:
        local = local_urls()
        if not local:
            raise ConfigError(
                "no endpoints: pass --generator-url and --scorer-url, or start the offline "
                "local stack first with `mils local up`"
            )
        gen.setdefault("base_urls", [local["generator_url"]])
        gen.setdefault("model", local["generator_model"])
        protocol = sc.get("protocol", "grpc")
        sc.setdefault("url", local["scorer_url" if protocol == "grpc" else "scorer_http_url"])
        sc.setdefault("text_model", LOCAL_TEXT_MODEL)
        sc.setdefault("target_model", LOCAL_IMAGE_MODEL)
    gen.setdefault("model", "default")
    scorer = scorer_settings(sc)
    assert scorer is not None  # it has a url
    return generator_settings(gen), scorer


def _concurrency(args: argparse.Namespace, saved: dict[str, Any]) -> ConcurrencyConfig:
    values = dict(saved)
    for name in ("samples_in_flight", "generator_in_flight", "score_batch", "score_wait_ms"):
        if (value := getattr(args, name)) is not None:
            values[name] = None if value == "auto" else value
    return from_dict(ConcurrencyConfig, values)


# -- running -----------------------------------------------------------------------


def _drive(run: Run, args: argparse.Namespace) -> int:
    """Run to the end with a live display; print the results and the summary."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(log_file=run.run_dir / "log.jsonl", console_level=args.log_level)
    structlog.contextvars.bind_contextvars(run_id=run.run_dir.name)

    async def work() -> RunSummary:
        async with run, asyncio.TaskGroup() as group:
            display = group.create_task(show_progress(run, enabled=not args.no_progress))
            try:
                async for _ in run:
                    pass
                return await run.wait()
            finally:
                display.cancel()

    summary = _run_to_end(work, run.run_dir)
    return _report(summary, run.run_dir)


def _run_to_end(run: Callable[[], Awaitable[T]], run_dir: Path) -> T:
    """Run the coroutine; on Ctrl-C or SIGTERM stop cleanly and say how to resume."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run()

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.warning("run_interrupted", run_dir=str(run_dir))
        print(
            f"\ninterrupted; every committed step is kept. Continue with:\n  mils resume {run_dir}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_INTERRUPTED) from None


def _report(summary: RunSummary, run_dir: Path) -> int:
    """Print the best text per sample (stdout) and the run's summary (stderr)."""
    results = run_dir / "results.jsonl"
    with results.open(encoding="utf-8") as lines:
        for row in map(json.loads, lines):
            if row["status"] == "failed":
                print(f"{row['sample_id']}\tFAILED\t{row['error']}")
            elif row["best_text"] is not None:
                print(f"{row['sample_id']}\t{row['best_score']:.4f}\t{row['best_text']}")
    rate = summary.steps / summary.wall_s if summary.wall_s else 0.0
    counted = (
        (summary.replies_without_candidates, "reply", "replies", "without candidates"),
        (summary.replies_truncated, "reply", "replies", "cut off by --max-tokens"),
        (summary.candidates_too_long, "line", "lines", "too long to be candidates"),
        (summary.candidates_over_limit, "candidate", "candidates", "past --candidate-limit"),
        (summary.texts_unscorable, "text", "texts", "unscorable"),
    )
    notes = [f"{_count(n, one, many)} {what}" for n, one, many, what in counted if n]
    if summary.faults:
        notes.append(f"endpoint faults {summary.faults}")
    print(
        f"\n{summary.done}/{summary.samples} samples done, {summary.failed} failed, "
        f"{summary.steps} steps in {summary.wall_s:.1f} s ({rate:.2f} steps/s); "
        f"{summary.candidates_scored} candidates scored, {summary.texts_evaluated} texts embedded"
        + "".join(f"; {note}" for note in notes)
        + f"\nresults: {results}",
        file=sys.stderr,
    )
    return EXIT_FAILED_SAMPLES if summary.failed else 0


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _cmd_caption(args: argparse.Namespace, *, loop: LoopConfig | None = None) -> int:
    task = get_task(args.task)
    given = {k: v for k, v in vars(args).items() if k in _LOOP_FIELDS and v is not None}
    paths = expand_inputs(args.inputs)
    if not paths:
        raise ConfigError("no inputs; pass image files, directories or glob patterns")
    generator, scorer = _endpoints(args)
    run = open_run(
        task,
        paths,
        generator=generator,
        scorer=scorer,
        out=args.out or Path("runs") / f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        loop=loop or replace(task.loop, **given),
        concurrency=_concurrency(args, {}),
        retry=RetryConfig(attempts=args.retries),
        pool=args.init_pool,
    )
    print(f"run directory: {run.run_dir} ({len(paths)} samples)", file=sys.stderr)
    return _drive(run, args)


def _cmd_resume(args: argparse.Namespace) -> int:
    saved = load_run_config(args.run_dir)
    generator, scorer = _endpoints(args, saved.to_json()["endpoints"])
    retry = saved.retry if args.retries is None else replace(saved.retry, attempts=args.retries)
    run = resume_run(
        args.run_dir,
        generator=generator,
        scorer=scorer,
        concurrency=_concurrency(args, asdict(saved.concurrency)),
        retry=retry,
    )
    return _drive(run, args)


def _cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the scenes need Pillow (the `local` extra), which `mils caption` does not.
    from mils._demo import print_scene_report, write_demo_pool, write_demo_scenes

    steps = args.steps
    configure_logging(console_level="warning")
    out = args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    truth = write_demo_scenes(STATE_DIR / "samples")
    pool = write_demo_pool(STATE_DIR / "samples" / "scene-pool.txt")
    logs = STATE_DIR / "logs"
    print("starting the local stack (llama.cpp + SmolLM2, Triton) ...", file=sys.stderr)
    with (
        TritonServer(
            model_repository=model_repository(),
            log_path=logs / "demo-triton.log",
            models=(LOCAL_TEXT_MODEL, LOCAL_IMAGE_MODEL),
        ) as triton,
        LlamaServer(log_path=logs / "demo-llama.log") as llama,
    ):
        args = _parser().parse_args(
            [
                "caption",
                *map(str, truth),
                "--init-pool",
                str(pool),
                "--generator-url",
                llama.base_url,
                "--generator-model",
                "smollm2",
                "--scorer-url",
                triton.grpc_url,
                "--text-model",
                LOCAL_TEXT_MODEL,
                "--image-model",
                LOCAL_IMAGE_MODEL,
                "--max-tokens",
                str(DEMO_MAX_TOKENS),
                "--log-level",
                "error",  # a tiny model's odd replies are in log.jsonl, not on screen
                "--generator-in-flight",
                "1",
                "--out",
                str(out),
            ]
        )
        status = _cmd_caption(args, loop=replace(DEMO_LOOP, steps=steps))
    print_scene_report(out, truth)
    return status


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "caption": _cmd_caption,
    "resume": _cmd_resume,
    "local": cmd_local,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mils` console script."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except MilsError as exc:
        print(f"mils: error: {_for_cli(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except BaseExceptionGroup as group:
        # Errors that stop a run surface from inside task groups, wrapped: show the
        # engine's own message(s), not a traceback; anything else is a real crash.
        matched, rest = group.split(MilsError)
        if matched is None or rest is not None:
            raise
        for error in _leaves(matched):
            print(f"mils: error: {_for_cli(str(error))}", file=sys.stderr)
        return EXIT_CONFIG


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return list({str(exc): exc for exc in found}.values())


if __name__ == "__main__":
    raise SystemExit(main())
