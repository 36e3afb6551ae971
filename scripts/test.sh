#!/usr/bin/env bash
# Installs (scripts/install.sh), checks the package layering (tools/check_layering.py) and runs
# the test suite on JAX, TensorFlow and PyTorch.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k parity).
#
# The three backends run at once, each in its own pytest process: most of the suite's time
# is single-threaded compilation, so on a 2-core machine running them side by side takes
# about as long as the slowest one alone. Each backend then runs its tests marked `serial`
# (multi-device steps in a child process) on its own, in the same slot, so that they
# overlap the other backends' suites instead of adding to the total; a few of JAX's files
# run in PyTorch's slot after it (below). Each slot's report is printed when it ends.
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
# JAX's suite is the longest (its compilations), so on the full suite the files in
# jax_tail run in PyTorch's slot once PyTorch's suite and serial tests end: the three
# slots then end close together instead of JAX running alone for the last minutes.
# With extra arguments (paths, -k, ...) each backend runs in one process.
jax_tail=(tests/test_cli.py tests/test_guides.py tests/test_readme.py)
if [ "$#" -gt 0 ]; then
  jax_tail=()
fi
jax_ignores=()
for path in "${jax_tail[@]}"; do
  jax_ignores+=("--ignore=${path}")
done
# run_suite BACKEND LOG ARGS...: the tests not marked `serial`, reported in LOG.log.
run_suite() {
  local backend="$1" log="$2"
  shift 2
  OMP_NUM_THREADS="${threads}" TF_NUM_INTRAOP_THREADS="${threads}" TF_NUM_INTEROP_THREADS="${threads}" \
    KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=40 \
    --basetemp "${logs}/${log}-tmp" -m "not serial" "$@" > "${logs}/${log}.log" 2>&1
  local code=$?
  if [ "${code}" -ne 0 ]; then
    echo "pytest failed on ${backend} (exit ${code})" >> "${logs}/${log}.log"
    return 1
  fi
}
# run_serial BACKEND LOG ARGS...: the tests marked `serial`, appended to LOG.log.
run_serial() {
  local backend="$1" log="$2"
  shift 2
  echo "--- KERAS_BACKEND=${backend}, serial tests ---" >> "${logs}/${log}.log"
  KERAS_BACKEND="${backend}" .venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 \
    --basetemp "${logs}/${log}-serial-tmp" -m serial "$@" >> "${logs}/${log}.log" 2>&1
  local serial=$?
  # pytest exit code 5 = no tests collected: the extra arguments selected no serial
  # test, which is fine.
  if [ "${serial}" -ne 0 ] && [ "${serial}" -ne 5 ]; then
    echo "pytest failed on ${backend}, serial tests (exit ${serial})" >> "${logs}/${log}.log"
    return 1
  fi
}
# run_slot BACKEND ARGS...: the backend's suite, then its serial tests (both run, so
# that a failure in one still reports the other).
run_slot() {
  local backend="$1"
  shift
  local status=0
  if [ "${backend}" = jax ]; then
    run_suite jax jax "${jax_ignores[@]}" "$@" || status=1
  else
    run_suite "${backend}" "${backend}" "$@" || status=1
  fi
  run_serial "${backend}" "${backend}" "$@" || status=1
  if [ "${backend}" = torch ] && [ "${#jax_tail[@]}" -gt 0 ]; then
    echo "--- KERAS_BACKEND=jax, ${jax_tail[*]} (in this slot) ---" >> "${logs}/torch.log"
    run_suite jax jax-tail "${jax_tail[@]}" || status=1
    cat "${logs}/jax-tail.log" >> "${logs}/torch.log"
  fi
  return "${status}"
}
declare -A backend_of
for backend in jax tensorflow torch; do
  run_slot "${backend}" "$@" &
  backend_of[$!]="${backend}"
done
status=0
for _ in jax tensorflow torch; do
  wait -n -p pid
  code=$?
  backend="${backend_of[${pid}]}"
  echo "=== KERAS_BACKEND=${backend} ==="
  cat "${logs}/${backend}.log"
  if [ "${code}" -ne 0 ]; then
    status=1
  fi
done
exit "${status}"
