"""Renderer and media-scorer adapters on real sockets: `OpenAIImageRenderer` against the
images API of `benchmarks.image_server` (on the closed world's renderer and editor), and
`TritonRenderer`, `TritonStyleScorer`, `AlignmentScorer` against a real Triton."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from benchmarks.image_server import ImageOptions, add_images_api
from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import HOST, TritonServer, free_port
from mils.adapters.media_scorers import AlignmentScorer, TritonStyleScorer
from mils.adapters.renderers import OpenAIImageRenderer, RendererSettings, TritonRenderer
from mils.adapters.triton_scorer import ScorerSettings, TritonScorer
from mils.engine.config import RetryConfig
from mils.engine.errors import (
    ConfigError,
    EndpointUnavailable,
    InvalidResponse,
    ModelNotReady,
    RequestRefused,
)
from mils.engine.objectives import RenderThenScore, WeightedSum
from mils.engine.retry import Retrier
from mils.tasks.scenes import edit_image, render_text

KEY = "sk-test-0123456789abcdef"
PROMPT = "a large red circle on the left"
NO_WAIT = RetryConfig(attempts=2, initial_s=0.0, max_s=0.0, jitter_s=0.0)


@asynccontextmanager
async def images_api(options: ImageOptions | None = None) -> AsyncIterator[str]:
    """The images API on a free loopback port, in this process; yields its base URL."""
    app = web.Application()
    add_images_api(app, options)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    try:
        yield f"http://{HOST}:{port}/v1"
    finally:
        await runner.cleanup()


async def server_stats(base_url: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{base_url}/images/stats")
    stats: dict[str, int] = reply.json()
    return stats


# --- OpenAIImageRenderer -------------------------------------------------------------


async def test_generation_returns_the_servers_image_for_the_prompt_and_seed() -> None:
    """Text-to-image posts the prompt and seed and decodes `b64_json` into the PNG."""
    async with images_api() as url, OpenAIImageRenderer(url, model="scene", seed=3) as renderer:
        image = await renderer.render(PROMPT, {})
        other_seed = await OpenAIImageRenderer(url, model="scene", seed=4).open()
        try:
            reseeded = await other_seed.render(PROMPT, {})
        finally:
            await other_seed.aclose()
        stats = await server_stats(url)
    assert image == render_text(PROMPT, 3)
    assert reseeded == render_text(PROMPT, 4) != image
    assert renderer.reads == () and renderer.suffix == ".png"
    assert renderer.name == f"scene@{url}#seed3"
    assert stats["generations"] == 2 and stats["edits"] == 0


async def test_edit_uploads_the_samples_image_as_multipart() -> None:
    """An editor sends the sample's `image_input` as the multipart image and gets the edit."""
    content = render_text(PROMPT, 0)
    async with (
        images_api() as url,
        OpenAIImageRenderer(url, model="scene-edit", seed=1, image_input="content") as renderer,
    ):
        image = await renderer.render("make the circle blue", {"content": content, "style": b""})
        stats = await server_stats(url)
    assert image == edit_image(content, "make the circle blue", 1) != content
    assert renderer.reads == ("content",)
    assert stats["edits"] == 1


async def test_an_image_url_in_the_reply_is_fetched() -> None:
    """A server that answers with `url` instead of `b64_json` has the image fetched."""
    async with (
        images_api(ImageOptions(force_url=True)) as url,
        OpenAIImageRenderer(url, model="scene") as renderer,
    ):
        assert await renderer.render(PROMPT, {}) == render_text(PROMPT, 0)


async def test_a_500_is_endpoint_unavailable() -> None:
    """HTTP 500 is transient: EndpointUnavailable, kind 5xx, with the server's message."""
    async with (
        images_api(ImageOptions(error_rate=1.0)) as url,
        OpenAIImageRenderer(url, model="scene") as renderer,
    ):
        with pytest.raises(EndpointUnavailable) as info:
            await renderer.render(PROMPT, {})
    assert info.value.kind == "5xx"
    assert "HTTP 500" in str(info.value) and "scene" in str(info.value)


async def test_injected_500s_are_retried_by_the_engine() -> None:
    """With every second request failing, the engine's retry loop gets every image."""
    async with (
        images_api(ImageOptions(error_rate=0.5)) as url,
        OpenAIImageRenderer(url, model="scene") as renderer,
    ):
        retrier = Retrier(NO_WAIT)
        texts = [f"a small blue square on the {where}" for where in ("left", "right", "top")]
        images = [await retrier.call(renderer.render, text, {}) for text in texts]
        stats = await server_stats(url)
    assert images == [render_text(text, 0) for text in texts]
    # Requests 2 and 4 of 5 failed: texts 2 and 3 were each retried once.
    assert (stats["requests"], stats["failed"], stats["generations"]) == (5, 2, 3)


async def test_a_429_carries_the_wait_the_server_asked_for() -> None:
    """HTTP 429 is EndpointUnavailable(kind "429") with Retry-After as `retry_after`."""
    async with (
        images_api(ImageOptions(limit_rate=1.0, retry_after_s=7)) as url,
        OpenAIImageRenderer(url, model="scene") as renderer,
    ):
        with pytest.raises(EndpointUnavailable) as info:
            await renderer.render(PROMPT, {})
    assert (info.value.kind, info.value.retry_after) == ("429", 7.0)
    assert "wait 7 s" in str(info.value)


async def test_a_content_policy_400_fails_that_prompt_alone() -> None:
    """A prompt the server refuses (400) is an InvalidResponse; the next prompt renders."""
    async with (
        images_api(ImageOptions(refuse_word="forbidden")) as url,
        OpenAIImageRenderer(url, model="scene") as renderer,
    ):
        with pytest.raises(RequestRefused) as info:
            await renderer.render("a FORBIDDEN red circle", {})
        assert await renderer.render(PROMPT, {}) == render_text(PROMPT, 0)
    assert isinstance(info.value, InvalidResponse) and info.value.status == 400
    assert "safety system" in str(info.value)


async def test_a_prompt_the_closed_world_cannot_draw_is_refused() -> None:
    """The renderer's own ValueError (a prompt too long) comes back as a 400 refusal."""
    async with images_api() as url, OpenAIImageRenderer(url, model="scene") as renderer:
        with pytest.raises(RequestRefused, match="at most 300"):
            await renderer.render("x" * 900, {})


async def test_a_wrong_key_is_a_config_error_and_the_key_is_never_shown() -> None:
    """401 is a ConfigError naming the key's variable; the key, which the server quotes
    back, appears in no message, repr or log line."""
    async with images_api(ImageOptions(api_key="the-right-key")) as url:
        renderer = OpenAIImageRenderer(url, model="scene", api_key=KEY)
        with capture_logs() as logs:
            async with renderer:
                with pytest.raises(ConfigError) as info:
                    await renderer.render(PROMPT, {})
    message = str(info.value)
    assert "HTTP 401" in message and "OPENAI_API_KEY" in message and "***" in message
    shown = [message, repr(info.value), repr(renderer), renderer.name, repr(logs)]
    assert not any(KEY in text for text in shown)
    settings = RendererSettings(kind="openai", url=url, model="scene", api_key=KEY)
    assert KEY not in repr(settings)


async def test_the_key_from_the_environment_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `api_key`, the key is read from `api_key_env` and accepted by the server."""
    monkeypatch.setenv("MILS_TEST_IMAGES_KEY", KEY)
    async with images_api(ImageOptions(api_key=KEY)) as url:
        settings = RendererSettings(
            kind="openai", url=url, model="scene", api_key_env="MILS_TEST_IMAGES_KEY"
        )
        renderer = settings.build()
        async with renderer:
            assert await renderer.render(PROMPT, {}) == render_text(PROMPT, 0)


async def test_a_wrong_path_is_a_config_error_and_a_closed_port_is_unavailable() -> None:
    """404 (no images API at that URL) is a ConfigError; nothing listening is retryable."""
    async with (
        images_api() as url,
        OpenAIImageRenderer(url.removesuffix("/v1"), model="scene") as renderer,
    ):
        with pytest.raises(ConfigError, match=r"HTTP 404.*ends in /v1"):
            await renderer.render(PROMPT, {})
    async with OpenAIImageRenderer(f"http://{HOST}:{free_port()}/v1", model="m") as renderer:
        with pytest.raises(EndpointUnavailable) as info:
            await renderer.render(PROMPT, {})
    assert info.value.kind == "connect"


async def test_a_slow_server_times_out_as_endpoint_unavailable() -> None:
    """A render slower than `timeout` is a retryable timeout."""
    async with (
        images_api(ImageOptions(latency_ms=2000)) as url,
        OpenAIImageRenderer(url, model="scene", timeout=0.2) as renderer,
    ):
        with pytest.raises(EndpointUnavailable) as info:
            await renderer.render(PROMPT, {})
    assert info.value.kind == "timeout"


def test_settings_are_checked_up_front() -> None:
    """Bad kinds, URLs, sizes and seedless Triton renderers are refused when configured."""
    with pytest.raises(ConfigError, match="kind"):
        RendererSettings(kind="dalle", url="http://x:1/v1", model="m")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="http"):
        RendererSettings(kind="openai", url="127.0.0.1:8000", model="m")
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        RendererSettings(kind="openai", url="http://x:1/v1", model="m", size="big")
    with pytest.raises(ConfigError, match="seed"):
        RendererSettings(kind="triton", url="127.0.0.1:8001", model="m", seed=None)
    with pytest.raises(ConfigError, match="renderer_url"):
        RendererSettings(kind="triton", url="127.0.0.1", model="m")
    built = RendererSettings(kind="triton", url="http://127.0.0.1:8000", model="m", seed=5)
    renderer = built.build()
    assert isinstance(renderer, TritonRenderer) and renderer.name == "m@127.0.0.1:8000#seed5"


async def test_render_then_score_renders_a_repeated_text_once_on_the_server() -> None:
    """Through the objective, a text asked for two samples is one request to the server."""

    class Size:
        name = "size"

        async def score(self, media: bytes, text: str, inputs: object) -> dict[str, float]:
            return {"bytes": float(len(media))}

    async with images_api() as url, OpenAIImageRenderer(url, model="scene") as renderer:
        objective = RenderThenScore(
            renderer=renderer,
            scorer=Size(),
            combine=WeightedSum({"bytes": 1.0}),
            higher_is_better=True,
            in_flight=4,
            retrier=Retrier(NO_WAIT),
        )
        async with objective:
            one = await objective.prepare({"prompt": b"one"})
            two = await objective.prepare({"prompt": b"two"})
            first = await objective.evaluate(one, [PROMPT, PROMPT, "a blue square"])
            second = await objective.evaluate(two, [PROMPT])
        stats = await server_stats(url)
    assert stats["generations"] == 2
    assert first[0] is not None and second[0] is not None and first[0].value == second[0].value
    assert objective.statistics().cache_hits == 2


async def test_the_load_model_server_serves_the_images_api_with_its_options(
    tmp_path: Path,
) -> None:
    """`LoadLLMServer` mounts the images API and passes the options to its subprocess."""
    images = ImageOptions(api_key=KEY, refuse_word="forbidden")
    with LoadLLMServer(images=images, log_path=tmp_path / "llm.log") as server:
        async with OpenAIImageRenderer(server.base_url, model="scene", api_key=KEY) as renderer:
            assert await renderer.render(PROMPT, {}) == render_text(PROMPT, 0)
            with pytest.raises(RequestRefused):
                await renderer.render("forbidden fruit", {})
        async with OpenAIImageRenderer(server.base_url, model="scene", api_key="no") as renderer:
            with pytest.raises(ConfigError, match="401"):
                await renderer.render(PROMPT, {})
    assert KEY not in " ".join(server._command())


# --- Triton: AlignmentScorer on the closed world's committed encoder pair -------------


class CountingScorer(TritonScorer):
    """A TritonScorer that records the texts it embeds."""

    def __init__(self, url: str) -> None:
        super().__init__(url, text_model="scene_text", target_model="scene_image")
        self.embedded: list[str] = []

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return await super().embed_texts(texts)


async def test_alignment_prefers_the_render_of_the_prompt(local_triton: TritonServer) -> None:
    """A render of the sample's prompt aligns better with it than a render of another text,
    and the prompt is embedded once however many renders are scored."""
    scorer = CountingScorer(local_triton.grpc_url)
    inputs = {"prompt": PROMPT.encode()}
    async with scorer, AlignmentScorer(scorer) as alignment:
        right, wrong, again = await asyncio.gather(
            alignment.score(render_text(PROMPT, 0), "t", inputs),
            alignment.score(render_text("two small green squares at the top", 0), "t", inputs),
            alignment.score(render_text(PROMPT, 1), "t", inputs),
        )
    assert set(right) == {"alignment"}
    assert -1.0 <= wrong["alignment"] < right["alignment"] <= 1.0
    assert math.isfinite(again["alignment"])
    assert scorer.embedded == [PROMPT]
    assert alignment.name == f"alignment({scorer.name})"


async def test_alignment_builds_its_own_scorer_from_settings(local_triton: TritonServer) -> None:
    """Given settings, the alignment scorer opens and closes its own encoder pair."""
    settings = ScorerSettings(
        url=local_triton.grpc_url, text_model="scene_text", target_model="scene_image"
    )
    async with AlignmentScorer(settings, prompt_input="caption") as alignment:
        terms = await alignment.score(render_text(PROMPT, 0), "t", {"caption": PROMPT.encode()})
        with pytest.raises(ConfigError, match="'caption'"):
            await alignment.score(render_text(PROMPT, 0), "t", {"prompt": b"x"})
    assert math.isfinite(terms["alignment"])


# --- Triton: the closed world's renderer, editor and style scorer ---------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_triton_renderer_draws_the_text_as_the_closed_world_does(
    local_triton: TritonServer, protocol: str
) -> None:
    """scene_render returns render_text's PNG for the text and the fixed seed."""
    url = local_triton.grpc_url if protocol == "grpc" else f"http://{local_triton.http_url}"
    async with TritonRenderer(url, model="scene_render", seed=2) as renderer:
        image = await renderer.render(PROMPT, {"unused": b""})
    assert image == render_text(PROMPT, 2)
    assert renderer.reads == () and renderer.name == f"scene_render@{renderer.url}#seed2"


async def test_triton_editor_edits_the_samples_image(local_triton: TritonServer) -> None:
    """scene_edit takes the sample's `image_input` and returns edit_image's PNG."""
    content = render_text(PROMPT, 0)
    async with TritonRenderer(
        local_triton.grpc_url, model="scene_edit", seed=1, image_input="content"
    ) as editor:
        image = await editor.render("make the circle blue", {"content": content})
    assert image == edit_image(content, "make the circle blue", 1)
    assert editor.reads == ("content",)


async def test_triton_renderer_refusals_fail_that_text_alone(local_triton: TritonServer) -> None:
    """A text the model refuses is an InvalidResponse naming the reason; the next renders."""
    async with TritonRenderer(local_triton.grpc_url, model="scene_render") as renderer:
        with pytest.raises(InvalidResponse, match="at most 300") as info:
            await renderer.render("x" * 900, {})
        assert await renderer.render(PROMPT, {}) == render_text(PROMPT, 0)
    assert not isinstance(info.value, EndpointUnavailable)


async def test_triton_renderer_checks_the_model_on_open(local_triton: TritonServer) -> None:
    """Opening checks the model is loaded and matches the mode (editor or text-to-image)."""
    url = local_triton.grpc_url
    with pytest.raises(ConfigError, match="image_input"):
        await TritonRenderer(url, model="scene_render", image_input="content").open()
    with pytest.raises(ConfigError, match="edits an IMAGE input; set `image_input`"):
        await TritonRenderer(url, model="scene_edit").open()
    with pytest.raises(ConfigError, match="no TYPE_STRING input 'TEXT'"):
        await TritonRenderer(url, model="scene_style", image_input="content").open()
    with pytest.raises(ModelNotReady, match="sd_render"):
        await TritonRenderer(url, model="sd_render").open()
    with pytest.raises(EndpointUnavailable):
        await TritonRenderer(f"{HOST}:{free_port()}", model="scene_render", timeout=2).open()


async def test_style_scorer_losses_are_zero_for_the_inputs_themselves(
    local_triton: TritonServer,
) -> None:
    """scene_style gives both terms: no content loss for the content image, no style loss
    for the style image, and more content loss for another scene."""
    content = render_text(PROMPT, 0)
    style = render_text("a small blue triangle at the bottom", 0)
    other = render_text("three yellow squares on the right", 0)
    inputs = {"content": content, "style": style}
    async with TritonStyleScorer(local_triton.grpc_url) as scorer:
        same = await scorer.score(content, "t", inputs)
        moved = await scorer.score(other, "t", inputs)
        styled = await scorer.score(style, "t", inputs)
        with pytest.raises(InvalidResponse):
            await scorer.score(b"not an image", "t", inputs)
    assert set(same) == {"style", "content"}
    assert all(math.isfinite(v) for v in (*same.values(), *moved.values()))
    assert same["content"] == pytest.approx(0.0, abs=1e-6)
    assert styled["style"] == pytest.approx(0.0, abs=1e-6)
    assert same["content"] < moved["content"] and styled["style"] < same["style"]
    assert scorer.name == f"scene_style@{local_triton.grpc_url}"
