#!/bin/sh
# Sets up (scripts/setup.sh), builds and runs the whole test suite through
# CTest, each test once, with the checks CI adds on top:
#   1. clang-format 14 over daemon/, tests/ and fuzz/ (--dry-run --Werror);
#   2. clang-tidy 14 (.clang-tidy) over the core library;
#   3. build-asan: clang with AddressSanitizer and UndefinedBehaviorSanitizer
#      (undefined behaviour is fatal, leaks are errors) and the fuzzers;
#   4. each libFuzzer target of build-asan for RRD_FUZZ_SECONDS (30) over its
#      seed corpus in fuzz/corpus/;
#   5. the CTest suite, in one run whose summary ends the output: the unit
#      and integration tests of build-asan, under the sanitizers, and the
#      deployment, SDK and browser tests of ./build (g++, the build that is
#      installed and shipped), which check the packaging and other programs
#      against ours. ./build is configured without the test programs
#      (-DRRD_TEST_PROGRAMS=OFF): building and running them a second time,
#      without the sanitizers, added about 280 s to a run of 1,400 for what
#      the sanitized run checks already; g++ still compiles all of the core
#      and the fakes with -Werror. (cmake -B build -DRRD_TEST_PROGRAMS=ON
#      brings them back there.)
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

RRD_WITH_TEST_TOOLS=1 RRD_CMAKE_ARGS="-DRRD_WERROR=ON -DRRD_TEST_PROGRAMS=OFF ${RRD_CMAKE_ARGS:-}" \
  scripts/setup.sh

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
configure_clang build-asan -DRRD_SANITIZE=address,undefined -DRRD_FUZZ=ON -DRRD_TOOL_TESTS=OFF

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

build_dir=${RRD_BUILD_DIR:-build}
step "test suite: build-asan (unit and integration, under the sanitizers) and $build_dir (deployment, SDK, browser)"
# One CTest run over both build directories (CTest's subdirs()), so that its
# summary counts the whole suite.
mkdir -p build-suite
printf 'subdirs("%s" "%s")\n' "$PWD/build-asan" "$(cd "$build_dir" && pwd)" >build-suite/CTestTestfile.cmake
ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --test-dir build-suite --output-on-failure -j2 --timeout 600
