#!/usr/bin/env bash
# Creates .venv and installs keras-maxdeeplab with all three backends and test tools.
# torch is pinned to 2.13.0: the CPU build this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[jax,dev]"
