#!/bin/sh
# Installs what readreceiptd needs to build, test and run its demo on Debian 12
# (as root), then configures and builds it in ./build. postgresql-15 is for
# the tests: they start a throwaway server of their own
# (tests/postgres/throwaway.sh), never the one the package sets up. The Dockerfile runs the
# same script, so what is tested here is what the image builds.
set -eu
cd "$(dirname "$0")/.."

packages="build-essential cmake ninja-build pkg-config git ca-certificates curl \
  libcurl4-openssl-dev nlohmann-json3-dev libyaml-cpp-dev libspdlog-dev \
  prometheus-cpp-dev doctest-dev libsqlite3-dev libsystemd-dev \
  libcpp-httplib-dev libssl-dev libwslay-dev sqlite3 libpq-dev postgresql-15"
if [ "${RRD_WITH_TEST_TOOLS:-0}" = 1 ]; then
  # Test tools: clang (sanitizers, fuzzers), clang-format and clang-tidy,
  # systemd-analyze and python3-seccomp (the unit's checks and its sandbox),
  # promtool from prometheus (the alerting rules' checks), libfaketime from
  # faketime (a month that turns, for the budget's test), Node.js for the
  # official SDK's compatibility test and the status page's browser test,
  # Chromium (headless, for that browser test) with a font to draw its text.
  # A Node.js that is already there (from any source) is used as it is.
  packages="$packages clang libclang-rt-14-dev clang-format-14 clang-tidy-14 systemd python3-seccomp prometheus faketime chromium fonts-dejavu-core"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    packages="$packages nodejs npm"
  fi
fi

missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
  # Only promtool is wanted from prometheus: a machine running systemd would
  # also have started the Prometheus server the package installs.
  case " $missing " in
    *" prometheus "*)
      if [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
      fi ;;
  esac
  # Likewise the PostgreSQL server that postgresql-15 starts: only its
  # programs (initdb, pg_ctl) are wanted.
  case " $missing " in
    *" postgresql-15 "*)
      if [ -d /run/systemd/system ]; then
        systemctl disable --now postgresql.service >/dev/null 2>&1 || true
      fi ;;
  esac
fi

build_dir="${RRD_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${RRD_BUILD_TYPE:-RelWithDebInfo}" \
  ${RRD_CMAKE_ARGS:-}
cmake --build "$build_dir"
