#!/usr/bin/env bash
# Runs the three benches with two cloudai binaries, alternating, three rounds, and prints one
# JSON line per run: scripts/bench-before-after.sh OLD_BINARY NEW_BINARY > runs.jsonl
# Each line: {"round":N,"binary":"before"|"after","bench":NAME,"result":<the bench's last line>}.
set -euo pipefail
before=$(realpath "$1")
after=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in 1 2 3; do
  for which in before after; do
    bin=${!which}
    HTTP_PORT=127.0.0.1:0 GRPC_PORT=127.0.0.1:15951 CLOUDAI_DATA_DIR="$work/hb-$which-$round" RUST_LOG=warn \
      taskset -c 0 "$bin" master --no-console >/dev/null 2>&1 &
    pid=$!
    sleep 2
    line=$(taskset -c 1 "$bin" bench heartbeats --master http://127.0.0.1:15951 --workers 10000 \
      --interval 1s --duration 30s --master-pid "$pid" 2>/dev/null | tail -1)
    echo "{\"round\":$round,\"binary\":\"$which\",\"bench\":\"heartbeats\",\"result\":$line}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    HTTP_PORT=127.0.0.1:18480 GRPC_PORT=127.0.0.1:18451 CLOUDAI_DATA_DIR="$work/dev-$which-$round" RUST_LOG=warn \
      "$bin" dev --no-console >/dev/null 2>&1 &
    pid=$!
    sleep 3
    line=$("$bin" bench tasks --api http://127.0.0.1:18480 --tasks 2000 --concurrency 32 2>/dev/null | tail -1)
    echo "{\"round\":$round,\"binary\":\"$which\",\"bench\":\"tasks\",\"result\":$line}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    line=$("$bin" bench scheduler --workers 10000 --tasks 100000 2>/dev/null | tail -1)
    echo "{\"round\":$round,\"binary\":\"$which\",\"bench\":\"scheduler\",\"result\":$line}"
  done
done
