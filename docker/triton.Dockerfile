# Triton Inference Server for mils: NVIDIA's NGC image plus what the python-backend models of
# triton_models/ import (torch, transformers, Pillow, numpy, PyAV), the closed-world scorers
# (scenes, moving scenes, sounds), and an
# entrypoint that also serves every CLIP/SigLIP pair `mils models pull` put into the model
# repository volume (/models; docker/export_models.sh fills it).
#
#   docker build -f docker/triton.Dockerfile -t mils-triton .       (from the repository root)
#   docker run --rm --gpus all --shm-size 2g -v mils-models:/models:ro \
#       -p 8000:8000 -p 8001:8001 mils-triton
#
# Base tag 24.10 (Triton 2.51.0, CUDA 12.6, Ubuntu 22.04 with Python 3.10): 2.51 is the server
# the test suite runs these python-backend models on (the binary inside the nvidia-pytriton
# 0.7.0 wheel), so the image serves them with the server release they are tested against. It
# needs NVIDIA driver 560+ (R535/R545 on data-center GPUs, by CUDA forward compatibility);
# torch's CUDA 12.8 wheels below make R570 or newer the safe choice.
# 24.10 runs on Pascal to Hopper and Ada GPUs; Blackwell needs a 25.xx tag
# (--build-arg TRITON_VERSION=YY.MM). Check a newer tag's release notes for its Python: the
# pins below are for 3.10, and on an Ubuntu 24.04 base pip also needs --break-system-packages.
ARG TRITON_VERSION=24.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3

# What the python-backend models import, pinned. torch 2.10.0 is the newest whose PyPI wheels
# use CUDA 12 (12.8; 2.11 and later pull CUDA 13, which needs driver 580+); transformers
# 5.20.2 is the newest for Python 3.10 (model.py also runs on 4.x); sentencepiece and protobuf
# read SigLIP's tokenizer; numpy stays below 2, as the 2.51 python backend stub needs. This set
# was resolved for Python 3.10 with `pip install --dry-run` against PyPI; the test suite runs
# the same models on torch 2.13 (CPU) and transformers 5.24 (Python 3.11). av 17.1 is the
# newest PyAV with Python 3.10 wheels (the tests run 18.1).
ARG TORCH_VERSION=2.10.0
ARG TRANSFORMERS_VERSION=5.20.2
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check \
        "torch==${TORCH_VERSION}" \
        "transformers==${TRANSFORMERS_VERSION}" \
        "sentencepiece==0.2.3" \
        "protobuf==6.33.6" \
        "pillow==12.3.0" \
        "av==17.1.0" \
        "numpy==1.26.4"

# The image's own models: the closed-world scorers of images, videos and sounds (trained
# here), the closed world's renderer, editor and style losses, and the code every model shares. The clip_* code
# is not copied here: `mils models pull` writes it into /models for each checkpoint (as
# clip_text / clip_image with the default alias), pinned to the weights it installed.
COPY triton_models/_common /opt/mils/triton_models/_common
COPY triton_models/_scene_clip/network.py triton_models/_scene_clip/weights.pt /opt/mils/triton_models/_scene_clip/
COPY triton_models/scene_text /opt/mils/triton_models/scene_text
COPY triton_models/scene_image /opt/mils/triton_models/scene_image
COPY triton_models/_motion_clip/network.py triton_models/_motion_clip/weights.pt /opt/mils/triton_models/_motion_clip/
COPY triton_models/motion_text /opt/mils/triton_models/motion_text
COPY triton_models/motion_video /opt/mils/triton_models/motion_video
COPY triton_models/_sound_clap/network.py triton_models/_sound_clap/weights.pt /opt/mils/triton_models/_sound_clap/
COPY triton_models/sound_text /opt/mils/triton_models/sound_text
COPY triton_models/sound_audio /opt/mils/triton_models/sound_audio
# The closed world's renderer, editor and style losses: the first two draw with the scene
# world's own code (tasks/_scene_world.py, which imports nothing from mils), found beside the
# model repository.
COPY tasks/_scene_world.py /opt/mils/tasks/_scene_world.py
COPY triton_models/scene_render /opt/mils/triton_models/scene_render
COPY triton_models/scene_edit /opt/mils/triton_models/scene_edit
COPY triton_models/scene_style /opt/mils/triton_models/scene_style
# executable in git (tests/test_docker.py checks), so COPY keeps it so
COPY docker/triton_entrypoint.sh /usr/local/bin/mils-tritonserver

# The same uid as the engine image, which writes the model repository volume.
RUN groupadd --system --gid 10001 mils \
    && useradd --system --uid 10001 --gid mils --create-home --home-dir /home/mils mils \
    && mkdir -p /models \
    && chown mils:mils /models
USER 10001:10001
ENV HF_HOME=/home/mils/.cache/huggingface \
    MILS_MODEL_REPOSITORY=/models
EXPOSE 8000 8001 8002
# Ready means the server is up and every model it was asked to load is loaded; loading
# torch and a checkpoint takes a while, hence the start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
# The NGC image's ENTRYPOINT (nvidia_entrypoint.sh: banner, CUDA compatibility set-up) stays.
CMD ["mils-tritonserver"]
