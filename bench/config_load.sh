#!/bin/bash
# Configuration loading: `readreceiptd --check-config` on a YAML file with N
# messages, each with two expected readers and a label (7 YAML nodes and
# about 97 bytes a message: 152,000 of them come close to the 16 MiB cap).
#
#   bench/config_load.sh [--counts "100000 152000"]
#
# For each count: the file's size, the wall and CPU seconds of the check and
# the peak resident size (GNU time's "Maximum resident set size"), and what
# the check printed. RRD_DAEMON measures another binary (before/after).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

counts="100000 152000"
while [ $# -gt 0 ]; do
  case $1 in
  --counts) counts=$2; shift 2 ;;
  *) echo "usage: $0 [--counts \"100000 152000\"]" >&2; exit 2 ;;
  esac
done
if [ -z "${RRD_DAEMON:-}" ]; then
  bench_build readreceiptd
fi
if [ ! -x /usr/bin/time ]; then
  echo "bench: /usr/bin/time is needed (apt-get install time)" >&2
  exit 1
fi
work=$bench_work/config_load
mkdir -p "$work"

# Writes a configuration with `count` messages to `out`.
write_config() {
  local count=$1 out=$2
  {
    echo "dingtalk:"
    echo "  auth: { access_token: bench-token }"
    echo "  robot_code: dingfakerobot"
    echo "state: { path: $work/state.db }"
    echo "messages:"
    awk -v n="$count" 'BEGIN { for (i = 0; i < n; i++)
      printf "  - process_query_key: \"bench-%07d\"\n    expected_readers: [u1, u2]\n    labels: { campaign: c }\n", i }'
  } >"$out"
}

load_note "before"
printf '%9s %9s %8s %8s %9s  %s\n' messages "file MiB" "wall s" "CPU s" "peak MiB" "result"
for count in $counts; do
  config=$work/messages-$count.yaml
  write_config "$count" "$config"
  bytes=$(stat -c %s "$config")
  rc=0
  /usr/bin/time -v "$daemon_bin" --config "$config" --check-config >"$work/out" 2>"$work/err" || rc=$?
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s}' "$work/err")
  cpu=$(awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {printf "%.2f", u + s}' "$work/err")
  peak=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$work/err")
  result=$(grep -v -e '^[[:space:]]' -e '^Command' "$work/err" | head -1 || true)
  [ "$rc" -eq 0 ] && result=$(head -1 "$work/out")
  printf '%9s %9.1f %8s %8s %9s  %s\n' "$count" "$(awk -v b="$bytes" 'BEGIN{print b / 1048576}')" \
    "$wall" "$cpu" "$peak" "${result:0:100}"
done
load_note "after"
