#!/usr/bin/env bash
# The store's commit latency: Store::commit_all() of 1, 10 and 100 commits
# (each a message with a new read and an event routed to two webhooks), and
# begin_commit_all(), what the daemon's loop waits for, alone ("begin") and
# until the commit has landed ("landed"; bench-commit-latency's comment), on
# SQLite (a file in BENCH_WORK: WAL, synchronous=FULL) and on PostgreSQL 15
# (a throwaway server from tests/postgres/throwaway.sh, over its Unix
# socket, default settings: fsync and synchronous_commit on). Prints
# median/p90/p99 per store, call and batch size, and the machine's load.
#
#   bench/commit_latency.sh [ROUNDS]     (default 200)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-200}
bench_build bench-commit-latency
start_postgres commit-latency-pg
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(nproc) cores)"
"$build_dir/bench/bench-commit-latency" sqlite "$bench_work/commit-latency.db" --rounds "$rounds"
"$build_dir/bench/bench-commit-latency" postgres "$pg_conninfo" --rounds "$rounds" |
  tail -n +2
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
