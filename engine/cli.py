"""The `mils` command line: the one place that wires tasks, engine and adapters together.

    mils caption INPUTS... [--out RUN_DIR] [endpoints] [loop] [concurrency]
    mils resume RUN_DIR [endpoint overrides]
    mils local up | down | status
    mils demo

Endpoints default to the local stack started by `mils local up` (state in ./.mils/), so
after `mils local up` a plain `mils caption photos/*.jpg` works offline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from engine._local import (
    LOCAL_IMAGE_MODEL,
    LOCAL_TEXT_MODEL,
    MODEL_REPOSITORY,
    STATE_DIR,
    cmd_local,
    local_urls,
)
from engine.config import ConcurrencyConfig, LoopConfig, RetryConfig, from_dict
from engine.errors import ConfigError, MilsError
from engine.logs import configure_logging
from engine.retry import Retrier
from engine.scheduler import RunSummary, Sample, Scheduler
from engine.store import RunStore

__all__ = ["main"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEMO_LOOP = LoopConfig(steps=3, keep=12, requested=8)
DEMO_MAX_TOKENS = 400
EXIT_FAILED_SAMPLES, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130
DEFAULT_GENERATOR_TIMEOUT = 300.0


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
    g.add_argument("--max-tokens", type=int, default=dflt(1024))
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
    parser = argparse.ArgumentParser(prog="mils", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("caption", help="caption images with the MILS loop")
    cap.add_argument("inputs", nargs="+", help="image files, directories or glob patterns")
    cap.add_argument("--task", default="image-caption")
    cap.add_argument("--out", type=Path, help="run directory (default runs/<task>-<time>)")
    cap.add_argument("--init-pool", type=Path, help="initial pool, one text per line")
    loop = LoopConfig()
    cap.add_argument("--steps", type=int, default=loop.steps)
    cap.add_argument("--keep", type=int, default=loop.keep)
    cap.add_argument("--requested", type=int, default=loop.requested)
    cap.add_argument("--exploration", type=float, default=loop.exploration)
    cap.add_argument("--patience", type=int, default=loop.patience)
    cap.add_argument("--top-k", type=int, default=loop.top_k)
    cap.add_argument("--seed", type=int, default=loop.seed)
    _endpoint_args(cap, defaults=True)
    _run_args(cap, defaults=True)

    res = sub.add_parser("resume", help="continue every unfinished sample of a run")
    res.add_argument("run_dir", type=Path)
    _endpoint_args(res, defaults=False)
    _run_args(res, defaults=False)

    loc = sub.add_parser("local", help="start/stop the offline local stack (llama.cpp + Triton)")
    loc.add_argument("action", choices=("up", "down", "status"))

    demo = sub.add_parser("demo", help="caption bundled sample images on a throwaway local stack")
    demo.add_argument("--out", type=Path, help="run directory (default runs/demo-<time>)")
    demo.add_argument("--steps", type=int, default=DEMO_LOOP.steps)
    return parser


# -- configuration -----------------------------------------------------------------


def _endpoints(args: argparse.Namespace, saved: dict[str, Any] | None = None) -> dict[str, Any]:
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
    for key in ("text_model", "image_model"):
        if (value := getattr(args, key)) is not None:
            sc[key] = value
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
        sc.setdefault("image_model", LOCAL_IMAGE_MODEL)
    gen.setdefault("model", "default")
    sc.setdefault("text_model", "clip_text")
    sc.setdefault("image_model", "clip_image")
    return {"generator": gen, "scorer": sc}


def _concurrency(args: argparse.Namespace, saved: dict[str, Any]) -> ConcurrencyConfig:
    values = dict(saved)
    for name in ("samples_in_flight", "generator_in_flight", "score_batch", "score_wait_ms"):
        if (value := getattr(args, name)) is not None:
            values[name] = None if value == "auto" else value
    return from_dict(ConcurrencyConfig, values)


# -- running -----------------------------------------------------------------------


async def _execute(config: dict[str, Any], store: RunStore, show_progress: bool) -> RunSummary:
    from adapters.media import ImageReader
    from adapters.openai_generator import OpenAIGenerator
    from adapters.triton_scorer import TritonScorer
    from tasks import get_task

    task = get_task(config["task"])
    sc = config["endpoints"]["scorer"]
    samples = [Sample(row.id, row.source) for row in store.samples()]
    retry = from_dict(RetryConfig, config["retry"])
    scorer = TritonScorer(
        sc["url"],
        text_model=sc["text_model"],
        image_model=sc["image_model"],
        protocol=sc["protocol"],
    )
    # Servers that are still starting get the same retry policy as every other call.
    await Retrier(retry).call(scorer.open)
    async with contextlib.AsyncExitStack() as stack:
        generators = [
            await stack.enter_async_context(OpenAIGenerator(settings))
            for settings in _generator_settings(config["endpoints"]["generator"])
        ]
        await stack.enter_async_context(scorer)
        scheduler = Scheduler(
            task=task,
            loop=from_dict(LoopConfig, config["loop"]),
            concurrency=from_dict(ConcurrencyConfig, config["concurrency"]),
            retry=retry,
            generator=generators,
            scorer=scorer,
            reader=ImageReader(),
            store=store,
            show_progress=show_progress,
        )
        return await scheduler.run(samples, store.pool())


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


def _report(summary: RunSummary, store: RunStore) -> int:
    """Print the best text per sample (stdout) and the run's summary (stderr)."""
    results = store.export_results()
    with results.open(encoding="utf-8") as lines:
        for row in map(json.loads, lines):
            if row["status"] == "failed":
                print(f"{row['sample_id']}\tFAILED\t{row['error']}")
            elif row["best_text"] is not None:
                print(f"{row['sample_id']}\t{row['best_score']:.4f}\t{row['best_text']}")
    rate = summary.steps / summary.wall_s if summary.wall_s else 0.0
    notes = [
        _count(summary.replies_without_candidates, "reply", "replies") + " without candidates"
        if summary.replies_without_candidates
        else "",
        _count(summary.texts_unscorable, "text", "texts") + " unscorable"
        if summary.texts_unscorable
        else "",
        f"endpoint faults {summary.faults}" if summary.faults else "",
    ]
    print(
        f"\n{summary.done}/{summary.samples} samples done, {summary.failed} failed, "
        f"{summary.steps} steps in {summary.wall_s:.1f} s ({rate:.2f} steps/s); "
        f"{summary.candidates_scored} candidates scored, {summary.texts_embedded} texts embedded"
        + "".join(f"; {note}" for note in notes if note)
        + f"\nresults: {results}",
        file=sys.stderr,
    )
    return EXIT_FAILED_SAMPLES if summary.failed else 0


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _open_logging(run_dir: Path, args: argparse.Namespace) -> None:
    configure_logging(log_file=run_dir / "log.jsonl", console_level=args.log_level)
    structlog.contextvars.bind_contextvars(run_id=run_dir.name)


def _new_run(args: argparse.Namespace, loop: LoopConfig, pool_file: Path | None) -> int:
    from adapters.media import expand_inputs, sample_id_for
    from tasks import get_task

    task = get_task(args.task)
    pool = _load_pool(task, pool_file)
    paths = expand_inputs(args.inputs)
    if not paths:
        raise ConfigError("no inputs; pass image files, directories or glob patterns")
    run_dir = args.out or Path("runs") / f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    config: dict[str, Any] = {
        "task": task.name,
        "loop": asdict(loop),
        "concurrency": asdict(_concurrency(args, {})),
        "retry": asdict(RetryConfig(attempts=args.retries)),
        "endpoints": _endpoints(args),
    }
    _generator_settings(config["endpoints"]["generator"])  # before anything is written
    taken: set[str] = set()
    samples = [(sample_id_for(p, taken), p) for p in paths]
    store = RunStore.create(run_dir, config, pool, samples)
    _open_logging(run_dir, args)
    print(f"run directory: {run_dir} ({len(paths)} samples)", file=sys.stderr)
    try:
        summary = _run_to_end(lambda: _execute(config, store, not args.no_progress), run_dir)
        return _report(summary, store)
    finally:
        store.close()


def _load_pool(task: Any, pool_file: Path | None) -> list[str]:
    """The initial pool, refusing files that cannot give a real one."""
    source = pool_file or task.pool_file
    try:
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the initial pool {str(source)!r} ({reason}); pass --init-pool "
            "with a UTF-8 text file, one text per line"
        ) from None
    lines = [line for line in lines if line]
    pool: list[str] = task.load_pool(pool_file)
    if not pool:
        raise ConfigError(
            f"initial pool {source} has no text lines; pass --init-pool with one text per line"
        )
    if len(pool) == 1 and len(lines) > 1:
        raise ConfigError(
            f"initial pool {source} holds {len(lines)} lines but they are all the same text; "
            "pass --init-pool with distinct texts"
        )
    if len(pool) < len(lines):
        log.warning(
            "initial_pool_duplicates_dropped", pool=str(source), lines=len(lines), unique=len(pool)
        )
    return pool


def _generator_settings(saved: dict[str, Any]) -> list[Any]:
    """One GeneratorSettings per generator URL (validates: ConfigError; reads no key)."""
    from adapters.openai_generator import GeneratorSettings

    values = dict(saved)
    urls = values.pop("base_urls")
    if values.get("api_key_file"):
        values["api_key_file"] = Path(values["api_key_file"])
    return [GeneratorSettings(base_url=url, **values) for url in urls]


def _cmd_caption(args: argparse.Namespace) -> int:
    loop = from_dict(LoopConfig, vars(args))  # the loop flags are named after its fields
    return _new_run(args, loop, args.init_pool)


def _cmd_resume(args: argparse.Namespace) -> int:
    store = RunStore.open(args.run_dir)
    try:
        config = store.config()
        config["endpoints"] = _endpoints(args, config["endpoints"])
        config["concurrency"] = asdict(_concurrency(args, config["concurrency"]))
        if args.retries is not None:
            config["retry"] = asdict(replace(RetryConfig(**config["retry"]), attempts=args.retries))
        _open_logging(args.run_dir, args)
        summary = _run_to_end(lambda: _execute(config, store, not args.no_progress), args.run_dir)
        return _report(summary, store)
    finally:
        store.close()


def _cmd_demo(args: argparse.Namespace) -> int:
    from adapters.local_stack import LlamaServer, TritonServer
    from adapters.media import bundled_samples

    configure_logging(console_level="warning")
    steps = args.steps
    out = args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    images = bundled_samples(STATE_DIR / "samples")
    logs = STATE_DIR / "logs"
    print("starting the local stack (llama.cpp + SmolLM2, Triton) ...", file=sys.stderr)
    with (
        TritonServer(
            model_repository=MODEL_REPOSITORY,
            log_path=logs / "demo-triton.log",
            models=(LOCAL_TEXT_MODEL, LOCAL_IMAGE_MODEL),
        ) as triton,
        LlamaServer(log_path=logs / "demo-llama.log") as llama,
    ):
        args = _parser().parse_args(
            [
                "caption",
                *map(str, images),
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
        return _new_run(args, replace(DEMO_LOOP, steps=steps), None)


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
        print(f"mils: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BaseExceptionGroup as group:
        # Errors that stop a run surface from inside task groups, wrapped: show the
        # engine's own message(s), not a traceback; anything else is a real crash.
        matched, rest = group.split(MilsError)
        if matched is None or rest is not None:
            raise
        for error in _leaves(matched):
            print(f"mils: error: {error}", file=sys.stderr)
        return EXIT_CONFIG


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return list({str(exc): exc for exc in found}.values())


if __name__ == "__main__":
    raise SystemExit(main())
