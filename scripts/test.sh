#!/usr/bin/env bash
# Installs (scripts/install.sh), checks the package layering (tools/check_layering.py) and runs
# the test suite on JAX, TensorFlow and PyTorch.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k parity).
#
# The three backends run at once, JAX's and TensorFlow's suites each split over two
# pytest processes (`--shard`: every other test file), PyTorch's in one: most of the
# suite's time is single-threaded compilation, so on a 2-core machine the run is bound
# by its total work, and five processes of about equal work (550-680 CPU-seconds each
# here) end together instead of leaving JAX's suite, the longest, alone on one core at
# the end. Each backend then runs its tests marked `serial` (multi-device steps in a
# child process) after its first shard, so that they overlap the other suites instead
# of adding to the total. Each process's report is printed when it ends.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
# No module may import one from a higher layer (the order is in the script).
.venv/bin/python tools/check_layering.py || exit 1
# Each suite process computes on a fifth of the cores (at least one thread):
# OpenMP (PyTorch) and TensorFlow's thread pools spin while they wait for their
# other threads, so with more suites than cores those spins took the cores from
# the suites doing work. On 2 cores, three test files per backend side by side
# (the fit tests): 250 s -> 170 s, CPU time 439 s -> 288 s (PyTorch 148 s -> 48 s).
# The serial tests keep the defaults: their devices' collectives wait on each other.
threads=$(( $(nproc) / 5 ))
threads=$(( threads > 0 ? threads : 1 ))
logs="$(mktemp -d)"
trap 'rm -rf "${logs}"' EXIT
run_suite() {
  local backend="$1" shard="$2"
  shift 2
  local name="${backend}-${shard/\//-of-}"
  OMP_NUM_THREADS="${threads}" TF_NUM_INTRAOP_THREADS="${threads}" TF_NUM_INTEROP_THREADS="${threads}" \
    KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=40 \
    --basetemp "${logs}/${name}-tmp" -m "not serial" --shard "${shard}" "$@" > "${logs}/${name}.log" 2>&1
  local code=$?
  # pytest exit code 5 = no tests collected: the extra arguments selected none of
  # this shard's files (a failure only if no shard of the backend ran a test).
  if [ "${code}" -ne 0 ] && [ "${code}" -ne 5 ]; then
    echo "pytest failed on ${backend}, shard ${shard} (exit ${code})" >> "${logs}/${name}.log"
    return 1
  fi
  echo "${code}" > "${logs}/${name}.code"
  if [ "${shard%%/*}" != 0 ]; then
    return 0
  fi
  echo "--- KERAS_BACKEND=${backend}, serial tests ---" >> "${logs}/${name}.log"
  KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 \
    --basetemp "${logs}/${backend}-serial-tmp" -m serial "$@" >> "${logs}/${name}.log" 2>&1
  local serial=$?
  # Exit code 5 here: the extra arguments selected no serial test, which is fine.
  if [ "${serial}" -ne 0 ] && [ "${serial}" -ne 5 ]; then
    echo "pytest failed on ${backend}, serial tests (exit ${serial})" >> "${logs}/${name}.log"
    return 1
  fi
}
declare -A name_of
for suite in jax:0/2 jax:1/2 tensorflow:0/2 tensorflow:1/2 torch:0/1; do
  run_suite "${suite%%:*}" "${suite#*:}" "$@" &
  name_of[$!]="${suite}"
done
status=0
for _ in "${!name_of[@]}"; do
  wait -n -p pid
  code=$?
  suite="${name_of[${pid}]}"
  backend="${suite%%:*}"
  shard="${suite#*:}"
  echo "=== KERAS_BACKEND=${backend}, shard ${shard} ==="
  cat "${logs}/${backend}-${shard/\//-of-}.log"
  if [ "${code}" -ne 0 ]; then
    status=1
  fi
done
# Every backend ran tests: a shard that collected none is fine, a backend with none is not.
for backend in jax tensorflow torch; do
  if ! grep -qx 0 "${logs}/${backend}"-*.code 2>/dev/null; then
    echo "pytest collected no test on ${backend}"
    status=1
  fi
done
exit "${status}"
