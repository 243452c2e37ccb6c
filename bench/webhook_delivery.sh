#!/bin/bash
# Webhook delivery: events per second through the durable outbox (SQLite,
# WAL, synchronous=FULL) to a sink whose every signature is checked, and the
# latency from DingTalk serving a read to its event arriving.
# bench-webhook-delivery runs the real readreceiptd as a child against the
# tests' fake DingTalk and a sink on 127.0.0.1; the state database is on
# disk (/var/tmp).
# --store postgres: the state on a throwaway PostgreSQL 15 server instead
# (lib.sh's start_postgres: on disk, fsync on, Unix socket), a fresh schema
# per run.
#
#   bench/webhook_delivery.sh [--runs R] [--burst N] [--steady N] [--steady-seconds S]
#                             [--store sqlite|postgres] [--sink epoll|httplib]
# --sink: the receiving end (bench-webhook-delivery's comment): epoll (the
# default) or the tests' httplib WebhookSink.
#
# Prints one "burst" and one "steady" line per run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

runs=3
store=sqlite
args=()
while [ $# -gt 0 ]; do
  case $1 in
  --runs) runs=$2; shift 2 ;;
  --burst | --steady | --steady-seconds | --sink | --state-dir) args+=("$1" "$2"); shift 2 ;;
  --store) store=$2; shift 2 ;;
  *) echo "usage: $0 [--runs R] [--burst N] [--steady N] [--steady-seconds S] [--store sqlite|postgres] [--sink epoll|httplib] [--state-dir DIR]" >&2; exit 2 ;;
  esac
done
bench_build readreceiptd bench-webhook-delivery
case $store in
sqlite) ;;
postgres)
  start_postgres webhook-delivery-pg
  args+=(--postgres "$pg_conninfo")
  ;;
*) echo "$0: --store is sqlite or postgres" >&2; exit 2 ;;
esac
echo "# store: $store"
load_note "before"
for _ in $(seq "$runs"); do
  "$build_dir/bench/bench-webhook-delivery" "$daemon_bin" "${args[@]}"
done
load_note "after"
