#!/bin/sh
# Sets up (scripts/setup.sh), builds and runs the whole test suite through CTest.
set -eu
cd "$(dirname "$0")/.."
RRD_WITH_TEST_TOOLS=1 RRD_CMAKE_ARGS="-DRRD_WERROR=ON ${RRD_CMAKE_ARGS:-}" scripts/setup.sh
ctest --test-dir "${RRD_BUILD_DIR:-build}" --output-on-failure -j2 --timeout 600
