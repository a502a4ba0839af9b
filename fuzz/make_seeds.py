#!/usr/bin/env python3
"""Writes the committed seed inputs, seeds/<target>/*: valid messages and requests, so the
fuzzer starts from what a real worker or client sends. Protobuf is encoded by hand from
proto/cloudai/v1/cloudai.proto (field numbers below). Run from fuzz/: python3 make_seeds.py"""
import os, struct, shutil

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def key(field, wire): return varint(field << 3 | wire)
def u(field, n): return key(field, 0) + varint(n)
def d(field, x): return key(field, 1) + struct.pack("<d", x)
def s(field, v):
    v = v.encode() if isinstance(v, str) else v
    return key(field, 2) + varint(len(v)) + v
def m(field, *parts): return s(field, b"".join(parts))
def packed(field, ns): return s(field, b"".join(varint(n) for n in ns))

W = "fuzz-worker"
T = "placed"  # the harness replaces it with the task placed on W
NOW = 1_790_000_000_000
# A P-256 CSR as a worker makes it (`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1`).
CSR = """-----BEGIN CERTIFICATE REQUEST-----
MIHJMHECAQAwDzENMAsGA1UEAwwEc2VlZDBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABH4zeuORS1IvNHvcZ/to3GqhP5gpjmDZ/MYlG4Ys4R4KrexXXpCJ6yUlT6jl
dl6MXTnHXfoqlOhUBOZJS7J+bhCgADAKBggqhkjOPQQDAgNIADBFAiAos0n3lFT7
BDDJpxpBYrCsJ+O7bee5/P0tnRqyrcbG8wIhAPLM6m7GIXdym/J0GC+ZTs6/Qcz2
ZoND5H13opSsVciI
-----END CERTIFICATE REQUEST-----
"""

running = m(10, s(1, T), u(6, 2), d(3, 50.0), u(4, 1 << 20), u(5, NOW // 1000))
register = b"".join([
    s(1, W), s(2, "host-1"), d(3, 8.0), u(4, 16384),
    m(5, u(1, 0), s(2, "GPU-0000"), s(3, "A100"), u(4, 81920)),
    m(6, s(1, "zone"), s(2, "a")), s(7, "0.1.0"), u(8, 2), packed(11, [1, 2]), running,
])
register_other = s(1, "worker-2") + d(3, 2.0) + u(4, 2048) + u(8, 2) + packed(11, [1])
register_old = s(1, "worker-3") + u(8, 1)
heartbeat = b"".join([
    s(1, W), u(2, NOW), d(3, 0.5), d(4, 0.25), d(5, 0.75), u(6, 4096), u(7, 16384),
    m(8, u(1, 0), d(4, 75.0), u(5, 1000), u(6, 81920), d(7, 61.0), d(8, 250.0), u(9, 12345),
      u(10, 1410), u(11, 1215), u(12, 0)),
    m(9, s(1, T), u(6, 2), d(3, 50.0), u(4, 1 << 20), u(5, NOW // 1000)),
])

def report(update): return s(1, W) + s(2, T) + u(3, 1) + u(7, NOW) + update
reports = {
    "running": report(m(9, u(1, 2))),
    "queued": report(m(9, u(1, 1))),
    "completed": report(m(9, u(1, 3), u(2, 0))),
    "failed": report(m(9, u(1, 4), u(2, 1), s(3, "exit 1"))),
    "cancelled": report(m(9, u(1, 5), s(3, "cancelled"))),
    "progress": report(m(10, s(1, "pulling image"))),
}
logs = s(1, W) + m(2, s(1, T), u(5, 1), s(3, b"step 1\n"), u(4, NOW)) + m(2, s(1, T), u(5, 2), s(3, b"oops\n"), u(4, NOW + 1))

seeds = {
    "grpc_register_worker": {"full": register, "small": register_other, "old-protocol": register_old},
    "grpc_unregister_worker": {"other": s(1, "worker-2"), "unknown": s(1, "nobody")},
    "grpc_heartbeat": {"full": heartbeat, "bare": s(1, W) + u(2, NOW)},
    "grpc_stream_commands": {"ours": s(1, W), "unknown": s(1, "nobody")},
    "grpc_task_status": reports,
    "grpc_ship_logs": {"two-chunks": logs},
    "grpc_join": {"with-secret": s(2, "joining-1") + s(3, CSR), "wrong-secret": s(1, "nope") + s(2, "joining-2") + s(3, CSR)},
    "grpc_renew": {"csr": s(1, CSR)},
}
# grpc_wire: method index, encoding index, framing, payload (see grpc_wire.rs).
wire = seeds["grpc_wire"] = {}
for i, payload in enumerate([register, s(1, "worker-2"), heartbeat, reports["running"], logs, s(2, "j") + s(3, CSR), s(1, CSR)]):
    wire[f"method-{i}"] = bytes([i, 0, 0]) + payload
wire["gzip"] = bytes([2, 1, 1]) + heartbeat
wire["zstd"] = bytes([2, 2, 1]) + heartbeat
wire["raw-frame"] = bytes([2, 0, 3]) + b"\x00" + struct.pack(">I", len(heartbeat)) + heartbeat

task = b'{"driver":"process","command":["sh","-c","echo hi"],"cpu_required":0.5,"memory_required":64,"env":{"A":"1"},"priority":1,"max_retries":2}'
docker = b'{"driver":"docker","docker_image":"busybox:latest","command":["true"],"cpu_required":1,"memory_required":128,"gpu_required":0}'
seeds["http_body"] = {
    "task": b"\x00\x00" + task,
    "docker-task": b"\x00\x00" + docker,
    "token": b"\x04\x00" + b'{"name":"ci-bot","role":"reader"}',
    "rotate": b"\x05\x00",
    "revoke": b"\x06\x00",
}
FF = b"\xff"
seeds["http_query"] = {
    "tasks-page": b"\x08" + FF + b"status=running&limit=10&order=newest&brief=true",
    "tasks-after": b"\x08" + FF + b"order=oldest&limit=2",
    "task": b"\x0a" + b"placed",
    "events": b"\x0b" + b"placed",
    "logs-tail": b"\x0c" + b"placed" + FF + b"tail=5",
    "worker-metrics": b"\x06" + W.encode() + FF + b"since=15m&step=1m&fields=cpu_usage,memory_usage",
    "worker-tasks": b"\x07" + W.encode() + FF + b"limit=5",
    "telemetry": b"\x02" + W.encode(),
    "audit": b"\x0f" + FF + b"limit=5&before=10",
    "alerts": b"\x0d" + FF + b"status=firing",
    "cancel": b"\x14" + b"placed",
}

shutil.rmtree("seeds", ignore_errors=True)
for target, files in seeds.items():
    os.makedirs(f"seeds/{target}", exist_ok=True)
    for name, data in files.items():
        with open(f"seeds/{target}/{name}", "wb") as f:
            f.write(data)
print(sum(len(f) for f in seeds.values()), "seeds in", len(seeds), "targets")
