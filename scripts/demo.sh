#!/usr/bin/env bash
# Installs (scripts/install.sh) and runs a short prediction on a sample image.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
KERAS_BACKEND="${KERAS_BACKEND:-torch}" .venv/bin/python -m keras_maxdeeplab.demo "$@"
