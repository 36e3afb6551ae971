#!/usr/bin/env bash
# Installs (scripts/install.sh), checks the package layering (tools/check_layering.py) and runs
# the test suite on JAX, TensorFlow and PyTorch.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k parity).
#
# The three backends run at once, each in its own pytest process: most of the suite's time
# is single-threaded compilation, so on a 2-core machine running them side by side takes
# about as long as the slowest one alone. JAX's suite, the longest (about 30 minutes of one
# core, nearly all of it XLA compiling on one thread), runs as two processes when no extra
# arguments are given: the top-level test files, and the folders that mirror the package.
# Each backend then runs its tests marked `serial` (multi-device steps in a child process)
# on its own, in the same slot, so that they overlap the other backends' suites instead of
# adding to the total. Each report is printed when its process ends.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
# No module may import one from a higher layer (the order is in the script).
.venv/bin/python tools/check_layering.py || exit 1
# Each pytest process computes on a third of the cores (at least one thread):
# OpenMP (PyTorch) and TensorFlow's thread pools spin while they wait for their
# other threads, so with three suites on 2 cores those spins took the cores from
# the suites doing work. On 2 cores, three test files per backend side by side
# (the fit tests): 250 s -> 170 s, CPU time 439 s -> 288 s (PyTorch 148 s -> 48 s).
# The serial tests keep the defaults: their devices' collectives wait on each other.
threads=$(( $(nproc) / 3 ))
threads=$(( threads > 0 ? threads : 1 ))
logs="$(mktemp -d)"
trap 'rm -rf "${logs}"' EXIT
# run_suite NAME BACKEND SERIAL [pytest arguments]: the backend's tests (then, if SERIAL
# is "serial", its serial tests), reported in ${logs}/NAME.log.
run_suite() {
  local name="$1" backend="$2" serial_too="$3"
  shift 3
  OMP_NUM_THREADS="${threads}" TF_NUM_INTRAOP_THREADS="${threads}" TF_NUM_INTEROP_THREADS="${threads}" \
    KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=40 \
    --basetemp "${logs}/${name}-tmp" -m "not serial" "$@" > "${logs}/${name}.log" 2>&1
  local code=$?
  if [ "${code}" -ne 0 ]; then
    echo "pytest failed on ${name} (exit ${code})" >> "${logs}/${name}.log"
  fi
  if [ "${serial_too}" != serial ]; then
    return "$(( code != 0 ))"
  fi
  echo "--- KERAS_BACKEND=${backend}, serial tests ---" >> "${logs}/${name}.log"
  KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 \
    --basetemp "${logs}/${name}-serial-tmp" -m serial "$@" >> "${logs}/${name}.log" 2>&1
  local serial=$?
  # pytest exit code 5 = no tests collected: a failure for the main run; for the serial
  # run it means the extra arguments selected no serial test, which is fine.
  if [ "${serial}" -ne 0 ] && [ "${serial}" -ne 5 ]; then
    echo "pytest failed on ${name}, serial tests (exit ${serial})" >> "${logs}/${name}.log"
    return 1
  fi
  return "$(( code != 0 ))"
}
declare -A name_of
start_suite() {
  run_suite "$@" &
  name_of[$!]="$1"
}
if [ "$#" -eq 0 ]; then
  mapfile -t folders < <(find tests -mindepth 1 -maxdepth 1 -type d ! -name __pycache__ | sort)
  start_suite jax-files jax serial tests/test_*.py
  start_suite jax-folders jax no "${folders[@]}"
else
  start_suite jax jax serial "$@"
fi
start_suite tensorflow tensorflow serial "$@"
start_suite torch torch serial "$@"
status=0
for _ in "${!name_of[@]}"; do
  wait -n -p pid
  code=$?
  name="${name_of[${pid}]}"
  echo "=== ${name} ==="
  cat "${logs}/${name}.log"
  if [ "${code}" -ne 0 ]; then
    status=1
  fi
done
exit "${status}"
