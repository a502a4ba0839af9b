#!/usr/bin/env bash
# The heartbeat path over mTLS against plain text, in one run: a plain-text master (--insecure)
# and a secure one (mTLS for workers), each on loopback with free ports and its own data folder,
# get the same heartbeat load in alternation (ABBA order), ROUNDS rounds, with one connection per
# worker on both sides (each mTLS worker first joins for a certificate of its own).
#   scripts/bench-tls.sh [BINARY] [WORKERS] [DURATION] > summary.json
# Every run's JSON goes to stderr as it ends; stdout gets one line: each side's medians (p99,
# master CPU µs per heartbeat, ...) and the TLS/plain ratios, against the targets of issue 11.
# Env: ROUNDS (3), INTERVAL (1s), MASTER_CPUS and BENCH_CPUS (taskset lists; default unpinned).
set -euo pipefail
bin=$(realpath "${1:-target/release/cloudai}")
workers=${2:-10000}
duration=${3:-30s}
rounds=${ROUNDS:-3}
interval=${INTERVAL:-1s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# Each process holds one descriptor per worker connection, plus its files.
need=$((workers + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  echo "bench-tls: $workers workers need $need file descriptors per process; the hard limit (ulimit -Hn) is $hard" >&2
  exit 1
fi
ulimit -n "$hard"

master_pin=()
bench_pin=()
[ -n "${MASTER_CPUS:-}" ] && master_pin=(taskset -c "$MASTER_CPUS")
[ -n "${BENCH_CPUS:-}" ] && bench_pin=(taskset -c "$BENCH_CPUS")

read -r plain_http plain_grpc tls_http tls_grpc < <(python3 -c '
import socket
held = [socket.socket() for _ in range(4)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in held))')

# start_master NAME HTTP_PORT GRPC_PORT [FLAGS]: sets $pid.
start_master() {
  local name=$1 http=$2 grpc=$3
  shift 3
  HTTP_PORT=127.0.0.1:$http GRPC_PORT=127.0.0.1:$grpc CLOUDAI_DATA_DIR="$work/$name" RUST_LOG=warn \
    "${master_pin[@]}" "$bin" master --no-console "$@" </dev/null >"$work/$name.log" 2>&1 &
  pid=$!
}

# wait_ready NAME PID PORT [FILE]: the gRPC port accepts (and FILE exists), within 30 s.
wait_ready() {
  for _ in $(seq 300); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "bench-tls: the $1 master exited:" >&2
      tail -20 "$work/$1.log" >&2
      exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && { [ -z "${4:-}" ] || [ -s "$4" ]; }; then
      return
    fi
    sleep 0.1
  done
  echo "bench-tls: the $1 master is not listening on $3 after 30 s" >&2
  exit 1
}

start_master plain "$plain_http" "$plain_grpc" --insecure
plain_pid=$pid
start_master tls "$tls_http" "$tls_grpc"
tls_pid=$pid
wait_ready plain "$plain_pid" "$plain_grpc"
wait_ready tls "$tls_pid" "$tls_grpc" "$work/tls/pki/join.token"

run() { # SIDE ROUND
  local args
  if [ "$1" = plain ]; then
    args=(--master "http://127.0.0.1:$plain_grpc" --connection-per-worker --master-pid "$plain_pid")
  else
    # The master's own secret file: the bench reads the CA fingerprint from ca.crt beside it.
    args=(--master "https://127.0.0.1:$tls_grpc" --join-token-file "$work/tls/pki/join.token"
      --master-pid "$tls_pid")
  fi
  local line
  if ! line=$("${bench_pin[@]}" "$bin" bench heartbeats "${args[@]}" --workers "$workers" \
    --interval "$interval" --duration "$duration" 2>"$work/bench.err" | tail -1) || [ -z "$line" ]; then
    echo "bench-tls: the $1 run failed:" >&2
    cat "$work/bench.err" >&2
    exit 1
  fi
  echo "{\"round\":$2,\"side\":\"$1\",\"result\":$line}" | tee -a "$work/runs.jsonl" >&2
}

for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
  for side in $order; do
    run "$side" "$round"
  done
done

jq -s -c --arg workers "$workers" --arg interval "$interval" --arg duration "$duration" '
  def median: sort as $s | ($s | length) as $n
    | if $n == 0 then null elif $n % 2 == 1 then $s[($n - 1) / 2] else ($s[$n / 2 - 1] + $s[$n / 2]) / 2 end;
  def side($name): map(select(.side == $name) | .result);
  def summary: {
    p99_ms: (map(.p99_ms) | median), p99_ms_runs: map(.p99_ms),
    p50_ms: (map(.p50_ms) | median),
    cpu_us_per_heartbeat: (map(.master_cpu_us_per_heartbeat) | median),
    cpu_us_per_heartbeat_runs: map(.master_cpu_us_per_heartbeat),
    heartbeats_per_sec: (map(.heartbeats_per_sec) | median),
    errors: (map(.errors + .register_errors + (.join_errors // 0)) | add),
    rss_per_idle_worker_bytes: (map(.master_rss_per_idle_worker_bytes) | median),
    connect_register_seconds: (map(.connect_register_seconds) | median),
    join_seconds: (map(.join_seconds) | if all(. == null) then null else median end),
    master_cpu_us_per_join: (map(.master_cpu_us_per_join) | if all(. == null) then null else median end)
  };
  (side("plain") | summary) as $plain | (side("tls") | summary) as $tls
  | ($tls.cpu_us_per_heartbeat / $plain.cpu_us_per_heartbeat) as $cpu_ratio
  | {
      bench: "heartbeats_tls_vs_plain", workers: ($workers | tonumber), interval: $interval,
      duration: $duration, rounds: (length / 2), connections: "one per worker",
      plain: $plain, tls: $tls,
      cpu_ratio: $cpu_ratio, p99_ratio: ($tls.p99_ms / $plain.p99_ms),
      p99_target_met: ($tls.p99_ms < 5), cpu_target_met: ($cpu_ratio <= 1.3)
    }' "$work/runs.jsonl"
