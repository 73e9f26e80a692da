"""Cross-modal arithmetic, a composition of tasks on the public API (`mils.arithmetic`):

    caption each input with its kind's captioning task     (open_run, one run each)
    merge the captions into one prompt                     (one generator request)
    improve and render that prompt with t2i-enhance        (open_run)

Everything lands under one folder: a run directory per stage, `arithmetic.json` saying what
each stage made, and `result.png`, the render of the best prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mils._api import SampleResult, open_run
from mils._media import CAPTION_TASKS
from mils.adapters import GeneratorSettings, OpenAIGenerator, RendererSettings, ScorerSettings
from mils.adapters.media import media_kind
from mils.engine import Budget, ConcurrencyConfig, ConfigError, LoopConfig, RetryConfig
from mils.engine.logs import configure_logging, get_logger
from mils.engine.prompt import parse_candidates
from mils.engine.retry import Retrier
from mils.engine.scheduler import Sample
from mils.tasks import T2I_ENHANCE, Task
from mils.tasks.arithmetic import merge_messages

__all__ = ["ArithmeticResult", "arithmetic", "caption_task_for", "cmd_arithmetic"]

log = get_logger(__name__)

_OURS = ("caption-", "enhance", "arithmetic.json", "result.png")
"""What an arithmetic run writes into its folder."""


@dataclass(frozen=True, slots=True)
class ArithmeticResult:
    """What each stage of an arithmetic run made."""

    captions: tuple[SampleResult, ...]
    """One per input, in input order."""
    merged: str
    """The prompt the generator merged the captions into."""
    merge_fallback: bool
    """True when the generator's reply held no prompt and the captions were joined instead."""
    enhanced: SampleResult
    """The t2i-enhance sample of the merged prompt: its best prompt and render."""
    image: Path | None
    """`result.png`: the render of the best prompt (None when nothing was rendered)."""


def caption_task_for(path: str | os.PathLike[str]) -> Task:
    """The captioning task of a media file's kind (its extension, else its first bytes).

    Raises:
        ConfigError: the file is of no kind a captioning task reads.
    """
    kind = media_kind(os.fspath(path))
    if kind is None:
        raise ConfigError(
            f"{os.fspath(path)} is not an image, video or sound file (by its name and first "
            "bytes); pass media files to `inputs`"
        )
    return CAPTION_TASKS[kind.name]


async def arithmetic(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    generator: GeneratorSettings,
    caption_scorers: Mapping[str, ScorerSettings],
    scorer: ScorerSettings,
    renderer: RendererSettings,
    out: str | os.PathLike[str],
    caption_pools: Mapping[str, Sequence[str]] | None = None,
    loops: Mapping[str, LoopConfig] | None = None,
    concurrency: ConcurrencyConfig | None = None,
    retry: RetryConfig | None = None,
    budget: Budget | None = None,
) -> ArithmeticResult:
    """Caption `inputs`, merge the captions, improve and render the merged prompt.

    Args:
        inputs: two (or more) media files; each is captioned by its kind's task.
        generator: the LLM endpoint of every stage.
        caption_scorers: captioning task name -> its encoder pair.
        scorer: the t2i-enhance alignment pair; renderer: its renderer.
        out: the folder of `caption-N-<task>/`, `enhance/`, `arithmetic.json` and
            `result.png` (new, or holding none of them).
        caption_pools: captioning task name -> its initial pool (default: the task's).
        loops: task name -> its loop (default: each task's own).

    Raises:
        ConfigError: an input is not a media file, a task has no scorer, or a caption
            stage ended without a caption (its run directory keeps why).
    """
    if len(inputs) < 2:
        raise ConfigError(f"arithmetic combines two or more inputs; `inputs` has {len(inputs)}")
    root = Path(out)
    taken = [p.name for p in root.glob("*") if p.name.startswith(_OURS)]
    if taken:
        raise ConfigError(
            f"{root} holds an arithmetic run already ({taken[0]}); pass `out` a new folder"
        )
    tasks = [caption_task_for(path) for path in inputs]
    missing = sorted({t.name for t in tasks} - set(caption_scorers))
    if missing:
        raise ConfigError(f"no scorer for {missing[0]}; pass it in `caption_scorers`")
    common = {
        "generator": generator,
        "concurrency": concurrency,
        "retry": retry,
        "budget": budget,
    }

    async def caption(n: int, task: Task, path: str | os.PathLike[str]) -> SampleResult:
        pool = (caption_pools or {}).get(task.name)
        async with open_run(
            task,
            [path],
            scorer=caption_scorers[task.name],
            out=root / f"caption-{n}-{task.name}",
            pool=list(pool) if pool is not None else None,
            loop=(loops or {}).get(task.name),
            **common,  # type: ignore[arg-type]
        ) as run:
            results = [result async for result in run]
        [result] = results
        if result.best_text is None:
            raise ConfigError(
                f"{os.fspath(path)} was not captioned ({result.error}); see {run.run_dir}/log.jsonl"
            )
        return result

    captions = await asyncio.gather(
        *(
            caption(n, task, path)
            for n, (task, path) in enumerate(zip(tasks, inputs, strict=True), 1)
        )
    )
    texts = [result.best_text or "" for result in captions]
    merged, fallback = await _merge(texts, generator, retry or RetryConfig())
    log.info("captions_merged", captions=texts, merged=merged, fallback=fallback)
    async with open_run(
        T2I_ENHANCE,
        [Sample("merged", {"prompt": merged})],
        scorer=scorer,
        renderer=renderer,
        out=root / "enhance",
        loop=(loops or {}).get(T2I_ENHANCE.name),
        **common,  # type: ignore[arg-type]
    ) as run:
        [enhanced] = [result async for result in run]
    image = None
    if enhanced.best_artefact is not None:
        image = root / "result.png"
        shutil.copyfile(enhanced.best_artefact, image)
    result = ArithmeticResult(tuple(captions), merged, fallback, enhanced, image)
    (root / "arithmetic.json").write_text(json.dumps(_summary(result, inputs, root), indent=2))
    return result


async def _merge(
    captions: list[str], settings: GeneratorSettings, retry: RetryConfig
) -> tuple[str, bool]:
    """The generator's merged prompt, or (when its reply holds none) the captions joined."""
    messages = merge_messages(captions)
    async with OpenAIGenerator(settings) as generator:
        retrier = Retrier(retry)
        if settings.prompt_mode == "completion":  # a base model continues a list instead
            listing = "\n".join(f"Description: {c}" for c in captions)
            reply = await retrier.call(
                generator.continue_text, f"{listing}\nOne picture showing both:"
            )
            lines = [line.strip(" .") for line in reply.text.splitlines() if line.strip(" .")]
        else:
            reply = await retrier.call(generator.complete, messages)
            lines = parse_candidates(reply.text) or [
                line.strip() for line in reply.text.splitlines() if line.strip()
            ]
    if lines:
        return lines[0], False
    log.warning("merge_reply_empty", reply=reply.text[:200])
    return " and ".join(captions), True


def _summary(
    result: ArithmeticResult, inputs: Sequence[str | os.PathLike[str]], root: Path
) -> dict[str, object]:
    def where(path: Path | None) -> str | None:
        return os.path.relpath(path, root) if path is not None else None

    return {
        "inputs": [os.fspath(path) for path in inputs],
        "captions": [
            {"text": c.best_text, "score": c.best_score, "status": c.status}
            for c in result.captions
        ],
        "merged": result.merged,
        "merge_fallback": result.merge_fallback,
        "enhanced": {
            "text": result.enhanced.best_text,
            "score": result.enhanced.best_score,
            "first_score": result.enhanced.trajectory[0].best_score
            if result.enhanced.trajectory
            else None,
            "status": result.enhanced.status,
            "image": where(result.enhanced.best_artefact),
        },
        "image": where(result.image),
    }


_RENDERING_DESTS = (
    "renderer_kind",
    "renderer_url",
    "renderer_model",
    "render_seed",
    "image_size",
    "renderer_api_key_env",
    "renderer_timeout",
    "style_model",
    "text_model",
    "image_model",
)
"""Flags of the enhance stage, which the caption stages do not take."""


def cmd_arithmetic(args: argparse.Namespace) -> int:
    """`mils arithmetic A B`: the composition from the command line."""
    from mils._local import LOCAL_SCORERS
    from mils._settings import run_settings
    from mils._worlds import world_for_task
    from mils.cli import run_to_end

    if args.metrics_port is not None:
        raise ConfigError("--metrics-port is for one run; arithmetic runs several")
    if args.ray is not None:
        raise ConfigError("--ray is for a run of many samples; arithmetic runs one of each")
    tasks = [caption_task_for(path) for path in args.inputs]
    caption_args = copy.copy(args)
    for dest in _RENDERING_DESTS:
        setattr(caption_args, dest, None)
    enhance = run_settings(args, saved=None, task=T2I_ENHANCE, file={})
    scorers: dict[str, ScorerSettings] = {}
    pools: dict[str, list[str]] = {}
    loops = {T2I_ENHANCE.name: _loop(args, T2I_ENHANCE)}
    given_pool = args.init_pool.read_text(encoding="utf-8").splitlines() if args.init_pool else None
    for task in tasks:
        settings = run_settings(caption_args, saved=None, task=task, file={})
        assert settings.scorer is not None  # run_settings fills it or raises
        scorers[task.name] = settings.scorer
        loops[task.name] = _loop(args, task)
        local = LOCAL_SCORERS.get(task.name)
        if given_pool is not None:
            pools[task.name] = given_pool
        elif local is not None and settings.scorer.text_model == local.text:
            # The local stack's scorers know their closed worlds only: start from those.
            pools[task.name] = world_for_task(task.name).pool(_LOCAL_POOL_LINES)
    assert enhance.renderer is not None and enhance.scorer is not None
    out = args.out or Path("runs") / f"arithmetic-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    configure_logging(log_file=out / "log.jsonl", console_level=args.log_level)
    stages = ", ".join(t.name for t in tasks)
    print(f"arithmetic: {out} ({stages}, then t2i-enhance)", file=sys.stderr)
    result = run_to_end(
        lambda: arithmetic(
            args.inputs,
            generator=enhance.generator[0],
            caption_scorers=scorers,
            caption_pools=pools,
            scorer=enhance.scorer,  # type: ignore[arg-type]
            renderer=enhance.renderer,  # type: ignore[arg-type]
            out=out,
            loops=loops,
            concurrency=enhance.concurrency,
            retry=enhance.retry,
            budget=enhance.budget,
        ),
        out,
    )
    for path, caption in zip(args.inputs, result.captions, strict=True):
        print(f"caption\t{path}\t{caption.best_text}")
    print(f"merged\t{result.merged}")
    print(f"enhanced\t{result.enhanced.best_text}")
    print(f"image\t{result.image}")
    print(f"every stage: {out / 'arithmetic.json'}", file=sys.stderr)
    return 0 if result.image is not None else 1


_LOCAL_POOL_LINES = 300
"""Lines of the closed-world pool a caption stage starts from on the local stack."""


def _loop(args: argparse.Namespace, task: Task) -> LoopConfig:
    """The task's own loop under the loop flags given."""
    given = {
        name: getattr(args, name)
        for name in (field.name for field in dataclasses.fields(LoopConfig))
        if getattr(args, name, None) is not None
    }
    return dataclasses.replace(task.loop, **given)
