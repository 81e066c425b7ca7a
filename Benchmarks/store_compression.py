#!/usr/bin/env python3
"""What `compression: zstd` on a filesystem store costs and saves: a compressible blob (the
machine's shared libraries concatenated) uploaded to and downloaded from a store with
`compression: none` and one with `zstd`, with the server's CPU time (from /proc/PID/stat)
and the bytes on disk. Usage: APUS_BIN=.build/release/apus python3 Benchmarks/store_compression.py [MiB]"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import grpc  # noqa: E402

from conftest import ApusProcess, cache_config  # noqa: E402
from reapi import digest, download, upload  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def blob(size):
    out = bytearray()
    for path in sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")):
        if len(out) >= size:
            break
        if os.path.isfile(path) and not os.path.islink(path):
            out += open(path, "rb").read()
    return bytes(out[:size])


def disk_bytes(root):
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(root) for n in ns)


def measure(data, compression, level, work):
    root = os.path.join(work, f"cas-{compression}-{level}")
    spec = {"path": root, "sync": "none"}
    if compression == "zstd":
        spec.update(compression="zstd", compression_level=level)
    apus = ApusProcess(cache_config({"filesystem": spec}), work).start()
    try:
        opts = [("grpc.max_receive_message_length", 64 << 20)]
        with grpc.insecure_channel(apus.address, options=opts) as ch:
            c0, t0 = cpu_seconds(apus.proc.pid), time.time()
            upload(ch, data, chunk=1 << 20)
            c1, t1 = cpu_seconds(apus.proc.pid), time.time()
            assert len(download(ch, digest(data))) == len(data)
            c2, t2 = cpu_seconds(apus.proc.pid), time.time()
        gb = len(data) / 1e9
        return {"compression": compression, "level": level, "on_disk": disk_bytes(os.path.join(root, "content")),
                "upload_cpu_s_per_gb": (c1 - c0) / gb, "upload_s": t1 - t0,
                "download_cpu_s_per_gb": (c2 - c1) / gb, "download_s": t2 - t1}
    finally:
        apus.stop()


def main():
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 256 << 20
    data = blob(size)
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(data, "none", 0, work), measure(data, "zstd", 1, work), measure(data, "zstd", 3, work)]
    print(f"blob: {len(data)} bytes of shared libraries")
    for r in rows:
        r["ratio"] = len(data) / r["on_disk"]
        print(json.dumps(r))


if __name__ == "__main__":
    main()
