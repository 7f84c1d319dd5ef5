#!/usr/bin/env python3
"""wait_progress.py SOCKET JOB FRACTION [TIMEOUT_S]: waits until the job has uploaded at least
FRACTION of its bytes (or has ended), reading GET /v1/jobs/JOB on hoistd's Unix socket.
Prints the fraction reached; exits 1 on timeout. Used by the demo and the benchmark to kill
the daemon mid-push."""
import json
import socket
import sys
import time

sock_path, job, fraction = sys.argv[1], sys.argv[2], float(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0


def get(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: hoist\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, body = data.split(b"\r\n\r\n", 1)
    if b"chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, rest = rest.split(b"\r\n", 1)
            n = int(size_line, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return json.loads(body)


deadline = time.time() + timeout
while time.time() < deadline:
    j = get(f"/v1/jobs/{job}")
    blobs = j.get("blobs", [])
    total = sum(b.get("pushed_size_bytes") or b["size_bytes"] for b in blobs)
    done = sum(min(b["uploaded_bytes"], b.get("pushed_size_bytes") or b["size_bytes"]) for b in blobs)
    reached = done / total if total else 0.0
    if j["state"] in ("done", "failed", "cancelled") or reached >= fraction:
        print(f"{reached:.2f}")
        sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
