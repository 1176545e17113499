#!/usr/bin/env bash
# Create .venv and install mnist-ssl into it (with the test extra).
# torch==2.13.0 is installed first: on the project's CPU machines that wheel lies
# on disk (a CPU build, fast); elsewhere pip fetches the standard build for your
# platform (CUDA on Linux). Any torch >= 2.1 works: set TORCH_SPEC to change it,
# e.g. TORCH_SPEC="torch" to keep whatever is newest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
