#!/bin/sh
# Sets up (scripts/setup.sh), builds and runs the whole test suite through
# CTest, with the checks CI adds on top:
#   1. clang-format 14 over daemon/, tests/ and fuzz/ (--dry-run --Werror);
#   2. clang-tidy 14 (.clang-tidy) over the core library;
#   3. build-asan: clang with AddressSanitizer and UndefinedBehaviorSanitizer
#      (undefined behaviour is fatal, leaks are errors), the unit and
#      integration tests there (the deployment, SDK and browser tests check
#      the packaging and other programs against ours: they run once, in 5);
#   4. each libFuzzer target of build-asan for RRD_FUZZ_SECONDS (30) over its
#      seed corpus in fuzz/corpus/;
#   5. the CTest suite of ./build (g++), whose summary ends the output.
#
# scripts/test.sh --tsan instead builds build-tsan (clang, ThreadSanitizer,
# suppressions in tests/tsan.supp) and runs the CTest suite there.
set -eu
cd "$(dirname "$0")/.."

mode=all
case "${1:-}" in
"") ;;
--tsan) mode=tsan ;;
*)
  echo "usage: scripts/test.sh [--tsan]" >&2
  exit 2
  ;;
esac

started=$(date +%s)
# Each step says when it starts, in seconds since this script did.
step() { printf '\n==> %s (at %ss)\n' "$*" "$(($(date +%s) - started))"; }

RRD_WITH_TEST_TOOLS=1 RRD_CMAKE_ARGS="-DRRD_WERROR=ON ${RRD_CMAKE_ARGS:-}" scripts/setup.sh

configure_clang() { # build dir, then extra CMake arguments
  dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DRRD_WERROR=ON "$@" >/dev/null
}

if [ "$mode" = tsan ]; then
  step "ThreadSanitizer build (build-tsan)"
  configure_clang build-tsan -DRRD_SANITIZE=thread
  cmake --build build-tsan
  step "test suite under ThreadSanitizer"
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" \
    ctest --test-dir build-tsan --output-on-failure -j2 --timeout 600
  exit 0
fi

step "format (clang-format 14)"
find daemon tests fuzz -name node_modules -prune -o \( -name '*.cpp' -o -name '*.hpp' \) -print |
  sort | xargs clang-format-14 --dry-run --Werror
echo "formatted"

# Configured first: clang-tidy reads its compile_commands.json.
configure_clang build-asan -DRRD_SANITIZE=address,undefined -DRRD_FUZZ=ON

step "clang-tidy over the core library"
tidy_log=build-asan/clang-tidy.log
if find daemon/src/readreceiptd -name '*.cpp' | sort |
  xargs -P2 -n1 clang-tidy-14 -p build-asan --quiet >"$tidy_log" 2>&1; then
  echo "no findings"
else
  grep -v ' warnings generated\.$' "$tidy_log" >&2
  exit 1
fi

step "AddressSanitizer + UndefinedBehaviorSanitizer build with the fuzzers (build-asan)"
cmake --build build-asan

step "test suite under AddressSanitizer + UndefinedBehaviorSanitizer"
ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --test-dir build-asan --output-on-failure -j2 --timeout 600 -E '^(deploy|sdk|browser):'

seconds=${RRD_FUZZ_SECONDS:-30}
step "fuzzers, ${seconds} s each"
pids=""
for fuzzer in build-asan/*_fuzz; do
  name=$(basename "$fuzzer" _fuzz)
  mkdir -p "build-asan/fuzz/$name"
  # New inputs go to build-asan/fuzz/<name>, never into the seed corpus.
  "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="build-asan/fuzz/$name-" "build-asan/fuzz/$name" "fuzz/corpus/$name" \
    >"build-asan/fuzz/$name.log" 2>&1 &
  pids="$pids $!:$name"
done
failed=0
for entry in $pids; do
  name=${entry#*:}
  if wait "${entry%%:*}"; then
    echo "$name: $(grep -E '^#[0-9]+.*DONE' "build-asan/fuzz/$name.log" | tail -n 1)"
  else
    echo "$name: FAILED; the input is in build-asan/fuzz/$name-*" >&2
    tail -n 60 "build-asan/fuzz/$name.log" >&2
    failed=1
  fi
done
[ "$failed" = 0 ]

step "test suite (${RRD_BUILD_DIR:-build})"
ctest --test-dir "${RRD_BUILD_DIR:-build}" --output-on-failure -j2 --timeout 600
