#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz for N seconds each (default 60), one after the other,
# starting from its committed corpus. Needs clang-14 and its libFuzzer runtime (Debian: clang-14
# and libclang-rt-14-dev or libfuzzer-14-dev). Crashes, leaks and timeouts are saved to
# tests/fuzz/crashes/<target>/; new interesting inputs go to build-fuzz/corpus/<target>/ (the
# committed corpus is only read: add a finding to tests/fuzz/corpus/<target>/ by hand, so the
# replay test of scripts/test.sh covers it from then on).
#   scripts/fuzz.sh [seconds] [target...]     targets: json_value broadcast_reader daemon_receive page_receive
#   JOBS=N   build parallelism (default: nproc)
#   NICE=N   nice level of the fuzzers (default 19: fuzzing is a background job)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(json_value broadcast_reader daemon_receive page_receive)
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
NICE="${NICE:-19}"
BUILD=build-fuzz

command -v clang++-14 >/dev/null || { echo "fuzz.sh: clang++-14 not found (apt-get install clang-14)" >&2; exit 1; }

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 \
  -DCMAKE_CXX_COMPILER=clang++-14 -DSWIPC_FUZZ=ON -DSWIPC_BUILD_TESTS=OFF -DSWIPC_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]/#/fuzz_}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export SWIPC_RUNTIME_DIR="$(mktemp -d "${TMPDIR:-/tmp}/swipc-fuzz.XXXXXX")"
trap 'rm -rf "$SWIPC_RUNTIME_DIR"' EXIT

status=0
for t in "${TARGETS[@]}"; do
  work="$BUILD/corpus/$t"
  crashes="tests/fuzz/crashes/$t"
  mkdir -p "$work" "$crashes"
  printf '\n=== %s: %ss ===\n' "$t" "$SECONDS_EACH"
  # -max_len: the largest seeds are ring regions and multi-record inputs of a few KiB.
  if ! nice -n "$NICE" "$BUILD/tests/fuzz/fuzz_$t" "$work" "tests/fuzz/corpus/$t" \
      -max_total_time="$SECONDS_EACH" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$crashes/" -print_final_stats=1; then
    echo "fuzz.sh: $t found a crash: see $crashes/" >&2
    status=1
  fi
done
exit $status
