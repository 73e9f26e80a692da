"""A task whose sample is a text (a prompt to improve): the text fills its placeholder in
the generator's prompt and is scored as the sample's first candidate, beside the pool."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from fakes import NO_WAIT, FakeGenerator

from mils.engine.config import ConcurrencyConfig, LoopConfig
from mils.engine.errors import InvalidResponse
from mils.engine.objectives import RenderThenScore, WeightedSum
from mils.engine.protocols import MediaReader
from mils.engine.retry import Retrier
from mils.engine.scheduler import Route, Sample, Scheduler
from mils.engine.store import RunStore
from mils.tasks import Input, InputKind, RenderSpec, Task

POOL = ["a photo", "a painting of a dog"]

REWRITE = Task(
    name="rewrite",
    summary="test task: rewrite a prompt, scored by the words it shares with it",
    inputs=(Input(name="prompt", kind=InputKind.TEXT),),
    objective=RenderSpec(renders=InputKind.IMAGE, weights={"overlap": 1.0}, higher_is_better=True),
    system_prompt="You rewrite prompts.",
    prompt_template="Improve {prompt!r}:\n{candidates}\nWrite {requested}.",
    pool_file=Path("unused"),
    completion_header="Rewrites of {prompt}, worst to best:",
)


class Echo:
    """Renders a text as its own bytes."""

    name = "echo"
    suffix = ".txt"
    reads: tuple[str, ...] = ()

    async def render(self, text: str, inputs: Mapping[str, bytes]) -> bytes:
        return text.encode()


class Overlap:
    """Words of the render shared with the sample's prompt, minus a penalty per extra word."""

    name = "overlap"

    async def score(
        self, media: bytes, text: str, inputs: Mapping[str, bytes]
    ) -> Mapping[str, float]:
        said, wanted = media.decode().split(), set(inputs["prompt"].decode().split())
        return {
            "overlap": sum(w in wanted for w in said) - 0.1 * sum(w not in wanted for w in said)
        }


class Literal:
    async def read(self, source: str) -> bytes:
        return source.encode()


def scheduler(
    store: RunStore,
    generator: FakeGenerator,
    renderer: Echo | None = None,
    *,
    reader: MediaReader | None = None,
) -> Scheduler:
    retrier = Retrier(NO_WAIT)
    objective = RenderThenScore(
        renderer=renderer or Echo(),
        scorer=Overlap(),
        combine=WeightedSum({"overlap": 1.0}),
        higher_is_better=True,
        in_flight=4,
        retrier=retrier,
    )
    route = Route(
        task=REWRITE,
        loop=LoopConfig(steps=1, keep=3, requested=2),
        objective=objective,
        readers={"prompt": reader or Literal()},
    )
    return Scheduler(
        routes={REWRITE.name: route},
        concurrency=ConcurrencyConfig(score_wait_ms=1.0),
        retrier=retrier,
        generator=generator,
        store=store,
    )


def open_store(tmp_path: Path, samples: list[Sample]) -> RunStore:
    return RunStore.create(tmp_path / "run", {}, POOL, [(s.id, s.inputs) for s in samples])


@pytest.mark.parametrize("mode", ["chat", "completion"])
async def test_the_prompt_fills_its_placeholder_and_is_the_first_candidate(
    tmp_path: Path, mode: str
) -> None:
    sample = Sample("s1", {"prompt": "a  red\ncat"})  # whitespace is normalised
    store = open_store(tmp_path, [sample])
    reply = "1. a red cat sitting\n2. a photo"
    if mode == "completion":  # the reply continues "3.010:"
        reply = " a red cat sitting\n0.500: a photo"
    generator = FakeGenerator(lambda n: reply)
    generator.prompt_mode = mode
    summary = await scheduler(store, generator).run([sample], {REWRITE.name: POOL})
    assert (summary.done, summary.failed) == (1, 0)

    prompt = generator.prompts[0]
    assert ("Improve 'a red cat'" if mode == "chat" else "Rewrites of a red cat,") in prompt
    # The prompt itself was scored (3 shared words: the best) and shown with the pool.
    assert "3.000: a red cat" in prompt
    assert "0.900: a photo" in prompt
    # Step 0 records it as the sample's own candidate; step 1 does not score it again.
    rows = store._db.execute("SELECT step, text, score FROM candidates ORDER BY step, pos")
    assert rows.fetchall() == [(0, "a red cat", 3.0), (1, "a red cat sitting", 2.9)]
    assert store.result("s1")["best_text"] == "a red cat"
    store.close()


async def test_a_prompt_that_is_not_text_fails_its_sample_only(tmp_path: Path) -> None:
    class Bytes:
        async def read(self, source: str) -> bytes:
            return b"\xff\xfe" if source == "binary" else source.encode()

    samples = [Sample("ok", {"prompt": "a cat"}), Sample("bad", {"prompt": "binary"})]
    store = open_store(tmp_path, samples)
    sched = scheduler(store, FakeGenerator(lambda n: "1. a cat"), reader=Bytes())
    summary = await sched.run(samples, {REWRITE.name: POOL})
    assert (summary.done, summary.failed) == (1, 1)
    [(sample_id, reason)] = summary.failures
    assert sample_id == "bad"
    assert reason.startswith("binary: input 'prompt' is not UTF-8 text")
    assert "save it as UTF-8" in reason
    store.close()


async def test_a_prompt_that_cannot_be_scored_with_no_pool_fails_its_sample_clearly(
    tmp_path: Path,
) -> None:
    """With no initial pool the sample's prompt is all it starts from: when the renderer
    refuses it (too long), that sample fails saying so; the others run."""

    class Limited(Echo):
        async def render(self, text: str, inputs: Mapping[str, bytes]) -> bytes:
            if len(text) > 20:
                raise InvalidResponse(f"text is {len(text)} characters; at most 20", endpoint="r")
            return text.encode()

    samples = [Sample("ok", {"prompt": "a cat"}), Sample("long", {"prompt": "a" * 30})]
    store = RunStore.create(tmp_path / "run", {}, [], [(s.id, s.inputs) for s in samples])
    summary = await scheduler(store, FakeGenerator(lambda n: "1. a cat"), Limited()).run(
        samples, {REWRITE.name: []}
    )
    assert (summary.done, summary.failed) == (1, 1)
    [(sample_id, reason)] = summary.failures
    assert sample_id == "long"
    assert "the initial pool is empty and input 'prompt' could not be scored" in reason
    store.close()
