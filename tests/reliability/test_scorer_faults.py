"""Scorer faults: a Triton restart mid-run, error responses, wrong shapes and NaN."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from cli_harness import (
    SMALL_LOOP,
    assert_complete,
    endpoint_args,
    mils,
    model_repository,
    results,
    spawn,
    step_rows,
)
from fault_proxy import FaultProxy

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer
from mils.adapters.triton_scorer import TritonScorer
from mils.engine.config import RetryConfig
from mils.engine.errors import EndpointUnavailable
from mils.engine.retry import Retrier

pytestmark = pytest.mark.integration

MARKERS = ("nanword", "infword", "errword", "shapeword", "rowword")


def test_triton_killed_and_restarted_mid_run_loses_nothing(
    many_images: list[Path], load_llm: LoadLLMServer, tmp_path: Path
) -> None:
    """Triton SIGKILLed mid-run and restarted on the same ports: retries of UNAVAILABLE carry
    the run through (or `mils resume` finishes what exhausted them); nothing is lost."""
    repo = model_repository(tmp_path / "models")
    first = TritonServer(
        model_repository=repo,
        models=("toyclip_text", "toyclip_image"),
        log_path=tmp_path / "triton.log",
    ).start()
    ports = {"grpc_port": first.grpc_port, "http_port": first.http_port}
    images, steps, run = many_images[:30], 4, tmp_path / "run"
    second = None
    with FaultProxy(load_llm.base_url, latency_s=0.15) as slow:
        proc = spawn(
            [
                "caption",
                *map(str, images),
                "--steps",
                str(steps),
                *SMALL_LOOP,
                "--out",
                str(run),
                "--no-progress",
                "--generator-in-flight",
                "4",
                "--retries",
                "8",
                *endpoint_args(slow.base_url, first),
            ],
            tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            while len(step_rows(run)) < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            first.stop(timeout=0)  # SIGKILL the whole server group
            killed_at = len(step_rows(run))
            time.sleep(1.0)
            second = TritonServer(
                model_repository=repo,
                models=("toyclip_text", "toyclip_image"),
                log_path=tmp_path / "triton2.log",
                **ports,
            ).start()
            code = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
        try:
            assert killed_at < len(images) * steps, "Triton was killed after the run"
            if code != 0:  # some sample ran out of retries: resume finishes it
                resumed = mils(["resume", str(run), "--no-progress"], cwd=tmp_path)
                assert resumed.returncode == 0, resumed.stderr[-2000:]
            assert_complete(run, [p.stem for p in images], steps)
        finally:
            second.stop()
    log = (tmp_path / "spawned.log").read_text()
    assert log.count("endpoint_retry") > 0, "Triton's outage was not retried"
    print(
        f"\nTriton killed after {killed_at} steps; first exit {code}; "
        f"retries logged: {log.count('endpoint_retry')}"
    )


def test_scorer_errors_wrong_shapes_and_nan_texts_are_dropped_alone(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Texts the scorer rejects, embeds as NaN/inf or answers with a wrong shape or dim are
    dropped alone (counted as unscorable): every sample finishes all its steps."""

    def reply(prompt: str, n: int) -> str:
        marker = MARKERS[n % len(MARKERS)] if n % 4 == 0 else None
        lines = [f"a red and blue scene number {n} {i}" for i in range(1, 5)]
        if marker:
            lines.append(f"a {marker} scene number {n}")
        return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))

    run, steps = tmp_path / "run", 3
    images = many_images[:16]
    with FaultProxy(load_llm.base_url, reply=reply) as proxy:
        proc = mils(
            [
                "caption",
                *map(str, images),
                "--steps",
                str(steps),
                *SMALL_LOOP,
                "--out",
                str(run),
                "--no-progress",
                "--score-batch",
                "1",
                *endpoint_args(proxy.base_url, rel_triton, text_model="bad_text"),
            ],
            cwd=tmp_path,
        )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "unscorable" in proc.stderr
    for row in results(run).values():
        assert row["status"] == "done" and row["steps"] == steps
        assert not any(m in t["best_text"] for t in row["trajectory"] for m in MARKERS)


def test_bad_target_embeddings_fail_their_own_sample_only(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Targets the image model embeds as NaN, with a wrong dim, or rejects fail alone with a
    clear reason; the other images finish."""
    good = many_images[:3]
    marked = {}
    for marker in ("NANIMAGE", "WRONGDIM", "ERRIMAGE"):
        path = tmp_path / f"z_{marker.lower()}.png"
        path.write_bytes(good[0].read_bytes() + marker.encode())  # trailing bytes: still a PNG
        marked[path.stem] = path
    run = tmp_path / "run"
    proc = mils(
        [
            "caption",
            *map(str, good),
            *map(str, marked.values()),
            "--steps",
            "2",
            *SMALL_LOOP,
            "--out",
            str(run),
            "--no-progress",
            "--samples-in-flight",
            "1",
            *endpoint_args(
                load_llm.base_url, rel_triton, text_model="bad_text", image_model="bad_image"
            ),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    res = results(run)
    assert all(res[p.stem]["status"] == "done" and res[p.stem]["steps"] == 2 for p in good)
    expected = {"z_nanimage": "non-finite", "z_wrongdim": "dim", "z_errimage": "bad_image"}
    for sid, words in expected.items():
        assert res[sid]["status"] == "failed" and words in res[sid]["error"], res[sid]


async def test_grpc_scorer_follows_a_restarted_triton_within_a_short_retry_window(
    tmp_path: Path,
) -> None:
    """After Triton was down for seconds (the client failing all along) and comes back on
    the same port, a scorer call succeeds within a ~2 s retry window: the gRPC channel's
    reconnect back-off is capped at 1 s instead of growing to many seconds."""
    repo = model_repository(tmp_path / "models")
    first = TritonServer(
        model_repository=repo, models=("toyclip_text",), log_path=tmp_path / "t1.log"
    ).start()
    ports = {"grpc_port": first.grpc_port, "http_port": first.http_port}
    scorer = TritonScorer(
        first.grpc_url, text_model="toyclip_text", target_model="toyclip_text", target_input="TEXT"
    )
    second = None
    try:
        await scorer.open()
        await scorer.embed_texts(["a red car"])
        first.stop(timeout=0)
        for _ in range(10):  # the channel fails and backs off while the server is away
            with contextlib.suppress(EndpointUnavailable):
                await scorer.embed_texts(["a red car"])
            await asyncio.sleep(0.5)
        second = TritonServer(
            model_repository=repo, models=("toyclip_text",), log_path=tmp_path / "t2.log", **ports
        ).start()
        short = Retrier(RetryConfig(attempts=9, initial_s=0.25, max_s=0.25, jitter_s=0.0))
        vectors = await short.call(scorer.embed_texts, ["a red car"])
        assert vectors.shape[0] == 1
    finally:
        await scorer.aclose()
        for server in (first, second):
            if server is not None:
                server.stop()
