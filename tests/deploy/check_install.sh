#!/bin/sh
# `cmake --install` puts every file where the installed systemd unit expects
# it, for a prefix given at install time, and with DESTDIR for --prefix /usr
# (the README's install), where the unit is the one in systemd/ unchanged.
# Usage: check_install.sh SOURCE_DIR BUILD_DIR WORK_DIR
set -eu
src=$1 build=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
want_file() { [ -f "$1" ] || fail "missing file $1"; }

# The value of a unit key (the first one).
unit_value() { sed -n "s/^$2=//p" "$1" | head -n 1; }

# 1. Any prefix: --prefix at install time, not at configure time.
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; echo "FAIL: cmake --install --prefix $prefix"; exit 1; }
unit="$prefix/lib/systemd/system/readreceiptd.service"
want_file "$unit"
want_file "$prefix/share/doc/readreceiptd/prometheus-alerts.yaml"
want_file "$prefix/share/doc/readreceiptd/openapi.yaml"
want_file "$prefix/share/doc/readreceiptd/grafana-dashboard.json"
[ -x "$prefix/bin/readreceiptd" ] || fail "$prefix/bin/readreceiptd is not an executable"
if [ -f "$unit" ]; then
  exec_start=$(unit_value "$unit" ExecStart)
  binary=${exec_start%% *}
  [ "$binary" = "$prefix/bin/readreceiptd" ] || fail "ExecStart runs $binary, installed: $prefix/bin/readreceiptd"
  config=$(echo "$exec_start" | sed -n 's/.*--config \([^ ]*\).*/\1/p')
  [ "$config" = "$prefix/etc/readreceiptd/config.yaml" ] || fail "ExecStart reads $config"
  want_file "$(dirname "$config")/config.yaml.example"
  sed -n 's/^LoadCredential=[^:]*://p' "$unit" >"$work/credentials"
  [ -s "$work/credentials" ] || fail "no LoadCredential= in $unit"
  while read -r path; do
    case $path in
      "$prefix/etc/readreceiptd/credentials/"*) ;;
      *) fail "LoadCredential= reads $path, outside $prefix/etc/readreceiptd/credentials" ;;
    esac
  done <"$work/credentials"
  [ -d "$prefix/etc/readreceiptd/credentials/webhooks" ] || fail "credentials/webhooks not created"
  mode=$(stat -c %a "$prefix/etc/readreceiptd/credentials")
  [ "$mode" = 700 ] || fail "credentials directory has mode $mode, want 700"
  stale='(^|[ =:])(/usr/bin/readreceiptd|/etc/readreceiptd|/usr/share/doc/readreceiptd)'
  if grep -Eq "$stale" "$unit"; then
    fail "$unit still names a path of --prefix /usr: $(grep -En "$stale" "$unit")"
  fi
fi

# 2. The README's install: --prefix /usr, into a staging DESTDIR. The
#    configuration goes to /etc, and an existing config.yaml stays as it is.
stage="$work/destdir"
mkdir -p "$stage/etc/readreceiptd"
echo "# the operator's" >"$stage/etc/readreceiptd/config.yaml"
DESTDIR=$stage cmake --install "$build" --prefix /usr >"$work/install-usr.log" 2>&1 ||
  { cat "$work/install-usr.log"; echo "FAIL: DESTDIR=$stage cmake --install --prefix /usr"; exit 1; }
want_file "$stage/usr/bin/readreceiptd"
want_file "$stage/etc/readreceiptd/config.yaml.example"
[ "$(cat "$stage/etc/readreceiptd/config.yaml")" = "# the operator's" ] ||
  fail "cmake --install changed an existing /etc/readreceiptd/config.yaml"
cmp -s "$stage/usr/lib/systemd/system/readreceiptd.service" "$src/systemd/readreceiptd.service" ||
  fail "the unit installed with --prefix /usr differs from systemd/readreceiptd.service"

[ "$failures" = 0 ] || exit 1
echo "ok: installed layout matches the unit (prefix $prefix, and /usr)"
