#!/bin/sh
# Put a real CLIP/SigLIP checkpoint into a Triton model repository, as the model pair
# ALIAS_text / ALIAS_image, with `mils models pull` (the weights under _weights/ALIAS/, the
# shipped clip_* code pinned to them).
#
#   export_models.sh [NAME_OR_FOLDER [ALIAS]]
#
# NAME_OR_FOLDER is a hub id (needs network; a gated one needs a token, read by
# huggingface_hub from HF_TOKEN or the file HF_TOKEN_PATH) or a checkpoint folder;
# defaults: $MILS_SCORER_MODEL (openai/clip-vit-base-patch32), $MILS_SCORER_ALIAS (clip).
# The repository is $MILS_MODEL_REPOSITORY (/models). A pair already installed from the same
# NAME is kept (MILS_FORCE_PULL=1 pulls it again), so the compose service can run on every
# `up` without downloading twice.
#
# The pair's config.pbtxt holds the absolute path of its weights: run this where the Triton
# server sees the repository at the same path (in docker/compose.yaml both mount /models).
set -eu

name=${1:-${MILS_SCORER_MODEL:-openai/clip-vit-base-patch32}}
alias=${2:-${MILS_SCORER_ALIAS:-clip}}
into=${MILS_MODEL_REPOSITORY:-/models}

# The Triton image serves its own scene_*, motion_* and sound_* pairs: a pulled pair with the
# same names would make the server refuse both as ambiguous.
case $alias in
    scene | motion | sound)
        echo "export_models: alias '$alias' is taken by a model the Triton image ships;" \
            "choose another (MILS_SCORER_ALIAS or the second argument)" >&2
        exit 2
        ;;
esac

text_config="$into/${alias}_text/config.pbtxt"
image_config="$into/${alias}_image/config.pbtxt"
if [ "${MILS_FORCE_PULL:-0}" != 1 ] && [ -f "$text_config" ] && [ -f "$image_config" ] \
    && head -n 1 "$text_config" | grep -qF "mils models pull $name\`"; then
    echo "export_models: $name is already installed as ${alias}_text / ${alias}_image in" \
        "$into; MILS_FORCE_PULL=1 pulls it again"
    exit 0
fi
exec mils models pull "$name" --as "$alias" --into "$into"
