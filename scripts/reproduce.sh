#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: every method on the source
# document's protocol with the embedded MNIST images. Extra arguments go to
# `mnist-ssl reproduce` (e.g. --seeds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mnist-ssl reproduce "$@"
