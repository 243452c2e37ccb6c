#!/bin/bash
# Push latency: from a read in the fake DingTalk, pushed over its fake Stream,
# to the webhook event at the sink, through the real readreceiptd (commit
# with a sync, then delivery). bench-push-latency runs the daemon as a child
# against the tests' fake DingTalk and webhook sink on 127.0.0.1; the state
# database is on disk (/var/tmp). See bench/push_latency.cpp.
#
#   bench/push_latency.sh [--runs R] [--reads N] [--messages M] [--gap-ms G]
#
# Prints, per run, the reads and the daemon's CPU, then p50/p90/p99/max of
# read -> event at the sink and of its two parts.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

runs=3
args=()
while [ $# -gt 0 ]; do
  case $1 in
  --runs) runs=$2; shift 2 ;;
  --reads | --messages | --gap-ms) args+=("$1" "$2"); shift 2 ;;
  *) echo "usage: $0 [--runs R] [--reads N] [--messages M] [--gap-ms G]" >&2; exit 2 ;;
  esac
done
bench_build readreceiptd bench-push-latency
load_note "before"
for _ in $(seq "$runs"); do
  "$build_dir/bench/bench-push-latency" "$daemon_bin" "${args[@]}"
done
load_note "after"
