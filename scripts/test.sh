#!/usr/bin/env bash
# Installs (scripts/install.sh), checks the package layering (tools/check_layering.py) and runs
# the test suite on JAX, TensorFlow and PyTorch.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k parity).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
# No module may import one from a higher layer (the order is in the script).
.venv/bin/python tools/check_layering.py || exit 1
status=0
for backend in jax tensorflow torch; do
  echo "=== KERAS_BACKEND=${backend} ==="
  KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q "$@"
  code=$?
  # pytest exit code 5 = no tests collected: a failure for us.
  if [ "${code}" -ne 0 ]; then
    echo "pytest failed on ${backend} (exit ${code})"
    status=1
  fi
done
exit "${status}"
