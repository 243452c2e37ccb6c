#!/bin/bash
# Call economy: the real scheduler on a fake clock, 1,000 messages over
# 72 simulated hours; the default schedule against fixed-interval polling
# that spends no more calls. See bench/call_economy.cpp. Arguments are passed
# on (--messages, --readers, --seed, --median-read, --sigma, --never,
# --schedule "10m:15s,2h:1m,24h:10m,1h").
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_build bench-call-economy
exec "$build_dir/bench/bench-call-economy" "$@"
