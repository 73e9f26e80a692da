"""docker/: the compose file, the Dockerfiles, .dockerignore and the two scripts, checked
without a Docker daemon and without network.

What runs here: the compose file's structure (every service health-checked or gated on
healthy ones, every path it names present, the engine's command accepted by today's CLI),
the Dockerfiles' structure and hadolint, the build context's filter, and the scripts the
images run (`export_models.sh` with a real `mils models pull` of a tiny CLIP folder,
`triton_entrypoint.sh` against a stand-in `tritonserver`). Building and starting the images
needs a daemon and GPUs, and is not done here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mils._args import parser
from mils._local import LOCAL_MODELS

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
VENV_BIN = Path(sys.executable).parent
JOB_CONDITION = "service_completed_successfully"


# --- compose ----------------------------------------------------------------------------


def _interpolate(value: Any) -> Any:
    """`value` with every ${VAR:-default} / ${VAR-default} / ${VAR} as compose resolves it
    with none of the variables set (what a user gets who sets nothing)."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", r"\1", value)
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    depends = service.get("depends_on", {})
    assert isinstance(depends, dict), "depends_on must be the long form, with a condition"
    return depends


def test_every_dependency_waits_for_health_or_a_finished_job(compose: dict[str, Any]) -> None:
    """No service starts on a dependency that is merely running: it waits for a passing
    health check, or for a one-shot job that exited 0."""
    services = compose["services"]
    for name, service in services.items():
        for target, spec in _depends_on(service).items():
            condition = spec.get("condition")
            assert condition in ("service_healthy", JOB_CONDITION), (name, target, condition)
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            else:
                assert services[target].get("restart", "no") == "no", f"{target} is a job"


def test_every_service_is_health_checked_or_a_gated_job(compose: dict[str, Any]) -> None:
    """A server has a health check; a service without one is a job (never restarted) that
    either starts after healthy servers or that others wait on to finish."""
    services = compose["services"]
    awaited = {
        target
        for service in services.values()
        for target, spec in _depends_on(service).items()
        if spec["condition"] == JOB_CONDITION
    }
    for name, service in services.items():
        check = service.get("healthcheck")
        if check is not None:
            assert not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL"), name
            continue
        assert service.get("restart") == "no", f"{name} has no health check and restarts"
        gated = any(
            spec["condition"] == "service_healthy" for spec in _depends_on(service).values()
        )
        assert gated or name in awaited, f"{name}: no health check and nothing gates it"


def test_servers_are_checked_on_their_readiness_endpoints(compose: dict[str, Any]) -> None:
    """vLLM on /health, Triton on /v2/health/ready (ready = every requested model loaded)."""
    services = compose["services"]
    assert "/health'" in " ".join(services["vllm"]["healthcheck"]["test"])
    assert "/v2/health/ready" in " ".join(services["triton"]["healthcheck"]["test"])


def test_both_servers_reserve_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    """vLLM and Triton run on GPUs; the engine and the export job need none."""
    for name, service in compose["services"].items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        gpus = [d for d in devices.get("devices", []) if "gpu" in d.get("capabilities", [])]
        assert bool(gpus) == (name in ("vllm", "triton")), name
        assert all(d["driver"] == "nvidia" for d in gpus)


def test_every_path_the_compose_file_names_exists(compose: dict[str, Any]) -> None:
    """Build contexts, Dockerfiles and bind-mount sources exist (relative to docker/, as
    compose resolves them); named volumes and secrets are declared."""
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind source {source} is missing"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], name


def test_the_hf_token_travels_only_as_a_secret(compose: dict[str, Any]) -> None:
    """No service has the token in its environment (which `docker inspect` and `docker
    compose config` print); the ones that download read it from the secret's file."""
    assert compose["secrets"]["hf_token"] == {"environment": "HF_TOKEN"}
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), name
        assert not {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} & set(env), name
        if "hf_token" in service.get("secrets", []):
            assert env["HF_TOKEN_PATH"] == "/run/secrets/hf_token", name


def test_the_engine_command_is_a_valid_mils_caption_against_the_servers(
    compose: dict[str, Any],
) -> None:
    """The engine's command parses with today's CLI, names the vllm and triton services and
    the model pair the export job installs."""
    services = compose["services"]
    args = parser().parse_args(services["engine"]["command"])
    assert args.command == "caption"
    assert args.generator_url == ["http://vllm:8000/v1"]
    assert args.generator_model == services["vllm"]["command"][0].removeprefix("--model=")
    assert args.scorer_url.split(":")[0] == "triton"
    alias = services["models"]["environment"]["MILS_SCORER_ALIAS"]
    assert (args.text_model, args.image_model) == (f"{alias}_text", f"{alias}_image")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["triton"]["volumes"]}
    exports = {v.split(":")[1]: v.split(":")[0] for v in services["models"]["volumes"]}
    assert mounts["/models"] == exports["/models"], "Triton must see the pinned weight paths"


# --- Dockerfiles ------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuation lines joined, comments out."""
    stages: list[list[tuple[str, str]]] = [[]]
    logical = ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#"):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            keyword, _, rest = logical.strip().partition(" ")
            if keyword.upper() == "FROM":
                stages.append([])
            stages[-1].append((keyword.upper(), " ".join(rest.split())))
        logical = ""
    return stages[1:]


def _copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths COPY/ADD read (not those copied from another stage)."""
    sources = []
    for stage in _instructions(dockerfile):
        for keyword, args in stage:
            words = args.split()
            if keyword in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
                sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def test_the_engine_image_runs_mils_as_a_non_root_user_without_torch() -> None:
    """The final stage drops to a named non-root user, runs `mils`, and nothing in any
    stage installs torch, the `local`/`clip` extras or a server."""
    stages = _instructions(DOCKER / "engine.Dockerfile")
    final = stages[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["mils"]') in final
    runs = " ".join(args for stage in stages for keyword, args in stage if keyword == "RUN")
    installs = re.findall(r"pip install ([^&;]*)", runs)
    assert installs and all(re.search(r"(^|\s)\.(\s|$)", i) for i in installs), installs
    for forbidden in ("torch", "transformers", "pytriton", "llama", "[", "-r "):
        assert not any(forbidden in i for i in installs), forbidden


def test_the_triton_image_is_ngc_triton_with_what_the_models_import() -> None:
    """NGC base at the tag compose builds, the python-backend models' packages installed,
    the scene scorer copied, a readiness health check."""
    text = (DOCKER / "triton.Dockerfile").read_text(encoding="utf-8")
    tag = re.search(r"^ARG TRITON_VERSION=(\d\d\.\d\d)$", text, re.M)
    assert tag is not None
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3" in text
    compose_args = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["triton"]["build"]
    assert compose_args["args"]["TRITON_VERSION"] == f"${{TRITON_VERSION:-{tag.group(1)}}}"
    runs = " ".join(
        a for s in _instructions(DOCKER / "triton.Dockerfile") for k, a in s if k == "RUN"
    )
    for package in ("torch==", "transformers==", "pillow==", "av==", "numpy=="):
        assert package in runs, package
    assert "/v2/health/ready" in text
    for model in LOCAL_MODELS:
        assert f"triton_models/{model}" in _copy_sources(DOCKER / "triton.Dockerfile")


def test_every_copied_path_exists() -> None:
    """What the Dockerfiles COPY from the build context (the repository root) exists."""
    for dockerfile in DOCKERFILES:
        for source in _copy_sources(dockerfile):
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}"


def test_hadolint_passes_on_every_dockerfile() -> None:
    """hadolint (from the `test` extra) finds nothing at its default threshold."""
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.is_file(), "hadolint comes with the test extra: run scripts/setup.sh"
    assert len(DOCKERFILES) == 2
    proc = subprocess.run(
        [str(hadolint), "--no-color", *map(str, DOCKERFILES)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- .dockerignore ----------------------------------------------------------------------


def _pattern(raw: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker's patternmatcher compiles it."""
    out = ""
    i, text = 0, os.path.normpath(raw.strip().lstrip("/"))
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(f"^{out}$")


def _excluded(path: str) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching the path or
    one of its parent folders decides, `!` patterns bring paths back."""
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [(ln.startswith("!"), _pattern(ln.lstrip("!"))) for ln in lines if ln.strip()
             and not ln.startswith("#")]  # fmt: skip
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "runs/demo-1/run.db",
        ".mils/local.json",
        ".mils/models/_weights/clip/model.safetensors",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/mils/cli.data.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".git/HEAD",
        "build/typecheck/dist/mils.whl",
        "mils.egg-info/PKG-INFO",
        "tests/test_docker.py",
        "docker/inputs/cat.jpg",
        "mils/__pycache__/cli.cpython-311.pyc",
        "triton_models/scene_text/1/__pycache__/model.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    """Virtualenv, runs, local state, caches, tests and user images never reach a build."""
    assert _excluded(path)


def test_the_build_context_keeps_what_the_dockerfiles_copy() -> None:
    """Every file under a COPY source is in the build context."""
    for dockerfile in DOCKERFILES:
        for source in _copy_sources(dockerfile):
            root = REPO / source
            files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
            kept = [f for f in files if not _excluded(f.relative_to(REPO).as_posix())]
            assert kept, f"{dockerfile.name}: COPY {source} gets nothing"
            assert all("__pycache__" not in f.parts for f in kept)
            if root.is_file():
                assert kept == [root], source


# --- the scripts the images run ---------------------------------------------------------


def _sh(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(
        ["sh", str(DOCKER / script), *args], capture_output=True, text=True, timeout=120,
        env=full_env,
    )  # fmt: skip


def test_export_installs_a_pinned_pair_once(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """export_models.sh runs `mils models pull` into the repository, pins the weights by
    absolute path, and leaves an installed pair alone on the next `up`."""
    env = {"MILS_MODEL_REPOSITORY": str(tmp_path / "models")}
    first = _sh("export_models.sh", str(tiny_clip_dir), "tiny", env=env)
    assert first.returncode == 0, first.stderr
    config = tmp_path / "models" / "tiny_text" / "config.pbtxt"
    weights = (tmp_path / "models" / "_weights" / "tiny").resolve()
    assert f'"{weights}"' in config.read_text()
    stamp = config.stat().st_mtime_ns
    again = _sh("export_models.sh", str(tiny_clip_dir), "tiny", env=env)
    assert again.returncode == 0 and "already installed" in again.stdout
    assert config.stat().st_mtime_ns == stamp
    forced = _sh(
        "export_models.sh", str(tiny_clip_dir), "tiny", env={**env, "MILS_FORCE_PULL": "1"}
    )
    assert forced.returncode == 0 and "installed tiny_text and tiny_image" in forced.stdout


def test_export_refuses_the_alias_of_a_shipped_model(tmp_path: Path) -> None:
    """`scene` would clash with the image's own scene_text / scene_image."""
    proc = _sh(
        "export_models.sh", "any/model", "scene", env={"MILS_MODEL_REPOSITORY": str(tmp_path)}
    )
    assert proc.returncode == 2 and "taken by a model the Triton image ships" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.fixture
def fake_tritonserver(tmp_path: Path) -> Path:
    """A `tritonserver` that prints its arguments, one a line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tritonserver").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (bin_dir / "tritonserver").chmod(0o755)
    return bin_dir


def _entrypoint(bin_dir: Path, repo: Path, **env: str) -> list[str]:
    proc = _sh(
        "triton_entrypoint.sh", "--log-verbose=1",
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             "MILS_MODEL_REPOSITORY": str(repo), "MILS_SHIPPED_MODELS": "/opt/shipped", **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_triton_serves_the_scene_pair_and_every_pulled_pair(
    fake_tritonserver: Path, tmp_path: Path
) -> None:
    """Both repositories, explicit loading of the scene pair plus each pulled model (not the
    _common/_weights folders), the caller's flags passed on."""
    repo = tmp_path / "models"
    for folder in ("clip_text", "clip_image", "_common", "_weights/clip"):
        (repo / folder).mkdir(parents=True)
    for model in ("clip_text", "clip_image"):
        (repo / model / "config.pbtxt").write_text(f'name: "{model}"\n')
    args = _entrypoint(fake_tritonserver, repo)
    assert args[0] == "--model-control-mode=explicit"
    assert {f"--model-repository={repo}", "--model-repository=/opt/shipped"} <= set(args)
    loaded = sorted(a.removeprefix("--load-model=") for a in args if a.startswith("--load-model="))
    assert loaded == [
        "clip_image", "clip_text", "motion_text", "motion_video", "scene_edit", "scene_image",
        "scene_render", "scene_style", "scene_text", "sound_audio", "sound_text",
    ]  # fmt: skip
    assert "--log-verbose=1" in args


def test_triton_models_and_flags_can_be_chosen(fake_tritonserver: Path, tmp_path: Path) -> None:
    """MILS_TRITON_MODELS replaces the list; MILS_TRITON_ARGS adds flags; a missing model
    repository volume is left out rather than passed to the server."""
    args = _entrypoint(
        fake_tritonserver,
        tmp_path / "absent",
        MILS_TRITON_MODELS="clip_text clip_image",
        MILS_TRITON_ARGS="--log-info=false --strict-readiness=true",
    )
    assert [a for a in args if a.startswith("--load-model=")] == [
        "--load-model=clip_text",
        "--load-model=clip_image",
    ]
    assert args[-2:] == ["--log-info=false", "--strict-readiness=true"]
    assert [a for a in args if a.startswith("--model-repository=")] == [
        "--model-repository=/opt/shipped"
    ]


def test_the_scripts_are_posix_sh() -> None:
    """The engine image (Debian dash) and the Triton image run them with /bin/sh."""
    for script in DOCKER.glob("*.sh"):
        assert script.read_text().startswith("#!/bin/sh\n"), script.name
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0, script.name
