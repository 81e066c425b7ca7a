#!/usr/bin/env python3
"""What `compression: zstd` on a filesystem store costs and saves: a compressible blob (the
machine's shared libraries concatenated) uploaded to and downloaded from a store with
`compression: none` and one with `zstd`, with the server's CPU time (from /proc/PID/stat)
and the bytes on disk. Usage: APUS_BIN=.build/release/apus python3 Benchmarks/store_compression.py [MiB] [responses]
(`responses`: what `response_compression` costs and saves on a download instead)."""
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
from reapi import bs_grpc, bs_pb2, digest, download, upload  # noqa: E402

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
            d = digest(data)
            stream = bs_grpc.ByteStreamStub(ch).Read(bs_pb2.ReadRequest(
                resource_name=f"compressed-blobs/zstd/{d.hash}/{d.size_bytes}"))
            wire = sum(len(r.data) for r in stream)
            c3, t3 = cpu_seconds(apus.proc.pid), time.time()
        gb = len(data) / 1e9
        return {"compression": compression, "level": level, "on_disk": disk_bytes(os.path.join(root, "content")),
                "upload_cpu_s_per_gb": (c1 - c0) / gb, "upload_s": t1 - t0,
                "download_cpu_s_per_gb": (c2 - c1) / gb, "download_s": t2 - t1,
                "zstd_download_cpu_s_per_gb": (c3 - c2) / gb, "zstd_download_s": t3 - t2,
                "zstd_download_wire_bytes": wire}
    finally:
        apus.stop()


def responses(data, work):
    """A ByteStream download through curl (which offers what it is told) from a memory store
    with `response_compression` on: server CPU and bytes on the wire per encoding."""
    cfg = cache_config({"memory": {"max_bytes": 1 << 30}},
                       response_compression={"min_bytes": 1024, "encodings": ["zstd", "gzip"]})
    apus = ApusProcess(cfg, work).start()
    try:
        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, data, chunk=1 << 20)
        d = digest(data)
        request = os.path.join(work, "read.bin")
        message = bs_pb2.ReadRequest(resource_name=f"blobs/{d.hash}/{d.size_bytes}").SerializeToString()
        with open(request, "wb") as f:
            f.write(bytes([0]) + len(message).to_bytes(4, "big") + message)
        for accept in ("identity", "gzip", "zstd"):
            body = os.path.join(work, "body.bin")
            c0, t0 = cpu_seconds(apus.proc.pid), time.time()
            subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-X", "POST", "--data-binary", f"@{request}",
                            "-H", "content-type: application/grpc", "-H", "te: trailers",
                            "-H", f"grpc-accept-encoding: {accept}", "-o", body,
                            f"http://127.0.0.1:{apus.port}/google.bytestream.ByteStream/Read"], check=True)
            c1, t1 = cpu_seconds(apus.proc.pid), time.time()
            gb = len(data) / 1e9
            print(json.dumps({"response_encoding": accept, "wire_bytes": os.path.getsize(body),
                              "cpu_s_per_gb": round((c1 - c0) / gb, 2), "seconds": round(t1 - t0, 2)}))
    finally:
        apus.stop()


def main():
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 256 << 20
    data = blob(size)
    if "responses" in sys.argv[2:]:
        with tempfile.TemporaryDirectory() as work:
            responses(data, work)
        return
    runs = int(os.environ.get("RUNS", "3"))
    print(f"blob: {len(data)} bytes of shared libraries; median of {runs} runs")
    for compression, level in [("none", 0), ("zstd", 1), ("zstd", 3)]:
        samples = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as work:
                samples.append(measure(data, compression, level, work))
        row = {k: (sorted(s[k] for s in samples)[len(samples) // 2] if isinstance(v, float) else v)
               for k, v in samples[0].items()}
        row["ratio"] = round(len(data) / row["on_disk"], 2)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
