"""One scheduler, two objective kinds: a minimised two-term render-then-score task runs
through the same code path as captioning, on in-process fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

from fakes import FakeGenerator

from mils.engine.config import ConcurrencyConfig, LoopConfig, RetryConfig
from mils.engine.errors import InvalidResponse
from mils.engine.objectives import RenderThenScore, WeightedSum
from mils.engine.retry import Retrier
from mils.engine.scheduler import Sample, Scheduler
from mils.engine.store import RunStore
from mils.tasks import Input, InputKind, RenderSpec, Task

POOL = ["x", "xx", "xxxxxxxx", "xxxxxxxxxxxxxxxx"]
NO_WAIT = RetryConfig(attempts=2, initial_s=0.0, max_s=0.0, jitter_s=0.0)

# A style-transfer-shaped task: two inputs, two loss terms, minimised.
TWO_TERMS = Task(
    name="two-terms",
    summary="test task: minimise a weighted sum of two losses",
    inputs=(
        Input(name="content", kind=InputKind.TEXT),
        Input(name="style", kind=InputKind.TEXT),
    ),
    objective=RenderSpec(
        renders=InputKind.IMAGE, weights={"style": 10.0, "content": 1.0}, higher_is_better=False
    ),
    system_prompt="You write edit instructions.",
    prompt_template="Lower is better:\n{candidates}\nWrite {requested} more.",
    pool_file=Path("unused"),
)


class FakeRenderer:
    """'Renders' a text to bytes; a text containing 'unrenderable' is refused."""

    name = "fake-editor"
    suffix = ".bin"

    def __init__(self) -> None:
        self.rendered: list[str] = []

    async def render(self, text: str, inputs: Mapping[str, bytes]) -> bytes:
        await asyncio.sleep(0)
        if "unrenderable" in text:
            raise InvalidResponse("cannot render", endpoint=self.name)
        self.rendered.append(text)
        return inputs["content"] + b"|" + text.encode()


class LengthLosses:
    """Style loss: distance of the text's length to the style input's length; content loss:
    how many bytes the render added to the content."""

    name = "length-losses"

    async def score(
        self, media: bytes, text: str, inputs: Mapping[str, bytes]
    ) -> Mapping[str, float]:
        style = abs(len(text) - len(inputs["style"]))
        content = len(media) - len(inputs["content"])
        return {"style": float(style), "content": float(content)}


def scheduler(store: RunStore, generator: FakeGenerator) -> tuple[Scheduler, FakeRenderer]:
    retrier = Retrier(NO_WAIT)
    renderer = FakeRenderer()
    objective = RenderThenScore(
        renderer=renderer,
        scorer=LengthLosses(),
        combine=WeightedSum(TWO_TERMS.objective.weights),  # type: ignore[union-attr]
        higher_is_better=TWO_TERMS.higher_is_better,
        in_flight=4,
        retrier=retrier,
    )
    sched = Scheduler(
        task=TWO_TERMS,
        loop=LoopConfig(steps=2, keep=3, requested=3),
        concurrency=ConcurrencyConfig(score_wait_ms=1.0),
        retrier=retrier,
        generator=generator,
        objective=objective,
        readers={"content": _Literal(), "style": _Literal()},
        store=store,
    )
    return sched, renderer


class _Literal:
    async def read(self, source: str) -> bytes:
        return source.encode()


async def test_minimised_two_term_objective_runs_through_the_scheduler(tmp_path: Path) -> None:
    """Values are minimised, the prompt lists the worst first, and the store keeps each
    candidate's terms and rendered artefact."""
    # The style input has 5 bytes: the best text is 5 characters long.
    sample = Sample("s1", {"content": "photo", "style": "abcde"})
    store = RunStore.create(tmp_path / "run", {}, POOL, [(sample.id, sample.inputs)])
    gen = FakeGenerator(lambda n: f"1. xxxxx\n2. unrenderable edit {n}\n3. xxxxxxxxxxx")
    sched, renderer = scheduler(store, gen)
    summary = await sched.run([sample], POOL)
    assert (summary.done, summary.failed, summary.steps) == (1, 0, 2)
    assert summary.texts_unscorable == 2  # one unrenderable line per step, dropped alone

    # Pool values: 10 x |len - 5| + len (the render adds the text and a separator).
    first_prompt = gen.prompts[0].splitlines()[1:4]
    values = [float(line.split(":")[0]) for line in first_prompt]
    assert values == sorted(values, reverse=True), "worst (highest loss) first"
    assert first_prompt[-1].endswith(": xx")  # 10 x 3 + 3 = 33, the lowest of the pool

    row = store.result("s1")
    assert row["best_text"] == "xxxxx"
    assert row["best_score"] == 10 * 0 + 6  # style 0, content 6 bytes ("|xxxxx")
    assert row["best_terms"] == {"style": 0.0, "content": 6.0}
    artefact = tmp_path / "run" / row["best_artefact"]
    assert artefact.read_bytes() == b"photo|xxxxx"
    # Every new candidate's terms are stored; nothing is rendered twice for the sample.
    terms = store._db.execute("SELECT text, terms FROM candidates ORDER BY step, pos").fetchall()
    assert [(t, json.loads(j)) for t, j in terms] == [
        ("xxxxx", {"style": 0.0, "content": 6.0}),
        ("xxxxxxxxxxx", {"style": 6.0, "content": 12.0}),
    ]
    assert renderer.rendered.count("xxxxx") == 1
    store.close()
