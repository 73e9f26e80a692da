"""Caption images from Python with the public API, the way a larger program embeds mils.

    python examples/caption_api.py OUT_DIR IMAGE...

Endpoints come from the environment:

    MILS_GENERATOR_URL    OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    MILS_GENERATOR_MODEL  model name sent with each request
    MILS_SCORER_URL       Triton gRPC address host:port
    MILS_TEXT_MODEL, MILS_IMAGE_MODEL   the Triton encoder pair (toyclip_text/toyclip_image)

It runs the loop next to the program's own work (a heartbeat task here), prints each
result as its sample finishes, and the run's summary at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys

import mils


async def heartbeat() -> None:
    """Stands for the rest of the host program: it keeps running during the run."""
    while True:
        await asyncio.sleep(1.0)


async def main(out: str, images: list[str]) -> int:
    env = os.environ
    generator = mils.GeneratorSettings(
        base_url=env["MILS_GENERATOR_URL"],
        model=env.get("MILS_GENERATOR_MODEL", "default"),
        max_tokens=400,
    )
    scorer = mils.ScorerSettings(
        url=env["MILS_SCORER_URL"],
        text_model=env.get("MILS_TEXT_MODEL", "clip_text"),
        target_model=env.get("MILS_IMAGE_MODEL", "clip_image"),
    )
    steps_done = 0

    def on_event(event: mils.Event) -> None:
        nonlocal steps_done
        if isinstance(event, mils.StepCommitted):
            steps_done += 1

    async with asyncio.TaskGroup() as program:
        beat = program.create_task(heartbeat())
        async with mils.open_run(
            "image-caption",
            images,
            generator=generator,
            scorer=scorer,
            out=out,
            loop=mils.LoopConfig(steps=2, keep=8, requested=4),
            on_event=on_event,
        ) as run:
            async for result in run:
                if result.status == "done":
                    print(f"{result.sample_id}\t{result.best_score:.4f}\t{result.best_text}")
                else:
                    print(f"{result.sample_id}\t{result.status}\t{result.error}")
        beat.cancel()
    summary = run.summary
    assert summary is not None
    print(f"{summary.done}/{summary.samples} done, {steps_done} steps", file=sys.stderr)
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1], sys.argv[2:])))
