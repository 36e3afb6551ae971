#!/usr/bin/env bash
# Installs (scripts/install.sh), checks the package layering (tools/check_layering.py) and runs
# the test suite on JAX, TensorFlow and PyTorch.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k parity).
#
# The three backends run at once, each in its own pytest process: most of the suite's time
# is single-threaded compilation, so on a 2-core machine running them side by side takes
# about as long as the slowest one alone. Each backend's report is printed when it ends.
# Then the tests marked `serial` (multi-device steps, whose collectives time out on a
# starved CPU) run one backend at a time.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
# No module may import one from a higher layer (the order is in the script).
.venv/bin/python tools/check_layering.py || exit 1
logs="$(mktemp -d)"
trap 'rm -rf "${logs}"' EXIT
declare -A backend_of
for backend in jax tensorflow torch; do
  KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 \
    --basetemp "${logs}/${backend}-tmp" -m "not serial" "$@" \
    > "${logs}/${backend}.log" 2>&1 &
  backend_of[$!]="${backend}"
done
status=0
for _ in jax tensorflow torch; do
  wait -n -p pid
  code=$?
  backend="${backend_of[${pid}]}"
  echo "=== KERAS_BACKEND=${backend} ==="
  cat "${logs}/${backend}.log"
  # pytest exit code 5 = no tests collected: a failure for us.
  if [ "${code}" -ne 0 ]; then
    echo "pytest failed on ${backend} (exit ${code})"
    status=1
  fi
done
for backend in jax tensorflow torch; do
  echo "=== KERAS_BACKEND=${backend}, serial tests ==="
  KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 \
    --basetemp "${logs}/${backend}-serial-tmp" -m serial "$@"
  code=$?
  # Exit code 5: the extra arguments selected no serial test, which is fine here.
  if [ "${code}" -ne 0 ] && [ "${code}" -ne 5 ]; then
    echo "pytest failed on ${backend}, serial tests (exit ${code})"
    status=1
  fi
done
exit "${status}"
