"""The `mils` command line: a client of the public API (`mils.open_run`, `mils.resume_run`).

    mils caption INPUTS... [--out RUN_DIR] [--config FILE] [options]
    mils enhance PROMPT_FILES... [--prompt TEXT]... | stylize CONTENT STYLE... [options]
    mils arithmetic INPUT INPUT [options]
    mils resume RUN_DIR [options]
    mils status RUN_DIR | runs [DIR] | config show RUN_DIR | tasks
    mils salvage RUN_DIR NEW_DIR
    mils local up | down | status
    mils models pull NAME | list
    mils eval RUN_DIR --references REFS [--json FILE]
    mils report RUN_DIR [--references REFS] [--out FILE] [--limit N] [--sort ORDER]
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
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from mils._api import Run, initial_pool, load_run_config, open_run, resume_run
from mils._args import DEMO_LOOP, parser
from mils._arithmetic import cmd_arithmetic
from mils._config import MIXED, RunConfig, read_toml
from mils._display import print_results, print_summary, show_progress
from mils._dryrun import print_projection, project
from mils._eval import cmd_eval
from mils._inputs import image_pairs, prompt_samples
from mils._local import (
    LOCAL_SCORERS,
    STATE_DIR,
    cmd_local,
    model_repository,
    offline_generator,
)
from mils._media import describe, media_kinds, other_kinds, tasks_for_files
from mils._metrics import DEFAULT_METRICS_HOST, MetricsConfig
from mils._models import cmd_models
from mils._ray import RaySettings
from mils._report import cmd_report
from mils._settings import mixed_settings, run_settings
from mils._status import print_runs, print_status
from mils.adapters import expand_inputs
from mils.adapters.local_stack import LlamaServer, TritonServer
from mils.engine import ConfigError, LoopConfig, MilsError, RunStore, StoreError, configure_logging
from mils.engine.logs import get_logger
from mils.engine.scheduler import Sample
from mils.tasks import TASKS, Task, get_task

__all__ = ["main"]

log = get_logger(__name__)

T = TypeVar("T")

DEMO_MAX_TOKENS = 400
EXIT_FAILED_SAMPLES, EXIT_CONFIG, EXIT_BUDGET, EXIT_INTERRUPTED = 1, 2, 3, 130

# Library parameters (named in error messages as `name`) and the flags that set them.
_FLAGS = {
    "api_key_file": "--generator-api-key-file",
    "api_key_env": "--generator-api-key-env",
    "batch": "--generator-mode batch",
    "poll_s": "--batch-poll",
    "linger_s": "--batch-linger",
    "max_rate_limit_wait_s": "--max-rate-limit-wait",
    "host": "--metrics-host",
    "port": "--metrics-port",
    "base_url": "--generator-url",
    "config": "--config",
    "limit": "--limit",
    "model": "--generator-model",
    "prompt_mode": "--prompt-mode",
    "prices": "--prices",
    "reply_format": "--reply-format",
    "out": "--out",
    "task": "--task",
    "pool": "--init-pool",
    "read_timeout": "--generator-timeout",
    "retries": "--retries",
    "rpm": "--rpm",
    "tpm": "--tpm",
    "scorer_url": "--scorer-url",
    "target_model": "--target-model",
    "text_model": "--text-model",
    **{
        name: "--" + name.replace("_", "-")
        for name in (
            *(f.name for f in dataclasses.fields(LoopConfig)),
            "samples_in_flight",
            "generator_in_flight",
            "score_batch",
            "score_in_flight",
            "score_wait_ms",
            "price_in",
            "price_out",
            "max_cost",
            "max_tokens_total",
            "max_requests",
        )
    },
}


def _for_cli(message: str) -> str:
    """A library message with its parameter names (`steps`) shown as flags (--steps)."""
    return re.sub(r"`(\w+)`", lambda m: _FLAGS.get(m[1], m[0]), message)


# -- running -----------------------------------------------------------------------


def _drive(run: Run, args: argparse.Namespace) -> int:
    """Run to the end with a live display; print the results and the summary."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(log_file=run.run_dir / "log.jsonl", console_level=args.log_level)
    structlog.contextvars.bind_contextvars(run_id=run.run_dir.name)
    if inferred := getattr(args, "task_inferred", None):
        tasks = {"tasks": list(run.tasks)} if len(run.tasks) > 1 else {}
        log.info(
            "task_inferred", task=run.config.task, **tasks, inputs=inferred, hint="--task sets it"
        )
    mode = args.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "plain"

    async def work() -> Any:
        async with run, asyncio.TaskGroup() as group:
            if run.metrics_url:
                print(f"metrics: {run.metrics_url}", file=sys.stderr, flush=True)
            display = group.create_task(show_progress(run, mode=mode))
            try:
                async for _ in run:
                    pass
                return await run.wait()
            finally:
                display.cancel()

    summary = run_to_end(work, run.run_dir)
    results = run.run_dir / "results.jsonl"
    if not results.is_file():
        print(f"{results} could not be written; `mils resume {run.run_dir}` writes it")
        return EXIT_CONFIG
    with results.open(encoding="utf-8") as lines:
        print_results(map(json.loads, lines), args.format, sys.stdout)
    print_summary(summary, str(results), sys.stderr)
    if summary.budget_reached is not None:
        limit = _for_cli(summary.budget_reached).split(" ", 1)[0]  # the flag
        print(
            f"budget reached: {_for_cli(summary.budget_reached)}; every committed step is "
            f"kept. Continue with a higher limit:\n  mils resume {run.run_dir} {limit} HIGHER",
            file=sys.stderr,
        )
        return EXIT_BUDGET
    return EXIT_FAILED_SAMPLES if summary.failed else 0


def run_to_end(run: Callable[[], Awaitable[T]], run_dir: Path) -> T:
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


# -- commands ----------------------------------------------------------------------


def _cmd_caption(args: argparse.Namespace) -> int:
    file = read_toml(args.config) if args.config else {}
    named = args.task or file.get("task")
    if named and named != MIXED:
        task = get_task(named)
        paths = expand_inputs(args.inputs, media_kinds(task))
        other_kinds(task, paths)
    else:
        paths = expand_inputs(args.inputs)
        groups = tasks_for_files(paths)
        args.task_inferred = describe(groups)
        if len(groups) > 1:
            return _caption_mixed(args, paths, groups, file)
        task = get_task(next(iter(groups), "image-caption"))
        print(f"task: {task.name} (for {args.task_inferred}; --task sets it)", file=sys.stderr)
    if not paths:
        raise ConfigError("no inputs; pass media files, directories or glob patterns")
    settings = run_settings(args, saved=None, task=task, file=file)
    if args.dry_run:
        pool, _ = initial_pool(task, args.init_pool)
        print_projection(project(task, len(paths), pool, settings), sys.stdout)
        return 0
    return _drive(_new_run(task, paths, settings, args), args)


def _caption_mixed(
    args: argparse.Namespace, paths: list[str], groups: dict[str, list[str]], file: dict[str, Any]
) -> int:
    """One run of files of several kinds, each file captioned by its kind's task (its own
    loop, pool and scorer pair); the flags apply to every task."""
    if args.init_pool is not None:
        raise ConfigError(
            f"--init-pool gives one pool to {len(groups)} tasks ({', '.join(groups)}); "
            "leave it out (each task starts from its own), or caption each kind on its own "
            "with --task"
        )
    tasks = [get_task(name) for name in groups]
    settings = mixed_settings(args, saved=None, tasks=tasks, file=file)
    shown = ", ".join(f"{name} (for {describe({name: g})})" for name, g in groups.items())
    print(f"tasks: {shown}, in one run; --task keeps one kind", file=sys.stderr)
    if args.dry_run:
        for task in tasks:
            pool, _ = initial_pool(task, None)
            each = dataclasses.replace(settings, loop=settings.loop_for(task.name))
            sys.stdout.write(f"{task.name}: ")
            print_projection(project(task, len(groups[task.name]), pool, each), sys.stdout)
        return 0
    names = [task.name for task in tasks]
    run = open_run(
        None,
        paths,
        generator=settings.generator,
        scorer={n: s for n in names if (s := settings.scorer_for(n)) is not None} or None,
        out=args.out or Path("runs") / f"{MIXED}-{time.strftime('%Y%m%d-%H%M%S')}",
        loop={n: settings.loop_for(n) for n in names},
        concurrency=settings.concurrency,
        retry=settings.retry,
        budget=settings.budget,
        batch=settings.batch,
        metrics=_metrics(args),
        ray=_ray(args),
    )
    print(f"run directory: {run.run_dir} ({len(paths)} samples)", file=sys.stderr)
    return _drive(run, args)


def _new_run(
    task: Task,
    inputs: Sequence[str | Path | Sample],
    settings: RunConfig,
    args: argparse.Namespace,
) -> Run:
    run = open_run(
        task,
        inputs,
        generator=settings.generator,
        scorer=settings.scorer,
        renderer=settings.renderer,
        out=args.out or Path("runs") / f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        loop=settings.loop,
        concurrency=settings.concurrency,
        retry=settings.retry,
        budget=settings.budget,
        batch=settings.batch,
        pool=args.init_pool,
        metrics=_metrics(args),
        ray=_ray(args),
    )
    print(f"run directory: {run.run_dir} ({len(inputs)} samples)", file=sys.stderr)
    return run


def _cmd_enhance(args: argparse.Namespace) -> int:
    return _generate("t2i-enhance", prompt_samples(args.prompts, args.prompt), args)


def _cmd_stylize(args: argparse.Namespace) -> int:
    return _generate("style-transfer", image_pairs(args.images, args.pairs), args)


def _generate(task_name: str, samples: Sequence[Sample], args: argparse.Namespace) -> int:
    """Run a generation task on `samples` with the settings of the flags."""
    task = get_task(task_name)
    settings = run_settings(args, saved=None, task=task, file={})
    return _drive(_new_run(task, samples, settings, args), args)


def _cmd_resume(args: argparse.Namespace) -> int:
    saved = load_run_config(args.run_dir)
    file = read_toml(args.config) if args.config else {}
    if saved.tasks:  # a run of several tasks: each keeps its own loop and scorer pair
        tasks = [get_task(name) for name in saved.tasks]
        settings = mixed_settings(args, saved=saved, tasks=tasks, file=file)
    else:
        settings = run_settings(args, saved=saved, task=get_task(saved.task), file=file)
    run = resume_run(
        args.run_dir,
        generator=settings.generator,
        scorer=settings.scorer,
        renderer=settings.renderer,
        concurrency=settings.concurrency,
        retry=settings.retry,
        budget=settings.budget,
        batch=settings.batch or "live",
        metrics=_metrics(args),
        ray=_ray(args),
    )
    return _drive(run, args)


def _ray(args: argparse.Namespace) -> RaySettings | None:
    """Ray settings from --ray and --ray-actors, or None (one process)."""
    if args.ray is None:
        if args.ray_actors is not None:
            raise ConfigError("--ray-actors needs --ray (auto, local or HOST:PORT); pass both")
        return None
    return RaySettings(address=args.ray, actors=args.ray_actors)


def _metrics(args: argparse.Namespace) -> MetricsConfig | None:
    """Prometheus metrics on --metrics-port, or none."""
    if args.metrics_port is None:
        if args.metrics_host is not None:
            raise ConfigError("--metrics-host needs --metrics-port; pass both")
        return None
    return MetricsConfig(port=args.metrics_port, host=args.metrics_host or DEFAULT_METRICS_HOST)


def _cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the scenes need Pillow (the `local` extra), which `mils caption` does not.
    from mils._demo import print_report, write_demo_items, write_demo_pool, write_scene_references
    from mils._worlds import world_for_task

    configure_logging(console_level="warning")
    out = args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    world = world_for_task(f"{args.media}-caption")
    samples = STATE_DIR / "samples"
    truth = write_demo_items(world, samples / world.name)
    references = None
    if world.name == "scenes":  # reference phrasings for `mils eval` exist for scenes
        references = write_scene_references(samples / "references.json", truth)
    pool = write_demo_pool(samples / f"{world.name}-pool.txt", world=world)
    models = LOCAL_SCORERS[world.task]
    logs = STATE_DIR / "logs"
    generator = offline_generator(args.generator)
    print(f"starting the local stack (llama.cpp + {generator.name}, Triton) ...", file=sys.stderr)
    with (
        TritonServer(
            model_repository=model_repository(),
            log_path=logs / "demo-triton.log",
            models=(models.text, models.target),
        ) as triton,
        LlamaServer(
            model_path=generator.find(), alias=generator.name, log_path=logs / "demo-llama.log"
        ) as llama,
    ):
        flags = {
            "--init-pool": pool,
            "--generator-url": llama.base_url,
            "--generator-model": generator.name,
            "--prompt-mode": generator.prompt_mode,
            "--scorer-url": triton.grpc_url,
            "--text-model": models.text,
            "--target-model": models.target,
            "--max-tokens": DEMO_MAX_TOKENS,
            "--log-level": "error",  # a tiny model's odd replies are in log.jsonl
            "--generator-in-flight": 1,
            "--steps": args.steps,
            "--keep": DEMO_LOOP.keep,
            "--requested": DEMO_LOOP.requested,
            "--out": out,
        }
        argv = ["caption", *map(str, truth), *(str(x) for kv in flags.items() for x in kv)]
        status = _cmd_caption(parser().parse_args(argv))
    print_report(out, truth, world)
    mils = _program()
    if references is None:
        print(f"\nsee every step of every {world.noun} in one page:\n  {mils} report {out}")
        return status
    print(f"\nscore them against {references.name} (BLEU, METEOR, ROUGE-L, CIDEr, per step):")
    print(f"  {mils} eval {out} --references {references}")
    print("and see every step of every scene, with the ground truth, in one page:")
    print(f"  {mils} report {out} --references {references}")
    return status


def _program() -> str:
    """How to run `mils` again from here: as it was started (`.venv/bin/mils` from
    scripts/demo.sh), or `mils` when it came from PATH or `python -m mils`."""
    started, on_path = sys.argv[0], shutil.which("mils")
    named = Path(started).name == "mils" and os.sep in started
    if named and (on_path is None or Path(on_path).resolve() != Path(started).resolve()):
        return started
    return "mils"


def _cmd_status(args: argparse.Namespace) -> int:
    print_status(args.run_dir, sys.stdout)
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    if not print_runs(args.folder, sys.stdout):
        print(f"no runs in {args.folder}", file=sys.stderr)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    sys.stdout.write(load_run_config(args.run_dir).to_toml())
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    for task in TASKS.values():
        inputs = ", ".join(f"{i.name} ({i.kind.value})" for i in task.inputs)
        print(f"{task.name}\t{task.summary}\tinputs: {inputs}")
    return 0


def _cmd_salvage(args: argparse.Namespace) -> int:
    if not RunStore.is_run(args.run_dir):
        raise StoreError(f"{args.run_dir} is not a mils run directory; nothing to salvage")
    copied = RunStore.salvage(args.run_dir, args.new_dir)
    print(
        f"copied {copied['samples']} samples, {copied['steps']} committed steps and "
        f"{copied['candidates']} candidates into {args.new_dir}; continue with:\n"
        f"  mils resume {args.new_dir}",
        file=sys.stderr,
    )
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "caption": _cmd_caption,
    "enhance": _cmd_enhance,
    "stylize": _cmd_stylize,
    "arithmetic": cmd_arithmetic,
    "resume": _cmd_resume,
    "status": _cmd_status,
    "runs": _cmd_runs,
    "config": _cmd_config,
    "tasks": _cmd_tasks,
    "salvage": _cmd_salvage,
    "local": cmd_local,
    "demo": _cmd_demo,
    "models": cmd_models,
    "eval": cmd_eval,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mils` console script."""
    args = parser().parse_args(argv)
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
