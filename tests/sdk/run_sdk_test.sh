#!/bin/sh
# Runs one of the official SDK compatibility tests (sdk_compat_test.js by
# default, or SCRIPT): installs the pinned SDKs (npm ci, from the committed
# package-lock.json) into WORK_DIR, never into the source tree, then runs the
# test against the fake-dingtalk program. Tests running at once share
# WORK_DIR: the install is done under a lock, once per lock file.
#   run_sdk_test.sh SOURCE_DIR WORK_DIR FAKE_DINGTALK NODE NPM [SCRIPT]
# Exit codes: 0 pass, 1 fail (an npm install that fails included: the set-up
# script installs Node.js and the registry is part of the build
# environment), 77 skipped (no Node.js/npm).
set -eu
src=$1 work=$2 fake=$3 node=${4:-node} npm=${5:-npm} script=${6:-sdk_compat_test.js}

if ! command -v "$node" >/dev/null 2>&1 || ! command -v "$npm" >/dev/null 2>&1; then
  echo "SKIP: Node.js or npm not found; the official SDK compatibility test needs both"
  exit 77
fi
mkdir -p "$work"
install_sdks() {
  cp "$src/package.json" "$src/package-lock.json" "$src"/*.js "$work/"
  stamp="$work/node_modules/.installed-package-lock.json"
  if ! cmp -s "$src/package-lock.json" "$stamp"; then
    if ! (cd "$work" && "$npm" ci --no-audit --no-fund --loglevel=error); then
      echo "FAIL: npm ci could not install the pinned SDKs; is the npm registry reachable?"
      return 1
    fi
    cp "$src/package-lock.json" "$stamp"
  fi
}
if command -v flock >/dev/null 2>&1; then
  (flock 9 && install_sdks) 9>"$work/.install.lock" || exit 1
else
  install_sdks || exit 1
fi
exec "$node" "$work/$script" "$fake"
