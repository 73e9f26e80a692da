#!/usr/bin/env bash
# Install everything, then caption the bundled sample images on the offline local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mils demo "$@"
