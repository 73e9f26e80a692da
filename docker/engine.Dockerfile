# The mils engine: the `mils` command and nothing else. No torch, no llama.cpp, no Triton
# server: it installs the package without the `local` and `clip` extras and talks to remote
# endpoints (an OpenAI-compatible generator, a Triton scorer) given by flags.
#
#   docker build -f docker/engine.Dockerfile -t mils-engine .       (from the repository root)
#   docker run --rm -v mils-runs:/work/runs -v "$PWD/photos:/work/inputs:ro" mils-engine \
#       caption inputs/ --generator-url http://vllm:8000/v1 --generator-model MODEL \
#       --scorer-url triton:8001 --text-model clip_text --image-model clip_image
#
# The working directory is /work, so the CLI's defaults hold: runs go to runs/<task>-<time>
# (/work/runs, a volume), `mils runs` lists them. No HEALTHCHECK: the engine is a batch
# command that exits when its run ends, not a server; what it depends on is health-checked
# in docker/compose.yaml.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mils mils
COPY engine engine
COPY adapters adapters
COPY tasks tasks
COPY triton_models triton_models
# huggingface_hub (no torch) lets `mils models pull` download checkpoints into a model
# repository volume (docker/export_models.sh); nothing else is added to the base install.
RUN python -m venv /opt/mils \
    && /opt/mils/bin/pip install --no-cache-dir --disable-pip-version-check \
        . "huggingface_hub>=0.23,<2" \
    && if /opt/mils/bin/python -c "import torch" 2>/dev/null; then \
        echo "torch must not be in the engine image" >&2; exit 1; fi

FROM python:${PYTHON_VERSION}-slim-bookworm
# A fixed uid, shared with the Triton image, so both can use the model repository volume.
RUN groupadd --system --gid 10001 mils \
    && useradd --system --uid 10001 --gid mils --create-home --home-dir /home/mils mils \
    && mkdir -p /work/runs /work/inputs /models \
    && chown mils:mils /work /work/runs /models
COPY --from=build /opt/mils /opt/mils
# executable in git (tests/test_docker.py checks), so COPY keeps it so
COPY docker/export_models.sh /usr/local/bin/mils-export-models
ENV PATH=/opt/mils/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /work
VOLUME ["/work/runs"]
ENTRYPOINT ["mils"]
CMD ["--help"]
