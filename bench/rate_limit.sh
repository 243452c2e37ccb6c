#!/bin/bash
# Is DingTalk's rate limit, and never readreceiptd itself, the bottleneck?
# readreceiptd polls 2,000 messages (schedule: every 10 s, so 200 polls/s are
# due: more than the limit) with `requests_per_second` R, against the
# fixed-answer bench-dingtalk answering each call after L ms (a slow
# DingTalk). The limiter keeps every call counted for 1.1 s
# (RateLimiter::k_arrival_margin), so the most it can reach is R / 1.1.
#
#   bench/rate_limit.sh [--rates "20 100"] [--latencies "0 100 500 1000 2000"]
#                       [--seconds S]
#
# Prints, per R and L, the calls per second answered (after 5 s of warm-up,
# over S seconds), that as a share of R / 1.1, and the polls that failed
# (timeouts: a request waiting for a connection inside the HTTP engine
# counts against its request_timeout of 10 s).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rates="20 100"
latencies="0 100 500 1000 2000"
seconds=30
while [ $# -gt 0 ]; do
  case $1 in
  --rates) rates=$2; shift 2 ;;
  --latencies) latencies=$2; shift 2 ;;
  --seconds) seconds=$2; shift 2 ;;
  *) echo "usage: $0 [--rates \"20 100\"] [--latencies \"0 100 500 1000 2000\"] [--seconds S]" >&2; exit 2 ;;
  esac
done
messages=2000
bench_build readreceiptd bench-dingtalk
work=$bench_work/rate_limit
mkdir -p "$work"

load_note "before"
printf '%-6s %-8s %10s %12s %14s\n' "R/s" "latency" "calls/s" "of R/1.1" "failed polls"
for rate in $rates; do
  for latency in $latencies; do
    rm -f "$work/stats" "$work/server.log"
    "$build_dir/bench/bench-dingtalk" --mode fixed --delay-ms "$latency" --stats-file "$work/stats" \
      >"$work/server.log" 2>&1 &
    server_pid=$!
    bench_pids+=("$server_pid")
    wait_for 30 grep -q '^listening on 127\.0\.0\.1:[0-9][0-9]*$' "$work/server.log"
    server_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/server.log")
    rm -f "$work/state.db"*
    write_daemon_config "http://127.0.0.1:$server_port" "$work/state.db" "[ { every: 10s } ]" \
      "$messages" "$work/daemon.yaml" "$rate"
    DAEMON_LOG_LEVEL=debug start_daemon "$work/daemon.yaml" "$work/daemon.log"
    sleep 5
    r0=$(server_requests "$work/stats")
    f0=$(grep -c 'poll of .* failed' "$work/daemon.log" || true)
    sleep "$seconds"
    r1=$(server_requests "$work/stats")
    f1=$(grep -c 'poll of .* failed' "$work/daemon.log" || true)
    stop_pid "$daemon_pid"
    stop_pid "$server_pid"
    achieved=$(awk -v r=$((r1 - r0)) -v s="$seconds" 'BEGIN{printf "%.1f", r / s}')
    share=$(awk -v a="$achieved" -v r="$rate" 'BEGIN{printf "%.0f%%", 100 * a / (r / 1.1)}')
    printf '%-6s %-8s %10s %12s %14s\n' "$rate" "${latency}ms" "$achieved" "$share" $((f1 - f0))
  done
done
load_note "after"
