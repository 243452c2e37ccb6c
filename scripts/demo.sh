#!/usr/bin/env bash
# The demo: sets up and builds (scripts/setup.sh), then runs a DingTalk
# simulator (build/fake-dingtalk), a webhook receiver that prints every event
# (build/webhook-sink) and readreceiptd with config/demo.yaml, their output
# interleaved with a coloured prefix. Simulated people read seven messages (of
# every kind: private chats, a group chat, a one-to-one batch send) over
# about a minute; one message is recalled, one is never fully read. It prints
# the address of the status page, where the reads arrive live.
# Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."

config=config/demo.yaml
scenario=config/demo-scenario.yaml
state_dir=/tmp/readreceiptd-demo
dingtalk_port=18080
webhook_port=18081
start_timeout_s=10
stop_timeout_s=12

scripts/setup.sh

# One source of truth: the credentials the daemon uses come from its config.
yaml_value() { sed -n "s/^ *$1: *\"\{0,1\}\([^\" #]*\)\"\{0,1\}.*/\1/p" "$config" | head -n 1; }
app_key=$(yaml_value app_key)
app_secret=$(yaml_value app_secret)
robot_code=$(yaml_value robot_code)
webhook_secret=$(yaml_value secret)

colour() { if [ -t 1 ]; then printf '\033[%sm' "$1"; fi; }
# prefix NAME COLOUR: copies stdin to stdout, each line after "[NAME] ".
# It ignores Ctrl-C and ends when its program closes the pipe, so that the
# programs' last lines still show and they never write into a broken pipe.
prefix() {
  trap '' INT TERM
  local start reset line
  start=$(colour "$2")
  reset=$(colour 0)
  while IFS= read -r line || [ -n "$line" ]; do
    printf '%s[%s]%s %s\n' "$start" "$1" "$reset" "$line"
  done
}

pids=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  local pid waited=0
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((stop_timeout_s * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap 'echo; echo "demo: stopping"; stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for_port() {
  local port=$1 pid=$2 tries=0
  until port_busy "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: a program exited before listening on port $port" >&2
      exit 1
    fi
    tries=$((tries + 1))
    if [ "$tries" -gt $((start_timeout_s * 10)) ]; then
      echo "demo: nothing listens on port $port after ${start_timeout_s}s" >&2
      exit 1
    fi
    sleep 0.1
  done
}

for port in "$dingtalk_port" "$webhook_port"; do
  if port_busy "$port"; then
    echo "demo: port $port is in use (another demo still running?)" >&2
    exit 1
  fi
done

rm -rf "$state_dir"
mkdir -p "$state_dir"

build/fake-dingtalk --port "$dingtalk_port" --app-key "$app_key" --app-secret "$app_secret" \
  --robot-code "$robot_code" --page-size 4 --seed 42 --scenario "$scenario" \
  > >(prefix dingtalk 36) 2>&1 &
pids+=($!)
WEBHOOK_SECRET="$webhook_secret" build/webhook-sink --port "$webhook_port" \
  > >(prefix webhook 32) 2>&1 &
pids+=($!)
wait_for_port "$dingtalk_port" "${pids[0]}"
wait_for_port "$webhook_port" "${pids[1]}"

build/readreceiptd --config "$config" > >(prefix daemon 33) 2>&1 &
pids+=($!)

cat <<INFO
demo: running; Ctrl-C stops it.
demo:   status page  http://127.0.0.1:19465/   (open it in a browser: the reads arrive live)
demo:   messages     curl -s http://127.0.0.1:19465/v1/messages
demo:   metrics      curl -s http://127.0.0.1:19464/metrics | grep ^readreceiptd_
INFO

names=(dingtalk webhook daemon)
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      status=0
      wait "${pids[$i]}" || status=$?
      echo "demo: ${names[$i]} exited (status $status); stopping the others" >&2
      stop_all
      exit 1
    fi
  done
  sleep 0.5
done
