#!/bin/bash
# Webhook delivery: events per second through the durable outbox (SQLite,
# WAL, synchronous=FULL) to a signature-checking sink, and the latency from
# DingTalk serving a read to its event arriving. bench-webhook-delivery runs
# the real readreceiptd as a child against the tests' fake DingTalk and
# webhook sink on 127.0.0.1; the state database is on disk (/var/tmp).
#
#   bench/webhook_delivery.sh [--runs R] [--burst N] [--steady N] [--steady-seconds S]
#
# Prints one "burst" and one "steady" line per run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

runs=3
args=()
while [ $# -gt 0 ]; do
  case $1 in
  --runs) runs=$2; shift 2 ;;
  --burst | --steady | --steady-seconds) args+=("$1" "$2"); shift 2 ;;
  *) echo "usage: $0 [--runs R] [--burst N] [--steady N] [--steady-seconds S]" >&2; exit 2 ;;
  esac
done
bench_build readreceiptd bench-webhook-delivery
load_note "before"
for _ in $(seq "$runs"); do
  "$build_dir/bench/bench-webhook-delivery" "$daemon_bin" "${args[@]}"
done
load_note "after"
