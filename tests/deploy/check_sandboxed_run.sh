#!/bin/sh
# The daemon works inside the systemd unit's sandbox. systemd cannot run here,
# so this rebuilds the parts of the sandbox a process can apply to itself and
# runs the real binary in them against the fake DingTalk and a webhook sink:
# - sandbox_exec.py: the unit's SystemCallFilter= (with its error number),
#   SystemCallArchitectures=, RestrictAddressFamilies=,
#   MemoryDenyWriteExecute= and RestrictNamespaces=, read from the unit file;
# - setpriv: an unprivileged uid and gid (DynamicUser=), no capabilities
#   (CapabilityBoundingSet=, AmbientCapabilities=), NoNewPrivileges=;
# - UMask=0077, secrets read from $CREDENTIALS_DIRECTORY (LoadCredential=),
#   a state directory only that user can write (StateDirectory=).
# Not rebuilt: the mount namespace (ProtectSystem=strict, PrivateTmp=,
# ProtectHome=, PrivateDevices=; the unprivileged user can write nothing
# outside the state directory and /tmp here either), PrivateUsers=,
# ProtectProc=, LockPersonality= and the cgroup device policy.
# The daemon polls, commits and delivers until a message is fully read,
# reloads on SIGHUP and stops with status 0 on SIGTERM, all without a
# denied system call turning into an error.
# In a build with AddressSanitizer, CMake sets RRD_SANDBOX_ASAN_OPTIONS:
# LeakSanitizer's check at exit stops the process's threads with ptrace(2),
# which the unit's filter denies, as it should.
# Exit 77 (skipped) when not root, or without setpriv, systemd-analyze or
# python3-seccomp (Debian python3-seccomp; scripts/test.sh installs it).
# Usage: check_sandboxed_run.sh SOURCE_DIR DAEMON FAKE_DINGTALK WEBHOOK_SINK
set -eu
src=$1 daemon=$2 fake_dingtalk=$3 webhook_sink=$4
python=/usr/bin/python3 # Debian's, where python3-seccomp installs
uid=10001
start_timeout_s=10
run_timeout_s=60
stop_timeout_s=15

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root, to switch to an unprivileged user"
command -v setpriv >/dev/null 2>&1 || skip "setpriv not found (util-linux)"
command -v systemd-analyze >/dev/null 2>&1 || skip "systemd-analyze not found (Debian package systemd)"
"$python" -c 'import seccomp' 2>/dev/null || skip "$python cannot import seccomp (Debian package python3-seccomp)"

work=$(mktemp -d /tmp/rrd-sandbox-XXXXXX)
pids=""
cleanup() {
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
chmod 755 "$work"

fail() {
  echo "FAIL: $*"
  for log in "$work"/*.log; do
    echo "---- $(basename "$log")"
    tail -n 40 "$log"
  done
  exit 1
}

# wait_for SECONDS PID NAME FILE PATTERN: until FILE has a line matching
# PATTERN, while the process PID (NAME) lives.
wait_for() {
  deadline=$(($(date +%s) + $1))
  until grep -q "$5" "$4" 2>/dev/null; do
    if ! kill -0 "$2" 2>/dev/null; then
      status=0
      wait "$2" || status=$?
      fail "$3 exited (status $status; 159: killed by SIGSYS) while waiting for '$5' in $(basename "$4")"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "no '$5' in $(basename "$4") after $1 s"
    sleep 0.1
  done
}
listening_port() { sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -n 1; }

# The two fakes, unconfined.
cat >"$work/scenario.yaml" <<'YAML'
messages:
  - process_query_key: "c2FuZGJveGVkIHJ1bg=="
    open_conversation_id: "cidSandbox=="
    recipients: [alice, bob]
    read_delay_mean: 1s
    read_delay_max: 2s
YAML
webhook_secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
"$fake_dingtalk" --port 0 --app-key sandboxkey --app-secret sandbox-app-secret \
  --robot-code sandboxrobot --page-size 1 --seed 7 --scenario "$work/scenario.yaml" \
  >"$work/fake-dingtalk.log" 2>&1 &
fake_pid=$!
pids="$pids $fake_pid"
WEBHOOK_SECRET=$webhook_secret "$webhook_sink" --port 0 >"$work/webhook-sink.log" 2>&1 &
sink_pid=$!
pids="$pids $sink_pid"
wait_for "$start_timeout_s" "$fake_pid" fake-dingtalk "$work/fake-dingtalk.log" "listening on"
wait_for "$start_timeout_s" "$sink_pid" webhook-sink "$work/webhook-sink.log" "listening on"

# What the unit gives the daemon: credentials only it can read, a state
# directory only it can write, the configuration read-only.
mkdir -p "$work/bin" "$work/credentials" "$work/state" "$work/etc"
cp "$daemon" "$work/bin/readreceiptd"
cp "$src/tests/deploy/sandbox_exec.py" "$src/systemd/readreceiptd.service" "$work/bin/"
chmod -R a+rX "$work/bin" "$work/etc"
printf 'sandbox-app-secret\n' >"$work/credentials/app_secret"
printf '%s\n' "$webhook_secret" >"$work/credentials/webhook_sink"
chown -R "$uid:$uid" "$work/credentials" "$work/state"
chmod 0500 "$work/credentials" && chmod 0400 "$work/credentials"/*
chmod 0700 "$work/state"
cat >"$work/etc/config.yaml" <<YAML
dingtalk:
  endpoint: http://127.0.0.1:$(listening_port "$work/fake-dingtalk.log")
  auth: { app_key: sandboxkey, app_secret_file: app_secret }
  robot_code: sandboxrobot
poll:
  schedule: [{ every: 1s }]
state:
  path: $work/state/state.db
metrics:
  listen: 127.0.0.1:0
api:
  listen: 127.0.0.1:0
webhooks:
  - name: sink
    url: http://127.0.0.1:$(listening_port "$work/webhook-sink.log")/
    secret_file: webhook_sink
messages:
  - process_query_key: "c2FuZGJveGVkIHJ1bg=="
    open_conversation_id: "cidSandbox=="
    expected_readers: [alice, bob]
YAML
chmod 0644 "$work/etc/config.yaml"

(
  umask 0077
  # shellcheck disable=SC2086 # the sanitizer's setting is one word, or none
  exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CREDENTIALS_DIRECTORY="$work/credentials" \
    ${RRD_SANDBOX_ASAN_OPTIONS:+ASAN_OPTIONS=$RRD_SANDBOX_ASAN_OPTIONS} \
    setpriv --reuid "$uid" --regid "$uid" --clear-groups --inh-caps=-all --bounding-set=-all \
    --no-new-privs -- "$python" "$work/bin/sandbox_exec.py" "$work/bin/readreceiptd.service" \
    "$work/bin/readreceiptd" --config "$work/etc/config.yaml" --log-format json
) >"$work/daemon.log" 2>&1 &
daemon_pid=$!
pids="$pids $daemon_pid"

wait_for "$run_timeout_s" "$daemon_pid" readreceiptd "$work/webhook-sink.log" "message.tracking_stopped .* reason: fully_read"
grep -q "message.read" "$work/webhook-sink.log" || fail "no message.read event arrived"
[ -s "$work/state/state.db" ] || fail "no state database in the state directory"

kill -HUP "$daemon_pid"
wait_for "$start_timeout_s" "$daemon_pid" readreceiptd "$work/daemon.log" "configuration reloaded"

kill -TERM "$daemon_pid"
deadline=$(($(date +%s) + stop_timeout_s))
while kill -0 "$daemon_pid" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the daemon did not stop within $stop_timeout_s s of SIGTERM"
  sleep 0.1
done
status=0
wait "$daemon_pid" || status=$?
[ "$status" = 0 ] || fail "the daemon exited with status $status on SIGTERM (159 = SIGSYS: a system call was killed)"

if grep -Eq '"level":"(error|critical)"|Operation not permitted|not supported by protocol' "$work/daemon.log"; then
  fail "the daemon logged errors in the sandbox: $(grep -E '"level":"(error|critical)"|Operation not permitted|not supported' "$work/daemon.log" | head -n 5)"
fi
echo "ok: polled, delivered, reloaded and stopped cleanly inside the unit's sandbox"
