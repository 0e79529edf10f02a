#!/usr/bin/env bash
# test.sh - install what the tests need, build with warnings as errors, and run the whole
# suite twice: a normal build, then under AddressSanitizer + UndefinedBehaviorSanitizer.
# Usage: scripts/test.sh [--quick]   (--quick: skip the sanitizer pass)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

# Remote drivers whose test servers must start: a skip of these fails the run. Databases
# likewise. Azure (Azurite from npm): installing it into an empty COFFER_TEST_CACHE took 77 s
# on the 2 vCPU VM (2026-11-22, 186 MB, npm's own cache warm), starting it 2.5 s; then reused.
export COFFER_REQUIRE_DRIVERS="${COFFER_REQUIRE_DRIVERS-s3 sftp azure}"
export COFFER_REQUIRE_DATABASES="${COFFER_REQUIRE_DATABASES-postgres sqlite mariadb}"

run_suite() {
  local preset=$1
  echo "== build ($preset)"
  cmake --preset "$preset" -DCOFFER_WERROR=ON >/dev/null
  cmake --build "build/$preset" -j"$jobs"
  echo "== test ($preset)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "build/$preset" --output-on-failure -j"$jobs" -LE slow
}

run_suite dev
if [ "${1:-}" != "--quick" ]; then
  run_suite asan
  # the threaded code (pipeline, parallel restore and check) under ThreadSanitizer
  echo "== build (tsan)"
  cmake --preset tsan -DCOFFER_WERROR=ON >/dev/null
  cmake --build build/tsan -j"$jobs"
  echo "== test (tsan)"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir build/tsan --output-on-failure -j"$jobs" -L unit
fi
echo "== all tests passed"
