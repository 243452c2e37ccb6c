#!/bin/sh
# No Docker engine runs the tests, so this checks the Dockerfile by reading it:
# - the build stage runs scripts/setup.sh itself (no apt-get list of its own),
#   so the image is built with the packages and steps the tests ran with;
# - the runtime stage installs the runtime side of every package setup.sh
#   builds against (the table below: a -dev package setup.sh gains without
#   an entry here fails, until both are updated);
# - every shared library the built binary needs (ELF NEEDED) comes from a
#   runtime-stage package or from the base image (dpkg -S; skipped without
#   dpkg or readelf);
# - the structure the README describes: two stages on debian:bookworm-slim, a
#   numeric non-root USER, the state VOLUME, exec-form ENTRYPOINT, CMD and
#   HEALTHCHECK (--healthcheck), STOPSIGNAL SIGTERM, the two ports;
# - .dockerignore keeps build trees and node_modules out of the context.
# Usage: check_dockerfile.sh SOURCE_DIR [BINARY]
set -eu
src=$1 binary=${2:-}
dockerfile=$src/Dockerfile
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# setup.sh package -> the packages the runtime stage needs for it ("-": none,
# a build or test tool, or header-only).
runtime_of() {
  case $1 in
    build-essential | cmake | ninja-build | pkg-config | git | curl | sqlite3) echo - ;;
    postgresql-15) echo - ;; # the tests' throwaway server
    nlohmann-json3-dev | doctest-dev) echo - ;;
    ca-certificates) echo ca-certificates ;;
    libcurl4-openssl-dev) echo libcurl4 ;;
    libyaml-cpp-dev) echo libyaml-cpp0.7 ;;
    libspdlog-dev) echo libspdlog1.10 libfmt9 ;;
    prometheus-cpp-dev) echo libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 ;;
    libsqlite3-dev) echo libsqlite3-0 ;;
    libsystemd-dev) echo libsystemd0 ;;
    libcpp-httplib-dev) echo libcpp-httplib0.11 ;;
    libssl-dev) echo libssl3 ;;
    libwslay-dev) echo libwslay1 ;;
    libpq-dev) echo libpq5 ;;
    *) echo "?" ;;
  esac
}
# Packages of debian:bookworm-slim that the binary may link without listing.
base_packages="libc6 libstdc++6 libgcc-s1 zlib1g"

# The Dockerfile as "STAGE<TAB>INSTRUCTION<TAB>ARGUMENTS" lines: comments
# dropped, continuation lines joined, stages numbered from 1 at each FROM.
instructions=$(awk '
  /^[ \t]*#/ { next }
  {
    line = $0
    sub(/[ \t]+$/, "", line)
    if (line ~ /\\$/) { sub(/\\$/, "", line); pending = pending line " "; next }
    line = pending line; pending = ""
    sub(/^[ \t]+/, "", line)
    if (line == "") next
    instruction = toupper(line); sub(/[ \t].*/, "", instruction)
    rest = line; sub(/^[^ \t]+[ \t]*/, "", rest)
    if (instruction == "FROM") stage++
    printf "%d\t%s\t%s\n", stage, instruction, rest
  }' "$dockerfile")
stages=$(printf '%s\n' "$instructions" | awk -F '\t' '$2 == "FROM"' | wc -l)
last=$stages
stage_lines() { printf '%s\n' "$instructions" | awk -F '\t' -v s="$1" -v i="$2" '$1 == s && $2 == i { print $3 }'; }

# Stages.
[ "$stages" = 2 ] || fail "want 2 stages (build and runtime), found $stages"
for s in $(seq 1 "$stages"); do
  image=$(stage_lines "$s" FROM | awk '{ print $1 }')
  [ "$image" = "debian:bookworm-slim" ] || fail "stage $s is FROM $image, want debian:bookworm-slim"
done

# Build stage: setup.sh, cmake --install, no packages of its own.
build_run=$(stage_lines 1 RUN)
printf '%s\n' "$build_run" | grep -q 'scripts/setup\.sh' || fail "the build stage does not run scripts/setup.sh"
printf '%s\n' "$build_run" | grep -q 'RRD_WITH_TEST_TOOLS=1' && fail "the build stage installs the test tools"
printf '%s\n' "$build_run" | grep -q 'apt-get' &&
  fail "the build stage runs apt-get itself; scripts/setup.sh installs what the build needs"
printf '%s\n' "$build_run" | grep -q 'cmake --install build --prefix /usr' ||
  fail "the build stage does not run cmake --install build --prefix /usr"

# Runtime stage packages: every word after "apt-get install" up to the end of
# that command.
runtime_packages=$(stage_lines "$last" RUN | awk '{
  for (i = 1; i <= NF; i++) {
    if ($i == "install" && i > 1 && $(i - 1) == "apt-get") { on = 1; continue }
    if ($i == "&&" || $i == ";" || $i == "||") on = 0
    else if (on && $i !~ /^-/) print $i
  }
}' | sort -u)
[ -n "$runtime_packages" ] || fail "the runtime stage installs no packages"
has_runtime() { printf '%s\n' "$runtime_packages" | grep -qx "$1"; }

# setup.sh's packages (the base list, not the test tools).
setup_packages=$(awk '
  /^packages="/ { on = 1 }
  on { line = $0; gsub(/packages="|\\|"/, " ", line); printf "%s ", line; if ($0 ~ /"[ \t]*$/) exit }
' "$src/scripts/setup.sh")
[ -n "$setup_packages" ] || fail "cannot read the package list of scripts/setup.sh"
for p in $setup_packages; do
  needs=$(runtime_of "$p")
  if [ "$needs" = "?" ]; then
    fail "scripts/setup.sh installs $p, which tests/deploy/check_dockerfile.sh does not know:" \
      "add its runtime package to the Dockerfile's runtime stage and to runtime_of()"
    continue
  fi
  for r in $needs; do
    [ "$r" = - ] || has_runtime "$r" || fail "setup.sh builds against $p; the runtime stage lacks $r"
  done
done

# The binary's own libraries come from those packages.
if [ -n "$binary" ] && command -v dpkg >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1 &&
  command -v ldd >/dev/null 2>&1; then
  for so in $(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(ldd "$binary" | awk -v so="$so" '$1 == so && $2 == "=>" { print $3 }')
    if [ -z "$path" ]; then
      fail "ldd does not resolve $so"
      continue
    fi
    # dpkg knows a file by one of its merged-/usr names.
    package=""
    for candidate in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
      package=$(dpkg -S "$candidate" 2>/dev/null | head -n 1 | sed 's/:.*//') && [ -n "$package" ] && break
    done
    if [ -z "$package" ]; then
      fail "no Debian package owns $path ($so)"
    elif ! has_runtime "$package" && ! echo " $base_packages " | grep -q " $package "; then
      fail "$binary needs $so from $package, which the runtime stage does not install"
    else
      echo "ok: $so <- $package"
    fi
  done
else
  echo "note: library check skipped (no binary given, or dpkg, readelf or ldd missing)"
fi

# Runtime stage structure.
user=$(stage_lines "$last" USER | tail -n 1)
uid=${user%%:*}
case $uid in
  '' | *[!0-9]*) fail "USER '$user' is not a numeric uid" ;;
  0) fail "USER is root" ;;
esac
stage_lines "$last" VOLUME | grep -Eq '^(\["?)?/var/lib/readreceiptd"?\]?$' ||
  fail "no VOLUME /var/lib/readreceiptd"
stage_lines "$last" ENTRYPOINT | grep -Eq '^\["/usr/bin/readreceiptd"\]$' ||
  fail 'ENTRYPOINT is not ["/usr/bin/readreceiptd"] (exec form)'
stage_lines "$last" CMD | grep -Eq '^\[.*"--config", "/etc/readreceiptd/config.yaml".*\]$' ||
  fail "CMD is not an exec form passing --config /etc/readreceiptd/config.yaml"
stage_lines "$last" HEALTHCHECK |
  grep -Eq 'CMD \["/usr/bin/readreceiptd", "--healthcheck"(, [^]]*)?\]$' ||
  fail "HEALTHCHECK is not an exec-form CMD running readreceiptd --healthcheck"
[ "$(stage_lines "$last" STOPSIGNAL)" = SIGTERM ] || fail "STOPSIGNAL is not SIGTERM"
for port in 9464 9465; do
  stage_lines "$last" EXPOSE | tr ' ' '\n' | grep -qx "$port" || fail "port $port is not exposed"
done
stage_lines "$last" COPY | grep -q -- '--from=build .*/usr/bin/readreceiptd /usr/bin/readreceiptd' ||
  fail "the runtime stage does not copy the built binary to /usr/bin/readreceiptd"

# The build context.
ignore=$src/.dockerignore
if [ -f "$ignore" ]; then
  grep -Eq '^/?build\*?/?$' "$ignore" || fail ".dockerignore does not exclude the build trees"
  grep -Eq 'node_modules' "$ignore" || fail ".dockerignore does not exclude node_modules"
else
  fail "no .dockerignore"
fi

[ "$failures" = 0 ] || exit 1
echo "ok: Dockerfile (runtime packages for:$(printf ' %s' $setup_packages))"
