"""One scheduler, two objective kinds: a minimised two-term render-then-score task runs
through the same code path as captioning, on in-process fakes; and the render cache of
`RenderThenScore` (one render per text and read inputs, shared, failures not kept); and the
embedding cache of `EmbeddingObjective` over a long run (exact, memory flat)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from fakes import IMAGE, FakeGenerator, FakeReader, FakeScorer

from mils.engine.config import ConcurrencyConfig, LoopConfig, RetryConfig
from mils.engine.errors import ConfigError, InvalidResponse
from mils.engine.objectives import EmbeddingObjective, RenderThenScore, WeightedSum, _rank_values
from mils.engine.retry import Retrier
from mils.engine.scheduler import Event, Route, Sample, Scheduler
from mils.engine.scoring import SPILL_CHUNK
from mils.engine.store import RunStore
from mils.tasks import Input, InputKind, RenderSpec, Task, get_task

POOL = ["x", "xx", "xxxxxxxx", "xxxxxxxxxxxxxxxx"]
NO_WAIT = RetryConfig(attempts=2, initial_s=0.0, max_s=0.0, jitter_s=0.0)

# A style-transfer-shaped task: two inputs, two loss terms, minimised.
TWO_TERMS = Task(
    name="two-terms",
    summary="test task: minimise a weighted sum of two losses",
    inputs=(
        Input(name="content", kind=InputKind.IMAGE),
        Input(name="style", kind=InputKind.IMAGE),
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
    reads = ("content",)

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
    route = Route(
        task=TWO_TERMS,
        loop=LoopConfig(steps=2, keep=3, requested=3),
        objective=objective,
        readers={"content": _Literal(), "style": _Literal()},
    )
    sched = Scheduler(
        routes={TWO_TERMS.name: route},
        concurrency=ConcurrencyConfig(score_wait_ms=1.0),
        retrier=retrier,
        generator=generator,
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
    summary = await sched.run([sample], {TWO_TERMS.name: POOL})
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
    # Every new candidate's terms are stored, and step 0 keeps the pool's best with its
    # render; nothing is rendered twice for the sample.
    rows = store._db.execute("SELECT step, text, terms FROM candidates ORDER BY step, pos")
    assert [(step, t, json.loads(j)) for step, t, j in rows] == [
        (0, "xx", {"style": 3.0, "content": 3.0}),
        (1, "xxxxx", {"style": 0.0, "content": 6.0}),
        (1, "xxxxxxxxxxx", {"style": 6.0, "content": 12.0}),
    ]
    assert (tmp_path / "run" / "artefacts" / "s1" / "0000-0000.bin").is_file()
    assert renderer.rendered.count("xxxxx") == renderer.rendered.count("xx") == 1
    store.close()


class GatedRenderer:
    """An editor of "content" that counts its renders, holds them until `gate` opens, and
    refuses a text once for each time it is listed in `fail_once`."""

    name = "gated-editor#seed0"
    suffix = ".bin"
    reads = ("content",)

    def __init__(self, *, fail_once: tuple[str, ...] = ()) -> None:
        self.calls: Counter[tuple[str, bytes]] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self._fail = Counter(fail_once)

    async def render(self, text: str, inputs: Mapping[str, bytes]) -> bytes:
        self.calls[text, inputs["content"]] += 1
        await self.gate.wait()
        if self._fail[text] > 0:
            self._fail[text] -= 1
            raise InvalidResponse(f"cannot render {text!r}", endpoint=self.name)
        return inputs["content"] + b"|" + text.encode()


def render_objective(renderer: GatedRenderer, **kwargs: int) -> RenderThenScore:
    return RenderThenScore(
        renderer=renderer,
        scorer=LengthLosses(),
        combine=WeightedSum({"style": 1.0, "content": 1.0}),
        higher_is_better=False,
        in_flight=8,
        retrier=Retrier(NO_WAIT),
        **kwargs,
    )


INPUTS = {"content": b"photo", "style": b"abc"}


async def test_a_repeated_text_is_rendered_once() -> None:
    """A text asked again (in another batch, for another sample with the same read input)
    is rendered once, and the repeats count as cache hits."""
    renderer = GatedRenderer()
    async with render_objective(renderer) as objective:
        target = await objective.prepare(INPUTS)
        other_sample = await objective.prepare({"content": b"photo", "style": b"abcdefgh"})
        first = await objective.evaluate(target, ["ab", "abcd"])
        again = await objective.evaluate(target, ["ab"])
        other = await objective.evaluate(other_sample, ["ab"])
    assert renderer.calls == {("ab", b"photo"): 1, ("abcd", b"photo"): 1}
    assert again[0] == first[0]
    assert other[0] is not None and other[0].terms["style"] == 6.0  # scored against its own
    stats = objective.statistics()
    assert (stats.cache_misses, stats.cache_hits, stats.texts_evaluated) == (2, 2, 2)


async def test_concurrent_duplicates_share_one_render() -> None:
    """Asks for one text that arrive while it is being rendered wait for that render."""
    renderer = GatedRenderer()
    renderer.gate.clear()
    async with render_objective(renderer) as objective:
        target = await objective.prepare(INPUTS)
        pending = asyncio.gather(
            objective.evaluate(target, ["ab", "ab", "xyz"]), objective.evaluate(target, ["ab"])
        )
        await asyncio.sleep(0.01)
        assert objective.statistics().in_flight == 4  # all four are waiting on two renders
        renderer.gate.set()
        (batch, single) = await pending
    assert renderer.calls == {("ab", b"photo"): 1, ("xyz", b"photo"): 1}
    assert batch[0] == batch[1] == single[0] is not None
    assert batch[0].artefact is not None and batch[0].artefact.data == b"photo|ab"
    stats = objective.statistics()
    assert (stats.cache_misses, stats.cache_hits) == (2, 2)


async def test_a_failed_render_fails_only_its_text_and_is_retried_next_time() -> None:
    """A refused render drops that text alone, is not kept, and the next ask renders again."""
    renderer = GatedRenderer(fail_once=("bad",))
    async with render_objective(renderer) as objective:
        target = await objective.prepare(INPUTS)
        first = await objective.evaluate(target, ["bad", "ok"])
        second = await objective.evaluate(target, ["bad"])
    assert first[0] is None and first[1] is not None
    assert second[0] is not None and second[0].artefact is not None
    assert second[0].artefact.data == b"photo|bad"
    assert renderer.calls[("bad", b"photo")] == 2
    assert objective.statistics().unscorable == 1


async def test_concurrent_asks_share_a_failure_but_not_keep_it() -> None:
    """Asks waiting on a render that fails fail with it; a later ask renders afresh."""
    renderer = GatedRenderer(fail_once=("bad",))
    renderer.gate.clear()
    async with render_objective(renderer) as objective:
        target = await objective.prepare(INPUTS)
        pending = objective.evaluate(target, ["bad", "bad"])
        task = asyncio.ensure_future(pending)
        await asyncio.sleep(0.01)
        renderer.gate.set()
        assert await task == [None, None]
        assert (await objective.evaluate(target, ["bad"]))[0] is not None
    assert renderer.calls[("bad", b"photo")] == 2


async def test_the_read_input_digest_separates_two_content_images() -> None:
    """One instruction on two content images is two renders; an input the renderer does not
    read (style) does not split the key."""
    renderer = GatedRenderer()
    async with render_objective(renderer) as objective:
        one = await objective.prepare({"content": b"photo-1", "style": b"a"})
        same_content = await objective.prepare({"content": b"photo-1", "style": b"bbbb"})
        two = await objective.prepare({"content": b"photo-2", "style": b"a"})
        results = [await objective.evaluate(t, ["sharpen"]) for t in (one, same_content, two)]
    assert renderer.calls == {("sharpen", b"photo-1"): 1, ("sharpen", b"photo-2"): 1}
    artefacts = [r[0].artefact.data for r in results if r[0] and r[0].artefact]
    assert artefacts == [b"photo-1|sharpen", b"photo-1|sharpen", b"photo-2|sharpen"]


async def test_the_cache_is_bounded_least_recently_used_first() -> None:
    """Past `cache_size` the least recently used render is dropped and made again if asked."""
    renderer = GatedRenderer()
    async with render_objective(renderer, cache_size=2) as objective:
        target = await objective.prepare(INPUTS)
        for text in ("a", "b", "a", "c", "a", "b"):  # "c" evicts "b"; "a" stays (recent)
            await objective.evaluate(target, [text])
    assert renderer.calls == {("a", b"photo"): 1, ("b", b"photo"): 2, ("c", b"photo"): 1}


async def test_the_byte_bound_drops_renders_too() -> None:
    """Renders past `cache_bytes` are not kept."""
    renderer = GatedRenderer()
    async with render_objective(renderer, cache_bytes=10) as objective:
        target = await objective.prepare(INPUTS)
        for text in ("aaaa", "bbbb", "aaaa"):  # each render is 10 bytes: one is kept
            await objective.evaluate(target, [text])
    assert renderer.calls == {("aaaa", b"photo"): 2, ("bbbb", b"photo"): 1}


async def test_a_cancelled_render_is_made_again_by_an_ask_that_was_sharing_it() -> None:
    """Cancelling the ask that makes a render does not fail the asks waiting on it."""
    renderer = GatedRenderer()
    renderer.gate.clear()
    async with render_objective(renderer) as objective:
        target = await objective.prepare(INPUTS)
        maker = asyncio.ensure_future(objective.evaluate(target, ["ab"]))
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(objective.evaluate(target, ["ab"]))
        await asyncio.sleep(0.01)
        maker.cancel()
        await asyncio.sleep(0.01)
        renderer.gate.set()
        result = await waiter
        with pytest.raises(asyncio.CancelledError):
            await maker
    assert result[0] is not None
    assert renderer.calls == {("ab", b"photo"): 2}


async def test_a_renderer_reading_a_missing_input_is_a_config_error() -> None:
    """A renderer whose `reads` names an input the samples lack stops the run at prepare."""
    async with render_objective(GatedRenderer()) as objective:
        with pytest.raises(ConfigError, match=r"reads the inputs \['content'\]"):
            await objective.prepare({"image": b"x"})
    with pytest.raises(ConfigError, match="cache_size=-1"):
        render_objective(GatedRenderer(), cache_size=-1)


async def test_an_empty_pool_scores_as_no_texts_and_a_pool_nothing_scores_in_is_an_error() -> None:
    """No pool (a run starting from the sample's own text) ranks as []; a pool of which no
    text can be rendered is an error naming the objective."""
    renderer = GatedRenderer(fail_once=("only",))
    async with render_objective(renderer) as objective:
        target = await objective.prepare(INPUTS)
        assert await objective.score_pool(target) == []
        await objective.set_pool(["only"])
        with pytest.raises(InvalidResponse, match="none of the 1 initial pool texts"):
            await objective.score_pool(target)


def _recurring_reply(n: int) -> str:
    """Eight new lines, and two of twenty lines that any sample may propose again."""
    lines = [f"caption {n}-{i}" for i in range(8)] + [f"common {n % 20}", f"common {n * 7 % 20}"]
    return "\n".join(f"{i}. {text}" for i, text in enumerate(lines, 1))


async def test_texts_recurring_far_apart_in_a_run_are_embedded_once(tmp_path: Path) -> None:
    """Over a run of many more texts than the cache holds, a text that comes back after the
    cache evicted it is read back, not embedded again (each unique text once), while memory
    holds at most the cache's size plus two chunks on their way to disk (and the batches in
    flight)."""
    concurrency = ConcurrencyConfig(samples_in_flight=2, score_wait_ms=1.0, cache_size=50)
    retrier = Retrier(NO_WAIT)
    scorer = FakeScorer(max_batch_size=64)
    objective = EmbeddingObjective(scorer, target="image", concurrency=concurrency, retrier=retrier)
    samples = [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(200)]
    pool = [f"pool caption {i}" for i in range(20)]
    store = RunStore.create(tmp_path / "run", {}, pool)
    store.add_samples([(s.id, s.inputs) for s in samples])
    held: list[int] = []

    def on_event(event: Event) -> None:
        held.append(objective.statistics().cached)

    route = Route(
        task=get_task(IMAGE),
        loop=LoopConfig(steps=3, keep=5, requested=10),
        objective=objective,
        readers={"image": FakeReader()},
    )
    summary = await Scheduler(
        routes={IMAGE: route},
        concurrency=concurrency,
        retrier=retrier,
        generator=FakeGenerator(_recurring_reply),
        store=store,
        on_event=on_event,
    ).run(samples, {IMAGE: pool})
    unique = set(pool).union(*(store.progress(s.id).scored_texts for s in samples))
    store.close()
    sent = [text for batch in scorer.batches for text in batch]
    assert summary.done == 200 and len(unique) > 50 + 2 * SPILL_CHUNK
    assert len(sent) == len(set(sent)) == len(unique) == summary.texts_evaluated
    stats = objective.statistics()
    assert stats.spilled >= SPILL_CHUNK and stats.cache_hits > 0
    in_flight = concurrency.score_in_flight * scorer.max_batch_size  # evicted as they land
    assert max(held) < 50 + 2 * SPILL_CHUNK + in_flight


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_the_best_limit_of_a_pool_rank_as_the_whole_pool_does(higher_is_better: bool) -> None:
    """Ranking only the best `limit` (a loop without exploration reads no more) gives the
    head of the full ranking: ties by text across the cut, a NaN never among the best."""
    rng = np.random.default_rng(7)
    texts = sorted(f"text {i:04d}" for i in range(500))
    values = rng.integers(0, 40, size=500).astype(np.float32) / 8  # many ties
    values[[3, 77]] = np.nan
    whole = [(repr(v), t) for v, t in _rank_values(values, texts, higher_is_better)]
    for limit in (1, 5, 10, 37, 499, 500, 600):
        head = _rank_values(values, texts, higher_is_better, limit)
        assert [(repr(v), t) for v, t in head] == whole[:limit]  # repr: nan == nan
    assert not any(np.isnan(v) for v, _ in _rank_values(values, texts, higher_is_better, 498))
