#!/usr/bin/env bash
# Master memory at scale: 100,000 finished tasks in the store (run through `cloudai dev`), then
# a master on that data folder with 10,000 simulated workers heartbeating, then every task page
# read. Prints one JSON line: scripts/rss-at-scale.sh [BINARY] [TASKS] [WORKERS]
set -euo pipefail
bin=$(realpath "${1:-target/release/cloudai}")
tasks=${2:-100000}
workers=${3:-10000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
kb() { awk -v k="$2" '$1 == k":" { print $2 * 1024 }' "/proc/$1/status"; }

# 1. The finished tasks, through the real path.
HTTP_PORT=127.0.0.1:18580 GRPC_PORT=127.0.0.1:18551 CLOUDAI_DATA_DIR="$work/data" RUST_LOG=warn \
  "$bin" dev --no-console >"$work/dev.log" 2>&1 &
dev=$!
sleep 3
"$bin" bench tasks --api http://127.0.0.1:18580 --tasks "$tasks" --concurrency 32 >"$work/tasks.log" 2>&1
kill "$dev"; wait "$dev" 2>/dev/null || true

# 2. A master on that store, with the workers.
HTTP_PORT=127.0.0.1:18580 GRPC_PORT=127.0.0.1:18551 CLOUDAI_DATA_DIR="$work/data" RUST_LOG=warn \
  "$bin" master --no-console >"$work/master.log" 2>&1 &
master=$!
sleep 2
rss_started=$(kb "$master" VmRSS)
"$bin" bench heartbeats --master http://127.0.0.1:18551 --workers "$workers" --interval 1s \
  --duration 30s --master-pid "$master" >"$work/hb.log" 2>&1 &
hb=$!
sleep 20
rss_workers=$(kb "$master" VmRSS)

# 3. Every page of tasks, while the workers heartbeat.
pages=0
listed=0
after=""
start=$(date +%s.%N)
while :; do
  page=$(curl -sf "http://127.0.0.1:18580/api/tasks?limit=1000$after")
  pages=$((pages + 1))
  listed=$((listed + $(jq '.tasks | length' <<<"$page")))
  next=$(jq -r '.next // empty' <<<"$page")
  [ -z "$next" ] && break
  after="&after=$next"
done
walk_s=$(echo "$(date +%s.%N) - $start" | bc)
rss_listed=$(kb "$master" VmRSS)
hwm=$(kb "$master" VmHWM)
wait "$hb" || true
hb_line=$(tail -1 "$work/hb.log")
kill "$master"; wait "$master" 2>/dev/null || true
echo "{\"tasks\":$tasks,\"workers\":$workers,\"master_rss_started_bytes\":$rss_started,\"master_rss_with_workers_bytes\":$rss_workers,\"pages\":$pages,\"listed\":$listed,\"walk_seconds\":$walk_s,\"master_rss_after_walk_bytes\":$rss_listed,\"master_peak_rss_bytes\":$hwm,\"heartbeats\":$hb_line}"
