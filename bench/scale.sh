#!/bin/bash
# Scale: readreceiptd with 10,000 / 100,000 / 1,000,000 watched messages.
#
#   bench/scale.sh [--counts "10000 100000 1000000"] [--yaml-counts "100000"]
#                  [--seconds S] [--start-up-only] [--store sqlite|postgres]
#
# For each count, from a state database written beforehand by
# bench-make-state (messages added through the API, so there is no YAML to
# reconcile), against the fixed-answer bench-dingtalk with a limit of 100,000
# calls/s and a schedule of 100 ms (every message always due):
#   start-up   wall and CPU seconds from exec to "ready" in the log (the
#              database loaded, the first turn of the loop done with a token)
#   RSS        VmRSS after start-up and after the first round of polls
#              (every message polled once), in all and per message
#   first round  wall seconds for it
#   CPU/poll   the daemon's CPU microseconds per poll, over S seconds after
#              the first round (it must not grow with the count: the due
#              queue is O(log n))
# --store postgres: the state on a throwaway PostgreSQL server (lib.sh's
# start_postgres), each count's made database copied into a fresh one with
# readreceiptd --copy-state-from (its time is printed), and the daemon
# started on it; the YAML rows, likewise, in a fresh database.
# --start-up-only skips the polls (the first round and CPU/poll), for
# back-to-back start-up figures of two builds (RRD_DAEMON).
# For each --yaml-counts, the same messages come from the YAML file instead:
# the first start creates the database from it; the figure is the second
# start, which loads the database and reconciles it with the file.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

counts="10000 100000 1000000"
yaml_counts="100000"
seconds=10
start_up_only=false
store=sqlite
while [ $# -gt 0 ]; do
  case $1 in
  --counts) counts=$2; shift 2 ;;
  --yaml-counts) yaml_counts=$2; shift 2 ;;
  --seconds) seconds=$2; shift 2 ;;
  --start-up-only) start_up_only=true; shift ;;
  --store) store=$2; shift 2 ;;
  *) echo "usage: $0 [--counts \"10000 100000 1000000\"] [--yaml-counts \"100000\"] [--seconds S] [--start-up-only] [--store sqlite|postgres]" >&2; exit 2 ;;
  esac
done
bench_build readreceiptd bench-dingtalk bench-make-state
work=$bench_work/scale
mkdir -p "$work"
case $store in
sqlite) ;;
postgres) start_postgres scale-pg ;;
*) echo "$0: --store is sqlite or postgres" >&2; exit 2 ;;
esac
echo "# store: $store"

# The daemon's state for one row, empty: sets state (write_daemon_config's).
fresh_state() {
  rm -f "$work/state.db"*
  if [ "$store" = postgres ]; then
    fresh_pg_database bench_scale
    state=postgres:$pg_state
  else
    state=$work/state.db
  fi
}

# Starts the daemon and waits for "ready"; sets up_wall, up_cpu, up_rss.
start_and_time() {
  local config=$1 log=$2
  local t0
  t0=$(now_s)
  DAEMON_LOG_LEVEL=info start_daemon "$config" "$log"
  wait_for 1800 bash -c "grep -q 'ready:' '$log' || ! kill -0 $daemon_pid 2>/dev/null" || true
  if ! grep -q 'ready:' "$log"; then
    echo "bench: the daemon did not start" >&2
    tail -5 "$log" >&2
    exit 1
  fi
  up_wall=$(awk -v a="$t0" -v b="$(now_s)" 'BEGIN{printf "%.2f", b - a}')
  up_cpu=$(ticks_to_s "$(cpu_ticks "$daemon_pid")")
  up_rss=$(rss_kib "$daemon_pid")
}

# After start-up: the first round, RSS, CPU per poll. Sets round_wall,
# round_rss, us_per_poll.
measure_polls() {
  local count=$1
  local t0 r0 c0 r1 c1 t1
  if $start_up_only; then
    round_wall=- round_rss=$up_rss us_per_poll=-
    return
  fi
  t0=$(now_s)
  wait_for 3600 bash -c "[ \"\$(awk '/^requests/ {print \$2}' '$work/stats' 2>/dev/null || echo 0)\" -ge $count ]" ||
    { echo "bench: no first round" >&2; exit 1; }
  round_wall=$(awk -v a="$t0" -v b="$(now_s)" 'BEGIN{printf "%.1f", b - a}')
  round_rss=$(rss_kib "$daemon_pid")
  r0=$(server_requests "$work/stats"); c0=$(cpu_ticks "$daemon_pid"); t0=$(now_s)
  sleep "$seconds"
  r1=$(server_requests "$work/stats"); c1=$(cpu_ticks "$daemon_pid"); t1=$(now_s)
  us_per_poll=$(awk -v c=$((c1 - c0)) -v r=$((r1 - r0)) -v hz="$clk_tck" 'BEGIN{printf "%.1f", c / hz * 1e6 / r}')
  polls_per_s=$(awk -v r=$((r1 - r0)) -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", r / (b - a)}')
}

# Bytes per message: (RSS - the RSS of a daemon with no messages) / count.
per_message() { awk -v k="$1" -v b="$base_rss" -v n="$2" 'BEGIN{printf "%.0f", (k - b) * 1024 / n}'; }

report() {
  local source=$1 count=$2
  printf '%-5s %9s %8s %8s %9s %8s %9s %8s %9s %9s\n' "$source" "$count" "$up_wall" "$up_cpu" \
    "$((up_rss / 1024))" "$(per_message "$up_rss" "$count")" \
    "$((round_rss / 1024))" "$(per_message "$round_rss" "$count")" \
    "$round_wall" "$us_per_poll"
}

load_note "before"
# The RSS of a daemon that watches nothing.
start_server fixed 0 "$work/stats" "$work/server.log"
fresh_state
write_daemon_config "http://127.0.0.1:$server_port" "$state" "[ { every: 100ms } ]" 0 \
  "$work/daemon.yaml"
start_and_time "$work/daemon.yaml" "$work/daemon.log"
base_rss=$up_rss
stop_pid "$daemon_pid"
stop_pid "$server_pid"
echo "# a daemon watching nothing: RSS $((base_rss / 1024)) MiB; B/msg below is (RSS - that) / messages"
printf '%-5s %9s %8s %8s %9s %8s %9s %8s %9s %9s\n' source messages "up s" "up CPU" \
  "RSS MiB" "B/msg" "RSS' MiB" "B/msg'" "round s" "CPU us/poll"
for count in $counts; do
  db=$work/made-$count.db
  # Made again when bench-make-state was rebuilt since (it links the store:
  # a new schema relinks it), so the database has this build's schema.
  if [ ! -f "$db" ] || [ "$build_dir/bench/bench-make-state" -nt "$db" ]; then
    "$build_dir/bench/bench-make-state" "$db" "$count" >/dev/null
  fi
  start_server fixed 0 "$work/stats" "$work/server.log"
  fresh_state
  write_daemon_config "http://127.0.0.1:$server_port" "$state" "[ { every: 100ms } ]" 0 \
    "$work/daemon.yaml"
  if [ "$store" = postgres ]; then
    t0=$(now_s)
    "$daemon_bin" --config "$work/daemon.yaml" --copy-state-from "$db" >"$work/copy.log" 2>&1 ||
      { cat "$work/copy.log" >&2; exit 1; }
    echo "#   ($count: --copy-state-from into PostgreSQL took $(awk -v a="$t0" -v b="$(now_s)" 'BEGIN{printf "%.1f", b - a}') s)"
  else
    cp "$db" "$work/state.db"
  fi
  start_and_time "$work/daemon.yaml" "$work/daemon.log"
  measure_polls "$count"
  stop_pid "$daemon_pid"
  stop_pid "$server_pid"
  report api "$count"
done

for count in $yaml_counts; do
  start_server fixed 0 "$work/stats" "$work/server.log"
  fresh_state
  write_daemon_config "http://127.0.0.1:$server_port" "$state" "[ { every: 100ms } ]" \
    "$count" "$work/daemon.yaml"
  # First start: the database is created from the file.
  start_and_time "$work/daemon.yaml" "$work/daemon-first.log"
  first_wall=$up_wall first_cpu=$up_cpu
  stop_pid "$daemon_pid"
  start_and_time "$work/daemon.yaml" "$work/daemon.log"
  measure_polls "$count"
  stop_pid "$daemon_pid"
  stop_pid "$server_pid"
  report yaml "$count"
  echo "#   (yaml $count: the first start, which creates the database, took $first_wall s, $first_cpu s CPU)"
done
load_note "after"
echo "# up: exec to 'ready'; RSS after start-up, RSS' after the first round of polls;"
echo "# round: the first round of polls; CPU us/poll over $seconds s after it"
