"""Coalesced, cached text embedding shared by all samples."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fakes import FakeScorer, vector
from structlog.testing import capture_logs

from mils.engine.config import ConcurrencyConfig, RetryConfig
from mils.engine.errors import InvalidResponse, RetriesExhausted
from mils.engine.retry import Retrier
from mils.engine.scoring import SPILL_CHUNK, TextEmbeddings, normalise

FAST_RETRY = RetryConfig(attempts=2, initial_s=0.0, max_s=0.0, jitter_s=0.0)


def embeddings(scorer: FakeScorer, **kw: object) -> TextEmbeddings:
    config = ConcurrencyConfig(**({"score_wait_ms": 5.0} | kw))  # type: ignore[arg-type]
    return TextEmbeddings(scorer, config, Retrier(FAST_RETRY))


async def test_concurrent_requests_are_coalesced_and_capped() -> None:
    """Texts asked for by many samples at once go out in batches of at most the cap."""
    scorer = FakeScorer(max_batch_size=8)
    async with embeddings(scorer, score_batch=64) as emb:
        groups = [[f"s{s}-t{t}" for t in range(3)] for s in range(10)]
        results = await asyncio.gather(*(emb.embed(g) for g in groups))
    assert all(len(b) <= 8 for b in scorer.batches)
    assert sum(len(b) for b in scorer.batches) == 30
    assert len(scorer.batches) == 4  # 30 texts / 8 per batch
    expected = normalise(np.stack([vector("s3-t1")]), endpoint="x")[0]
    np.testing.assert_allclose(results[3][1], expected, rtol=1e-6)


async def test_each_unique_text_is_embedded_once() -> None:
    """Repeats within a call, across calls and across concurrent samples hit the cache."""
    scorer = FakeScorer()
    async with embeddings(scorer) as emb:
        await asyncio.gather(emb.embed(["a", "b", "a"]), emb.embed(["b", "c"]))
        await emb.embed(["a", "c", "d"])
        stats = emb.statistics()
    sent = [t for b in scorer.batches for t in b]
    assert sorted(sent) == ["a", "b", "c", "d"]
    assert stats.texts_embedded == 4 and stats.texts_requested == 8


async def test_outputs_are_unit_norm_and_scores_are_cosines() -> None:
    """Embeddings come back L2-normalised, so a dot product is a cosine."""
    async with embeddings(FakeScorer()) as emb:
        out = await emb.embed(["x", "y"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


async def test_transient_failure_is_retried_then_exhausted() -> None:
    """One UNAVAILABLE is retried; a scorer down for every attempt fails the waiters."""
    scorer = FakeScorer()
    async with embeddings(scorer) as emb:
        scorer.fail_next = 1
        assert (await emb.embed(["ok"])).shape == (1, 16)
        scorer.fail_next = 5
        with pytest.raises(RetriesExhausted, match="scorer down"):
            await emb.embed(["never"])
        scorer.fail_next = 0
        assert (await emb.embed(["never"])).shape == (1, 16)  # not cached as a failure


def test_non_finite_and_zero_embeddings_are_invalid() -> None:
    """NaN, inf and all-zero vectors are refused with a clear message."""
    with pytest.raises(InvalidResponse, match="non-finite"):
        normalise(np.array([[np.nan, 1.0]]), endpoint="m")
    with pytest.raises(InvalidResponse, match="all-zero"):
        normalise(np.zeros((1, 2)), endpoint="m")


async def test_invalid_embedding_is_nan_for_that_text_only() -> None:
    """A NaN output for one text marks that row unusable; its batch-mates are fine."""
    async with embeddings(FakeScorer()) as emb:
        out = await emb.embed(["fine", "NaN here", "also fine"])
        stats = emb.statistics()
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    assert stats.invalid == 1


class RejectingScorer(FakeScorer):
    """Rejects any batch holding a text with "bad" in it, as a Triton model error would."""

    async def embed_texts(self, texts):  # type: ignore[no-untyped-def]
        if any("bad" in t for t in texts):
            raise InvalidResponse("model rejected the batch", endpoint=self.name)
        return await super().embed_texts(texts)


async def test_rejected_batch_is_split_so_only_the_bad_text_is_dropped() -> None:
    """A batch the scorer rejects is retried text by text; only the bad text is NaN."""
    scorer = RejectingScorer(max_batch_size=8)
    async with embeddings(scorer) as emb:
        await emb.embed(["warm up"])  # the embedding size is known from the first batch
        out = await emb.embed(["ok one", "bad one", "ok two"])
        stats = emb.statistics()
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    assert stats.invalid == 1


async def test_texts_evicted_from_memory_are_read_back_not_embedded_again() -> None:
    """Past `cache_size` embeddings move to disk: every text is embedded once however often
    it recurs, while memory holds at most `cache_size` plus two chunks on their way to disk."""
    scorer = FakeScorer(max_batch_size=64)
    texts = [f"text {i}" for i in range(2500)]
    async with embeddings(scorer, cache_size=100) as emb:
        first = np.concatenate([await emb.embed(texts[i : i + 50]) for i in range(0, 2500, 50)])
        again = await asyncio.gather(*(emb.embed(texts[i::7]) for i in range(7)))
        stats = emb.statistics()
    sent = [t for b in scorer.batches for t in b]
    assert sorted(sent) == sorted(texts)
    assert stats.texts_embedded == 2500 and stats.cache_misses == 2500
    assert stats.cache_hits == 2500 and 0 < stats.recalled <= stats.spilled
    assert stats.spilled + stats.cached == 2500
    assert stats.cached < 100 + 2 * SPILL_CHUNK + 8 * 64  # + the batches in flight
    for i in range(7):  # read back from disk, bit for bit
        np.testing.assert_array_equal(again[i], first[i::7])


async def test_an_unreadable_spill_costs_an_embedding_not_the_run() -> None:
    """A text whose spilled embedding cannot be read back is embedded again, with a warning."""
    scorer = FakeScorer(max_batch_size=64)
    texts = [f"text {i}" for i in range(SPILL_CHUNK + 10)]
    async with embeddings(scorer, cache_size=0) as emb:
        await emb.embed(texts)
        while emb.statistics().spilled < SPILL_CHUNK:  # the chunk is being written
            await asyncio.sleep(0.01)
        spill = emb._spill
        await spill._run(lambda _: spill._open().execute("DROP TABLE spill"), None)
        with capture_logs() as logs:
            out = await emb.embed(texts[:3])
        stats = emb.statistics()
    assert np.isfinite(out).all()
    assert stats.texts_embedded == SPILL_CHUNK + 13 and stats.recalled == 0
    assert [e["event"] for e in logs] == ["embedding_spill_unreadable"]
