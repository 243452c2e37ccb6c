#!/bin/sh
# Runs the status page's browser test (status_page_test.js): installs the
# pinned puppeteer-core (npm ci, from the committed package-lock.json) into
# WORK_DIR, never into the source tree, finds Chromium, then drives the page
# of the real daemon against the DingTalk simulator and the webhook sink.
#   run_browser_test.sh SOURCE_DIR WORK_DIR DAEMON FAKE_DINGTALK WEBHOOK_SINK NODE NPM
# Chromium: $RRD_CHROMIUM, else chromium or chromium-browser on the PATH
# (Debian's chromium package; scripts/setup.sh installs it with
# RRD_WITH_TEST_TOOLS=1). The screenshot goes to WORK_DIR/status-page.png,
# and to docs/status-page.png as well with RRD_UPDATE_SCREENSHOT=1.
# Exit codes: 0 pass, 1 fail (an npm install that fails included, and no
# Chromium in CI, where CI=true), 77 skipped (no Chromium, Node.js or npm).
set -eu
src=$1 work=$2 daemon=$3 fake=$4 sink=$5 node=${6:-node} npm=${7:-npm}

if ! command -v "$node" >/dev/null 2>&1 || ! command -v "$npm" >/dev/null 2>&1; then
  echo "SKIP: Node.js or npm not found; the status page's browser test needs both"
  exit 77
fi
chromium=${RRD_CHROMIUM:-}
if [ -z "$chromium" ]; then
  for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
      chromium=$(command -v "$candidate")
      break
    fi
  done
fi
if [ -z "$chromium" ] || [ ! -x "$chromium" ]; then
  # In CI (CI=true) setup.sh has installed it: its absence is a failure.
  if [ "${CI:-}" = true ]; then
    echo "FAIL: Chromium not found in CI; scripts/setup.sh installs it (Debian package chromium) with RRD_WITH_TEST_TOOLS=1"
    exit 1
  fi
  echo "SKIP: Chromium not found (Debian package chromium, or set RRD_CHROMIUM); the status page's browser test needs it"
  exit 77
fi

mkdir -p "$work"
install_packages() {
  cp "$src/tests/browser/package.json" "$src/tests/browser/package-lock.json" \
    "$src/tests/browser/status_page_test.js" "$work/"
  stamp="$work/node_modules/.installed-package-lock.json"
  if ! cmp -s "$src/tests/browser/package-lock.json" "$stamp"; then
    if ! (cd "$work" && "$npm" ci --no-audit --no-fund --loglevel=error); then
      echo "FAIL: npm ci could not install the pinned puppeteer-core; is the npm registry reachable?"
      return 1
    fi
    cp "$src/tests/browser/package-lock.json" "$stamp"
  fi
}
if command -v flock >/dev/null 2>&1; then
  (flock 9 && install_packages) 9>"$work/.install.lock" || exit 1
else
  install_packages || exit 1
fi
RRD_CHROMIUM="$chromium" RRD_SOURCE_DIR="$src" RRD_BROWSER_WORK="$work" RRD_DAEMON="$daemon" \
  RRD_FAKE_DINGTALK="$fake" RRD_WEBHOOK_SINK="$sink" \
  exec "$node" --test --test-reporter=spec "$work/status_page_test.js"
