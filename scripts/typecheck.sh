#!/usr/bin/env bash
# Strict mypy over the installed layout: the wheel's `mils` package (mils.engine,
# mils.adapters, mils.tasks) and the benchmarks. The source tree maps the top-level
# engine/, adapters/ and tasks/ folders into `mils` at install time, which mypy cannot
# follow from the folders themselves; so check what a user installs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=build/typecheck
rm -rf "$out"
mkdir -p "$out"
.venv/bin/python -m pip wheel --quiet --no-deps --disable-pip-version-check -w "$out/dist" . 2>/dev/null
.venv/bin/python -m zipfile -e "$out"/dist/mils-*.whl "$out/src"
cp -r benchmarks examples "$out/src/"
cd "$out/src"
exec ../../../.venv/bin/mypy --config-file ../../../pyproject.toml mils benchmarks examples "$@"
