#!/bin/bash
# Instructions per poll: readreceiptd under valgrind's callgrind, polling
# N messages (default 10,000) of the fixed-answer bench-dingtalk as fast as it
# can. Collection starts after the first round of polls and runs for S
# seconds; the figure is the instructions executed (Ir) divided by the polls
# the server answered meanwhile. It does not depend on the machine's load,
# which makes it the figure for before/after comparisons of daemon changes.
#
#   bench/poll_instructions.sh [--messages N] [--seconds S] [--keep DIR]
#
# --keep DIR keeps the callgrind output there (callgrind_annotate FILE).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

messages=10000
seconds=20
keep=""
while [ $# -gt 0 ]; do
  case $1 in
  --messages) messages=$2; shift 2 ;;
  --seconds) seconds=$2; shift 2 ;;
  --keep) keep=$2; shift 2 ;;
  *) echo "usage: $0 [--messages N] [--seconds S] [--keep DIR]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "bench: needs valgrind (apt-get install valgrind)" >&2; exit 1; }

bench_build readreceiptd bench-dingtalk
work=$bench_work/poll_instructions
rm -rf "$work"
mkdir -p "$work"
start_server fixed "$messages" "$work/stats" "$work/server.log"
write_daemon_config "http://127.0.0.1:$server_port" "$work/state.db" "[ { every: 100ms } ]" \
  "$messages" "$work/daemon.yaml"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
  "$daemon_bin" --config "$work/daemon.yaml" --log-level warn >"$work/daemon.log" 2>&1 &
daemon_pid=$!
bench_pids+=("$daemon_pid")
wait_for 900 bash -c "[ \"\$(awk '/^requests/ {print \$2}' '$work/stats' 2>/dev/null || echo 0)\" -ge $messages ]" ||
  { echo "bench: no first round of polls" >&2; cat "$work/daemon.log" >&2; exit 1; }
callgrind_control -i on "$daemon_pid" >/dev/null
r0=$(server_requests "$work/stats")
sleep "$seconds"
callgrind_control -i off "$daemon_pid" >/dev/null
r1=$(server_requests "$work/stats")
stop_pid "$daemon_pid"
ir=$(awk '/^totals:/ {print $2}' "$work"/callgrind.out*)
polls=$((r1 - r0))
echo "# $messages messages; $polls polls measured under callgrind"
awk -v ir="$ir" -v p="$polls" 'BEGIN{printf "instructions per poll: %.0f\n", ir / p}'
if [ -n "$keep" ]; then
  mkdir -p "$keep"
  cp "$work"/callgrind.out* "$keep/"
fi
