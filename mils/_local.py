"""`mils local up | down | status`: the offline local stack, kept running between commands.

The servers run detached in their own process groups; their pids and URLs live in
`./.mils/local.json`, from which `mils caption` takes its default endpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mils.adapters.local_stack import (
    DEFAULT_OFFLINE_GENERATOR,
    OFFLINE_GENERATORS,
    LlamaServer,
    OfflineGenerator,
    TritonServer,
    load_state,
    save_state,
)
from mils.engine import ConfigError
from mils.engine.logs import configure_logging
from mils.tasks import ScorerModels

__all__ = [
    "LOCAL_MODELS",
    "LOCAL_RENDERERS",
    "LOCAL_SCORERS",
    "PULLED_DIR",
    "STATE_DIR",
    "cmd_local",
    "local_urls",
    "model_repository",
    "offline_generator",
    "pulled_models",
]

STATE_DIR = Path(".mils")
PULLED_DIR = STATE_DIR / "models"
"""The model repository `mils models pull` writes and `mils local up` serves too."""
_HERE = Path(__file__).resolve().parent


def model_repository(path: Path | None = None) -> Path:
    """The Triton model repository to serve: `path`, else the one shipped with mils.

    A wheel carries it as `mils/triton_models`; a source checkout has it beside `mils/`.
    """
    for candidate in (path,) if path else (_HERE / "triton_models", _HERE.parent / "triton_models"):
        if candidate is not None and (candidate / "toyclip_text" / "config.pbtxt").is_file():
            return candidate
    raise ConfigError(
        f"no Triton model repository at {path or _HERE / 'triton_models'}; pass "
        "--model-repository with a folder holding toyclip_text/ and toyclip_image/"
    )


# The scene scorer, trained here on the closed world of `mils.tasks.scenes` (the only
# meaningful image-text model that exists offline). The toyclip pair stays in the
# repository for tests that need an encoder without weights.
LOCAL_SCORERS: dict[str, ScorerModels] = {
    "image-caption": ScorerModels(text="scene_text", target="scene_image", target_input="IMAGE"),
    # Trained here the same way on moving scenes (`mils.tasks.motion`) and synthetic sounds
    # (`mils.tasks.sounds`).
    "video-caption": ScorerModels(text="motion_text", target="motion_video", target_input="VIDEO"),
    "audio-caption": ScorerModels(text="sound_text", target="sound_audio", target_input="AUDIO"),
    # The generation tasks on the closed world: a render is scored against the prompt by the
    # scene scorer, and a style transfer by losses on the scene scorer's image features.
    "t2i-enhance": ScorerModels(text="scene_text", target="scene_image", target_input="IMAGE"),
    "style-transfer": ScorerModels(style="scene_style"),
}
"""The local stack's scorer models per task."""
LOCAL_RENDERERS: dict[str, str] = {"t2i-enhance": "scene_render", "style-transfer": "scene_edit"}
"""The local stack's renderer per generation task: the closed world's text-to-image
renderer and image editor (`mils.tasks.scenes.render_text` / `edit_image`, served)."""
LOCAL_MODELS = tuple(
    dict.fromkeys(
        model
        for models in (
            *((s.text, s.target, s.style) for s in LOCAL_SCORERS.values()),
            LOCAL_RENDERERS.values(),
        )
        for model in models
        if model
    )
)


def pulled_models(repository: Path = PULLED_DIR) -> list[str]:
    """Models of `repository` (folders with a config.pbtxt), sorted; [] when it is absent."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def local_urls() -> dict[str, str]:
    """Endpoints of the running local stack, or {} when it is not (fully) running."""
    servers = load_state(STATE_DIR / "local.json")
    if not all(name in servers and servers[name].is_running() for name in ("llama", "triton")):
        return {}
    model = servers["llama"].model or "smollm2"  # state files of earlier versions
    offline = OFFLINE_GENERATORS.get(model)
    return {
        "generator_url": servers["llama"].urls["base_url"],
        "generator_model": model,
        "prompt_mode": offline.prompt_mode if offline else "chat",
        "scorer_url": servers["triton"].urls["grpc"],
        "scorer_http_url": servers["triton"].urls["http"],
    }


def offline_generator(name: str | None) -> OfflineGenerator:
    """The offline generator called `name` (default: the one the quality benchmark chose);
    says its licence on stderr."""
    generator = OFFLINE_GENERATORS[name or DEFAULT_OFFLINE_GENERATOR]
    print(f"generator model: {generator.licence}", file=sys.stderr)
    return generator


def cmd_local(args: argparse.Namespace) -> int:
    """Start, stop or describe the local stack."""
    state_file = STATE_DIR / "local.json"
    servers = load_state(state_file)
    if args.action == "status":
        for name, info in servers.items():
            alive = "running" if info.is_running() else "stopped"
            print(f"{name}\t{alive}\tpid {info.pid}\t{info.urls}\tlog {info.log_path}")
        return 0 if servers else 1
    if args.action == "down":
        if not servers:
            print(
                f"no local stack recorded in {state_file} (run from the folder of `mils local up`)"
            )
            return 0
        for info in servers.values():
            info.stop()
        state_file.unlink(missing_ok=True)
        print("local stack stopped")
        return 0
    if servers and all(info.is_running() for info in servers.values()):
        print("local stack already running; `mils local status` shows it")
        return 0
    configure_logging(console_level="info")
    logs = STATE_DIR / "logs"
    repository = model_repository(args.model_repository)
    pulled = pulled_models()
    triton = TritonServer(
        model_repository=repository,
        extra_repositories=[PULLED_DIR] if pulled else [],
        log_path=logs / "triton.log",
        models=(*LOCAL_MODELS, *pulled),
        detach=True,
    ).start()
    generator = offline_generator(args.generator)
    llama = LlamaServer(
        model_path=generator.find(), alias=generator.name, log_path=logs / "llama.log", detach=True
    ).start()
    save_state(state_file, {"triton": triton.info(), "llama": llama.info()})
    print(
        f"generator {llama.base_url} ({generator.name}, {generator.prompt_mode} prompts); "
        f"scorer {triton.grpc_url} (gRPC), {triton.http_url} (HTTP); stop with "
        "`mils local down`"
    )
    if pulled:
        print(f"pulled models from {PULLED_DIR}: {', '.join(pulled)}")
    return 0
