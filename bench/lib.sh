# Shared helpers of the bench/*.sh scripts (sourced, bash). Benchmarks are
# not tests: nothing here runs in CI.
#
# Environment:
#   RRD_BUILD_DIR   the build directory (default: build, as scripts/setup.sh)
#   BENCH_WORK      where benchmarks keep their files (default: /tmp/rrd-bench)
#   RRD_DAEMON      the readreceiptd binary to measure (default: the build's),
#                   e.g. a copy of an earlier build, for before/after figures

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${RRD_BUILD_DIR:-build}
case $build_dir in /*) ;; *) build_dir=$bench_root/$build_dir ;; esac
bench_work=${BENCH_WORK:-/tmp/rrd-bench}
daemon_bin=${RRD_DAEMON:-$build_dir/readreceiptd}
clk_tck=$(getconf CLK_TCK)
bench_pids=()

# Turns RRD_BENCH on in the existing build directory and builds `targets`
# (-j2: the machine is shared).
bench_build() {
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    echo "bench: no $build_dir; run scripts/setup.sh first" >&2
    exit 1
  fi
  mkdir -p "$bench_work"
  if ! { cmake -S "$bench_root" -B "$build_dir" -DRRD_BENCH=ON &&
    cmake --build "$build_dir" -j2 --target "$@"; } >"$bench_work/build.log" 2>&1; then
    tail -30 "$bench_work/build.log" >&2
    echo "bench: the build failed (log: $bench_work/build.log)" >&2
    exit 1
  fi
}

# The CPU time (user + system) of a live process, in clock ticks.
cpu_ticks() {
  # Fields after the command name, which may hold spaces: ") S ppid ...";
  # utime and stime are fields 14 and 15 of the whole line.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Ticks to seconds.
ticks_to_s() { awk -v t="$1" -v hz="$clk_tck" 'BEGIN{printf "%.3f", t / hz}'; }

# Resident memory of a live process, in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

now_s() { date +%s.%N; }

# Median of the arguments (numbers).
median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'
}

# "min..max" of the arguments.
spread() {
  printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{print lo ".." hi}'
}

# Prints the machine's load, so that every figure says how busy it was.
load_note() {
  echo "# $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg) ($1)"
}

# Waits until `cmd` succeeds, polling every 50 ms, for at most `seconds`.
wait_for() {
  local seconds=$1
  shift
  local deadline=$(($(date +%s) + seconds))
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.05
  done
}

# Starts bench-dingtalk (mode, messages, stats file, log); sets server_pid and
# server_port.
start_server() {
  local mode=$1 messages=$2 stats=$3 log=$4
  rm -f "$stats" "$log" # an old log could be read before the new process truncates it
  "$build_dir/bench/bench-dingtalk" --mode "$mode" --messages "$messages" --stats-file "$stats" \
    >"$log" 2>&1 &
  server_pid=$!
  bench_pids+=("$server_pid")
  wait_for 60 grep -qs '^listening on 127\.0\.0\.1:[0-9][0-9]*$' "$log" || { cat "$log" >&2; exit 1; }
  server_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")
}

# Requests the server has answered (from its stats file).
server_requests() { awk '/^requests/ {print $2}' "$1" 2>/dev/null || echo 0; }

# Stops one process that this script started (TERM, then KILL after 10 s).
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Starts a throwaway PostgreSQL 15 server (tests/postgres/throwaway.sh) in
# BENCH_WORK/NAME, on disk with its default durability (fsync and
# synchronous_commit on), over its Unix socket; sets pg_conninfo. Stopped on
# exit.
bench_pg_dirs=()
start_postgres() {
  local dir=$bench_work/$1
  if [ "$(id -u)" = 0 ]; then
    chmod 755 "$bench_work" # the server runs as the postgres user
  fi
  "$bench_root/tests/postgres/throwaway.sh" start "$dir"
  bench_pg_dirs+=("$dir")
  pg_conninfo=$(cat "$dir/conninfo")
}

# Makes database NAME on the server of start_postgres empty (dropped and
# created again); sets pg_state to the state.postgres conninfo for it.
fresh_pg_database() {
  PGOPTIONS="-c client_min_messages=warning" psql "$pg_conninfo" -qX -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $1" \
    -c "CREATE DATABASE $1" >/dev/null
  pg_state=${pg_conninfo/dbname=postgres/dbname=$1}
}

# Stops every process started through the helpers above (on exit).
stop_all() {
  local pid dir
  for pid in "${bench_pids[@]}"; do
    stop_pid "$pid"
  done
  bench_pids=()
  for dir in "${bench_pg_dirs[@]}"; do
    "$bench_root/tests/postgres/throwaway.sh" stop "$dir" >/dev/null 2>&1 || true
  done
  bench_pg_dirs=()
}
trap stop_all EXIT

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Writes a readreceiptd configuration: endpoint, state path (or
# "postgres:CONNINFO", the state on PostgreSQL), schedule, the
# number of messages (keys bench-0000000...), where to write it, and
# optionally the rate limit and api.listen ("": no API).
# Messages come from the YAML file; with count 0 there are none.
write_daemon_config() {
  local endpoint=$1 state=$2 schedule=$3 count=$4 out=$5 rps=${6:-100000} api=${7:-}
  {
    echo "dingtalk:"
    echo "  endpoint: $endpoint"
    echo "  auth: { access_token: bench-token }"
    echo "  robot_code: dingfakerobot"
    echo "  requests_per_second: $rps"
    echo "  request_timeout: 10s"
    echo "poll:"
    echo "  schedule: $schedule"
    echo "  max_age: 72h"
    case $state in
    postgres:*) echo "state: { postgres: \"${state#postgres:}\" }" ;;
    *) echo "state: { path: $state }" ;;
    esac
    echo "metrics: { listen: \"\" }"
    echo "api: { listen: \"$api\" }"
    if [ "$count" -gt 0 ]; then
      echo "messages:"
      awk -v n="$count" 'BEGIN { for (i = 0; i < n; i++) printf "  - process_query_key: \"bench-%07d\"\n", i }'
    fi
  } >"$out"
}

# Starts readreceiptd with a configuration; sets daemon_pid.
start_daemon() {
  local config=$1 log=$2
  rm -f "$log"
  "$daemon_bin" --config "$config" --log-level "${DAEMON_LOG_LEVEL:-warn}" >"$log" 2>&1 &
  daemon_pid=$!
  bench_pids+=("$daemon_pid")
}
