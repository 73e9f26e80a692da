#!/usr/bin/env bash
# Install everything, then caption generated scenes (known ground truth) on the offline local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mils demo "$@"
