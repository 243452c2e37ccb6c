#!/usr/bin/env bash
# The store's commit latency: Store::commit_all() of 1, 10 and 100 commits
# (each a message with a new read and an event routed to two webhooks), on
# SQLite (a file in BENCH_WORK: WAL, synchronous=FULL) and on PostgreSQL 15
# (a throwaway server from tests/postgres/throwaway.sh, over its Unix
# socket, default settings: fsync and synchronous_commit on). Prints
# median/p90/p99 per store and batch size, and the machine's load.
#
#   bench/commit_latency.sh [ROUNDS]     (default 200)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-200}
bench_build bench-commit-latency
pg_dir=$bench_work/commit-latency-pg
trap '"$bench_root/tests/postgres/throwaway.sh" stop "$pg_dir" >/dev/null 2>&1 || true' EXIT
if [ "$(id -u)" = 0 ]; then
  # The server runs as the postgres user, who must reach its directory.
  chmod 755 "$bench_work"
fi
"$bench_root/tests/postgres/throwaway.sh" start "$pg_dir"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(nproc) cores)"
"$build_dir/bench/bench-commit-latency" sqlite "$bench_work/commit-latency.db" --rounds "$rounds"
"$build_dir/bench/bench-commit-latency" postgres "$(cat "$pg_dir/conninfo")" --rounds "$rounds" |
  tail -n +2
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
