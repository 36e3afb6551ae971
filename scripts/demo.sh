#!/usr/bin/env bash
# Installs (scripts/install.sh) and runs `maxdeeplab demo` (offline, the embedded demo preset).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
KERAS_BACKEND="${KERAS_BACKEND:-tensorflow}" .venv/bin/maxdeeplab demo "$@"
