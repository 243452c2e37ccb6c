#!/bin/sh
# systemd-analyze on the unit as `cmake --install` writes it (so that
# ExecStart's binary exists): `verify` must be silent (it exits 0 even on an
# unknown key or a bad value, so any message fails), and `security` must rate
# the exposure 2.0 or lower. Exit 77 (skipped) without systemd-analyze.
# Usage: check_unit.sh verify|security BUILD_DIR WORK_DIR
set -eu
mode=$1 build=$2 work=$3
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIP: systemd-analyze not found (Debian package systemd; scripts/test.sh installs it)"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; echo "FAIL: cmake --install"; exit 1; }
unit="$work/prefix/lib/systemd/system/readreceiptd.service"

case $mode in
verify)
  status=0
  systemd-analyze verify --man=false "$unit" >"$work/out" 2>&1 || status=$?
  cat "$work/out"
  if [ "$status" != 0 ] || [ -s "$work/out" ]; then
    echo "FAIL: systemd-analyze verify (exit $status) complains about $unit"
    exit 1
  fi
  echo "ok: systemd-analyze verify accepts the unit"
  ;;
security)
  status=0
  systemd-analyze security --offline=true --threshold=20 "$unit" >"$work/out" 2>"$work/err" || status=$?
  cat "$work/out" "$work/err"
  if [ -s "$work/err" ]; then
    echo "FAIL: systemd-analyze security warns about the unit"
    exit 1
  fi
  level=$(sed -n 's/.*Overall exposure level for readreceiptd.service: \([0-9.]*\).*/\1/p' "$work/out")
  [ -n "$level" ] || { echo "FAIL: no overall exposure level in the output"; exit 1; }
  if [ "$status" != 0 ] || ! awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
    echo "FAIL: exposure level $level, want 2.0 or lower"
    exit 1
  fi
  echo "ok: exposure level $level"
  ;;
*)
  echo "usage: $0 verify|security BUILD_DIR WORK_DIR" >&2
  exit 2
  ;;
esac
