#!/bin/sh
# Start tritonserver over the mils models: the closed-world scorers shipped in the image
# (/opt/mils/triton_models) and every model pair `mils models pull` put into the model
# repository volume ($MILS_MODEL_REPOSITORY, /models).
#
# Models are loaded explicitly by name: the model repositories also hold folders that are
# not models (_common, _scene_clip, _weights), and with explicit loading one model that fails
# to load stops the server at start instead of leaving it half up.
#   MILS_TRITON_MODELS  space-separated models to load instead (e.g. "clip_text clip_image")
#   MILS_TRITON_ARGS    extra tritonserver flags; arguments given to this script are passed too
set -eu

shipped=${MILS_SHIPPED_MODELS:-/opt/mils/triton_models}
pulled=${MILS_MODEL_REPOSITORY:-/models}

models=${MILS_TRITON_MODELS:-}
if [ -z "$models" ]; then
    models="scene_text scene_image motion_text motion_video sound_text sound_audio"
    models="$models scene_render scene_edit scene_style"
    for config in "$pulled"/*/config.pbtxt; do
        [ -f "$config" ] || continue
        models="$models $(basename "$(dirname "$config")")"
    done
fi

set -- --model-repository="$shipped" "$@"
if [ -d "$pulled" ]; then
    set -- --model-repository="$pulled" "$@"
fi
for model in $models; do
    set -- "$@" --load-model="$model"
done
echo "mils-tritonserver: loading $models" >&2
# MILS_TRITON_ARGS is split on spaces on purpose: it holds several flags.
# shellcheck disable=SC2086
exec tritonserver --model-control-mode=explicit --exit-timeout-secs=10 "$@" ${MILS_TRITON_ARGS:-}
