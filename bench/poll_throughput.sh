#!/bin/bash
# Poll throughput and cost: readreceiptd polling 10,000 watched messages of a
# local DingTalk stand-in as fast as it can (requests_per_second: 100000, a
# schedule of 100 ms, so every message is always due), next to a poller on the
# official Node SDK (sequential and 64 calls at a time) and wrk posting the
# same request (the loopback ceiling). Each against both servers of
# bench-dingtalk: "fixed" (one epoll thread, a fixed answer: measures the
# client) and "fake" (the tests' fake DingTalk: validates everything, a thread
# per connection).
#
#   bench/poll_throughput.sh [--messages N] [--seconds S] [--runs R]
#                            [--servers "fixed fake"] [--clients "daemon daemon-pg sdk1 sdk64 wrk"]
#                            [--subscribers "0 100"]
#
# --subscribers: the daemon is measured once per number in the list, with its
# HTTP API on and that many GET /v1/updates streams open and read
# (bench/sse_subscribers.js, Node), rows "daemon:N"; the API is on for 0
# too, so that the rows differ only in the streams. Without it, the API is
# off, as before.
#
# Client daemon-pg: the daemon with its state on PostgreSQL (a throwaway
# server, lib.sh's start_postgres, a fresh database per measurement) instead
# of SQLite.
#
# Prints, per server and client, the medians over the runs (and min..max) of
# polls per second, the client's CPU seconds per 1,000 polls and the server's.
# CPU is user + system time from /proc/<pid>/stat (node: process.cpuUsage()),
# so it depends much less on the machine's load than the rates do.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

messages=10000
seconds=10
runs=3
servers="fixed fake"
clients="daemon sdk1 sdk64 wrk"
subscribers=""
while [ $# -gt 0 ]; do
  case $1 in
  --messages) messages=$2; shift 2 ;;
  --seconds) seconds=$2; shift 2 ;;
  --runs) runs=$2; shift 2 ;;
  --servers) servers=$2; shift 2 ;;
  --clients) clients=$2; shift 2 ;;
  --subscribers) subscribers=$2; shift 2 ;;
  *) echo "usage: $0 [--messages N] [--seconds S] [--runs R] [--servers \"fixed fake\"] [--clients \"daemon daemon-pg sdk1 sdk64 wrk\"] [--subscribers \"0 100\"]" >&2; exit 2 ;;
  esac
done

bench_build readreceiptd bench-dingtalk
work=$bench_work/poll_throughput
mkdir -p "$work"

# The official SDK, installed from the pinned lock file of the SDK test.
setup_sdk() {
  local dir=$bench_work/sdk
  mkdir -p "$dir"
  cp "$bench_root/tests/sdk/package.json" "$bench_root/tests/sdk/package-lock.json" "$dir/"
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.installed-package-lock.json"; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$dir/package-lock.json" "$dir/node_modules/.installed-package-lock.json"
  fi
  cp "$bench_root/bench/sdk_poller.js" "$dir/"
  sdk_dir=$dir
}

setup_wrk() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
  fi
  cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.path = "/v1.0/robot/privateChatMessages/query"
wrk.body = '{"maxResults":200,"processQueryKey":"bench-0000000","robotCode":"dingfakerobot"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["x-acs-dingtalk-access-token"] = "bench-token"
EOF
}

case " $clients " in *" sdk"*) setup_sdk ;; esac
case " $clients " in *" wrk "*) setup_wrk ;; esac
case " $clients " in *" daemon-pg "*) start_postgres poll-throughput-pg ;; esac

# One measurement: sets rate, client_per_k, server_per_k (CPU s per 1,000).
# With a second argument (a number of streams), the API is on and that many
# /v1/updates streams are open while it is measured; sets subs_note.
# A third argument "postgres": the state on PostgreSQL.
measure_daemon() {
  local mode=$1 streams=${2:-} store=${3:-sqlite}
  local api_port="" subs_pid="" state=$work/state.db
  subs_note=""
  start_server "$mode" "$messages" "$work/stats" "$work/server.log"
  rm -f "$work/state.db"*
  if [ "$store" = postgres ]; then
    fresh_pg_database bench_poll_throughput
    state=postgres:$pg_state
  fi
  [ -n "$streams" ] && api_port=$(free_port)
  write_daemon_config "http://127.0.0.1:$server_port" "$state" "[ { every: 100ms } ]" \
    "$messages" "$work/daemon.yaml" 100000 "${api_port:+127.0.0.1:$api_port}"
  start_daemon "$work/daemon.yaml" "$work/daemon.log"
  # Warm-up: the first round of polls (every message once) and a second more.
  wait_for 300 bash -c "[ \"\$(awk '/^requests/ {print \$2}' '$work/stats' 2>/dev/null || echo 0)\" -ge $messages ]" ||
    { echo "bench: the daemon did not finish its first round of polls" >&2; cat "$work/daemon.log" >&2; exit 1; }
  if [ -n "$streams" ] && [ "$streams" -gt 0 ]; then
    node "$bench_root/bench/sse_subscribers.js" "$api_port" "$streams" >"$work/subscribers.out" 2>&1 &
    subs_pid=$!
    bench_pids+=("$subs_pid")
    wait_for 60 grep -qs "^connected $streams\$" "$work/subscribers.out" ||
      { echo "bench: the /v1/updates streams did not open" >&2; cat "$work/subscribers.out" >&2; exit 1; }
  fi
  sleep 1
  local r0 d0 s0 t0 r1 d1 s1 t1
  r0=$(server_requests "$work/stats"); d0=$(cpu_ticks "$daemon_pid"); s0=$(cpu_ticks "$server_pid"); t0=$(now_s)
  sleep "$seconds"
  r1=$(server_requests "$work/stats"); d1=$(cpu_ticks "$daemon_pid"); s1=$(cpu_ticks "$server_pid"); t1=$(now_s)
  if [ -n "$subs_pid" ]; then
    stop_pid "$subs_pid"
    subs_note=$(tail -1 "$work/subscribers.out")
  fi
  stop_pid "$daemon_pid"
  stop_pid "$server_pid"
  rate=$(awk -v r=$((r1 - r0)) -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", r / (b - a)}')
  client_per_k=$(awk -v c=$((d1 - d0)) -v r=$((r1 - r0)) -v hz="$clk_tck" 'BEGIN{printf "%.4f", c / hz * 1000 / r}')
  server_per_k=$(awk -v c=$((s1 - s0)) -v r=$((r1 - r0)) -v hz="$clk_tck" 'BEGIN{printf "%.4f", c / hz * 1000 / r}')
}

measure_sdk() {
  local mode=$1 concurrency=$2
  start_server "$mode" "$messages" "$work/stats" "$work/server.log"
  local r0 s0 r1 s1 out
  r0=$(server_requests "$work/stats"); s0=$(cpu_ticks "$server_pid")
  out=$(node "$sdk_dir/sdk_poller.js" "$server_port" bench-token "$messages" "$concurrency" "$seconds")
  r1=$(server_requests "$work/stats"); s1=$(cpu_ticks "$server_pid")
  stop_pid "$server_pid"
  rate=$(echo "$out" | sed 's/.*"polls_per_second":\([0-9.]*\).*/\1/')
  client_per_k=$(echo "$out" | sed 's/.*"cpu_seconds_per_1000_polls":\([0-9.]*\).*/\1/')
  server_per_k=$(awk -v c=$((s1 - s0)) -v r=$((r1 - r0)) -v hz="$clk_tck" 'BEGIN{printf "%.4f", c / hz * 1000 / r}')
}

# wrk with 1 thread and 64 connections: the daemon's shape (one thread, at
# most 64 connections to a host and 64 polls in flight).
measure_wrk() {
  local mode=$1
  start_server "$mode" "$messages" "$work/stats" "$work/server.log"
  local r0 s0 r1 s1
  r0=$(server_requests "$work/stats"); s0=$(cpu_ticks "$server_pid")
  /usr/bin/time -f "%U %S" -o "$work/wrk.time" \
    wrk -t1 -c64 -d"${seconds}s" -s "$work/post.lua" "http://127.0.0.1:$server_port" >"$work/wrk.out"
  r1=$(server_requests "$work/stats"); s1=$(cpu_ticks "$server_pid")
  stop_pid "$server_pid"
  local requests
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  rate=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$work/wrk.out")
  client_per_k=$(awk -v r="$requests" '{printf "%.4f", ($1 + $2) * 1000 / r}' "$work/wrk.time")
  server_per_k=$(awk -v c=$((s1 - s0)) -v r=$((r1 - r0)) -v hz="$clk_tck" 'BEGIN{printf "%.4f", c / hz * 1000 / r}')
}

# The rows: the daemon once per number of streams when --subscribers is given.
rows=()
for client in $clients; do
  if [ "$client" = daemon ] && [ -n "$subscribers" ]; then
    for n in $subscribers; do rows+=("daemon:$n"); done
  else
    rows+=("$client")
  fi
done

load_note "before"
echo "# $messages messages, $seconds s per measurement, $runs runs; medians (min..max)"
printf '%-11s %-11s %22s %24s %24s\n' server client "polls/s" "client CPU s/1k polls" "server CPU s/1k polls"
# The rows take turns within each run, so that a change in the machine's
# load spreads over all of them rather than favouring one.
for mode in $servers; do
  declare -A rates=() cks=() sks=() notes=()
  for _ in $(seq "$runs"); do
    for client in "${rows[@]}"; do
      case $client in
      daemon) measure_daemon "$mode" ;;
      daemon-pg) measure_daemon "$mode" "" postgres ;;
      daemon:*) measure_daemon "$mode" "${client#daemon:}" ;;
      sdk1) measure_sdk "$mode" 1 ;;
      sdk64) measure_sdk "$mode" 64 ;;
      wrk) measure_wrk "$mode" ;;
      *) echo "bench: unknown client $client" >&2; exit 2 ;;
      esac
      rates[$client]+="$rate " cks[$client]+="$client_per_k " sks[$client]+="$server_per_k "
      case $client in daemon:*) [ -n "$subs_note" ] && notes[$client]+="$subs_note"$'\n' ;; esac
    done
  done
  for client in "${rows[@]}"; do
    # shellcheck disable=SC2086 # the lists are words
    printf '%-11s %-11s %8s (%12s) %9s (%13s) %9s (%13s)\n' "$mode" "$client" \
      "$(median ${rates[$client]})" "$(spread ${rates[$client]})" \
      "$(median ${cks[$client]})" "$(spread ${cks[$client]})" \
      "$(median ${sks[$client]})" "$(spread ${sks[$client]})"
    while IFS= read -r note; do
      [ -n "$note" ] && echo "#   $client streams: $note"
    done <<<"${notes[$client]:-}"
  done
  unset rates cks sks notes
done
load_note "after"
