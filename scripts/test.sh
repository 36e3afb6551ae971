#!/usr/bin/env bash
# Installs (scripts/install.sh), checks the package layering (tools/check_layering.py) and runs
# the test suite on JAX, TensorFlow and PyTorch.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k parity).
#
# The three backends run at once, each in its own pytest process: most of the suite's time
# is single-threaded compilation, so on a 2-core machine running them side by side takes
# about as long as the slowest one alone. The tests marked `serial` (multi-device steps in
# a child process) then run one backend at a time in PyTorch's slot, after its suite, the
# shortest: so they overlap JAX's suite, the longest, instead of adding to its slot. Each
# slot's report is printed when it ends.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
# No module may import one from a higher layer (the order is in the script).
.venv/bin/python tools/check_layering.py || exit 1
# Each backend's suite computes on a third of the cores (at least one thread):
# OpenMP (PyTorch) and TensorFlow's thread pools spin while they wait for their
# other threads, so with three suites on 2 cores those spins took the cores from
# the suites doing work. On 2 cores, three test files per backend side by side
# (the fit tests): 250 s -> 170 s, CPU time 439 s -> 288 s (PyTorch 148 s -> 48 s).
# The serial tests keep the defaults: their devices' collectives wait on each other.
threads=$(( $(nproc) / 3 ))
threads=$(( threads > 0 ? threads : 1 ))
logs="$(mktemp -d)"
trap 'rm -rf "${logs}"' EXIT
# run_tests BACKEND KIND LOG [pytest arguments]: KIND "main" runs the tests not marked
# serial, "serial" the others.
run_tests() {
  local backend="$1" kind="$2" log="$3"
  shift 3
  local code
  if [ "${kind}" = main ]; then
    OMP_NUM_THREADS="${threads}" TF_NUM_INTRAOP_THREADS="${threads}" TF_NUM_INTEROP_THREADS="${threads}" \
      KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=40 \
      --basetemp "${logs}/${backend}-tmp" -m "not serial" "$@" >> "${log}" 2>&1
    code=$?
  else
    echo "--- KERAS_BACKEND=${backend}, serial tests ---" >> "${log}"
    KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 \
      --basetemp "${logs}/${backend}-serial-tmp" -m serial "$@" >> "${log}" 2>&1
    code=$?
    # pytest exit code 5 = no tests collected: the extra arguments selected no
    # serial test, which is fine (for the main run it is a failure).
    [ "${code}" -eq 5 ] && code=0
  fi
  if [ "${code}" -ne 0 ]; then
    echo "pytest failed on ${backend}, ${kind} tests (exit ${code})" >> "${log}"
    return 1
  fi
}
torch_then_serial() {
  local failed=0
  run_tests torch main "${logs}/torch.log" "$@" || failed=1
  for backend in jax tensorflow torch; do
    run_tests "${backend}" serial "${logs}/torch.log" "$@" || failed=1
  done
  return "${failed}"
}
declare -A slot_of
run_tests jax main "${logs}/jax.log" "$@" &
slot_of[$!]=jax
run_tests tensorflow main "${logs}/tensorflow.log" "$@" &
slot_of[$!]=tensorflow
torch_then_serial "$@" &
slot_of[$!]=torch
status=0
for _ in jax tensorflow torch; do
  wait -n -p pid
  code=$?
  slot="${slot_of[${pid}]}"
  if [ "${slot}" = torch ]; then
    echo "=== KERAS_BACKEND=torch, then every backend's serial tests ==="
  else
    echo "=== KERAS_BACKEND=${slot} ==="
  fi
  cat "${logs}/${slot}.log"
  if [ "${code}" -ne 0 ]; then
    status=1
  fi
done
exit "${status}"
