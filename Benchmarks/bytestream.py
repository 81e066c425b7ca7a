#!/usr/bin/env python3
"""ByteStream throughput benchmark: upload and download of one large blob against the
memory and filesystem stores, beside `openssl speed -evp sha256` measured in the same run.

The load generator is h2load (nghttp2-client, written in C): it posts a prepared gRPC body
(the framed WriteRequests) and reads a whole ReadResponse stream, so the client's own cost
stays small and is not Apus code. Each upload is a fresh random blob, so no run hits the
"already stored" shortcut. Prints a Markdown table; figures are not asserted.

With --s3, the same transfers also run against an `s3` store backed by moto_server on
loopback (a Python S3 implementation: its own speed bounds that row, so read it as "Apus
plus this S3 server", not as what AWS would give).

Usage: Benchmarks/bytestream.py [--mib 256] [--runs 3] [--s3] [--apus .build/release/apus]
"""
import argparse
import hashlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from reapi import bs_pb2, re_grpc, re_pb2  # noqa: E402

import grpc  # noqa: E402

CHUNK = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


def write_body(path, data, digest_hash):
    name = f"uploads/bench/blobs/{digest_hash}/{len(data)}"
    with open(path, "wb") as f:
        for offset in range(0, len(data), CHUNK):
            piece = data[offset:offset + CHUNK]
            req = bs_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset,
                                      data=piece, finish_write=offset + len(piece) == len(data))
            f.write(frame(req.SerializeToString()))


def h2load(port, path, body):
    cmd = ["h2load", "-n1", "-c1", "-m1", "-w30", "-W30", "-d", body,
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"finished in ([\d.]+)(ms|s|us)", out)
    seconds = float(m.group(1)) / {"s": 1, "ms": 1e3, "us": 1e6}[m.group(2)]
    if "1 succeeded" not in out:
        raise RuntimeError(out)
    return seconds


def openssl_sha256_mbps():
    out = subprocess.run(["openssl", "speed", "-evp", "sha256", "-seconds", "2", "-bytes", "16384"],
                         capture_output=True, text=True, check=True).stdout
    kbps = float(re.search(r"sha256\s+([\d.]+)k", out).group(1))
    return kbps * 1000 / 1e6


def disk_write_mbps(directory, size):
    """Writes `size` random bytes in 1 MiB writes to a file in `directory`: the page-cache and
    disk reference for the filesystem store on the same filesystem."""
    data = os.urandom(CHUNK)
    path = os.path.join(directory, "dd.tmp")
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // CHUNK):
            f.write(data)
    seconds = time.perf_counter() - start
    os.unlink(path)
    return size / seconds / 1e6


def start_moto(workdir):
    from s3server import MotoServer
    server = MotoServer(workdir).start()
    server.make_bucket("bench")
    return server


def start_apus(apus, store, workdir, moto=None):
    port = free_port()
    if store == "memory":
        cas = {"memory": {"max_bytes": 8 << 30}}
    elif store == "filesystem":
        cas = {"filesystem": {"path": os.path.join(workdir, "cas"), "max_bytes": 64 << 30}}
    else:
        from s3server import s3_spec
        cas = s3_spec(moto, "bench", "cas/", multipart_threshold_bytes=8 << 20, part_bytes=8 << 20)
    cfg = {"stores": {"cas": cas, "ac": {"memory": {}}},
           "servers": [{"listen": f"127.0.0.1:{port}", "instances": {"": {"cas": "cas", "action_cache": "ac"}}}],
           "global": {"log_level": "warning"}}
    path = os.path.join(workdir, f"{store}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    proc = subprocess.Popen([apus, path])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("apus did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--apus", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "apus"))
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--workdir", help="where the filesystem store lives (default: the temp dir)")
    ap.add_argument("--s3", action="store_true", help="also measure an s3 store on moto_server")
    args = ap.parse_args()
    size = args.mib * 1024 * 1024

    sha = openssl_sha256_mbps()
    rows, figures = [], {"openssl_sha256_MBps": sha, "blob_MiB": args.mib}
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        disk = disk_write_mbps(work, size)
        figures["disk_write_MBps"] = disk
        moto = start_moto(work) if args.s3 else None
        for store in ("memory", "filesystem") + (("s3",) if args.s3 else ()):
            proc, port = start_apus(args.apus, store, work, moto)
            try:
                up, down = [], []
                for run in range(args.runs):
                    data = os.urandom(size)
                    h = hashlib.sha256(data).hexdigest()
                    body = os.path.join(work, "write.body")
                    write_body(body, data, h)
                    del data
                    up.append(size / h2load(port, "/google.bytestream.ByteStream/Write", body) / 1e6)
                    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                        missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
                            re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash=h, size_bytes=size)]))
                        assert not missing.missing_blob_digests, "upload did not land"
                    read = os.path.join(work, "read.body")
                    with open(read, "wb") as f:
                        f.write(frame(bs_pb2.ReadRequest(resource_name=f"blobs/{h}/{size}").SerializeToString()))
                    down.append(size / h2load(port, "/google.bytestream.ByteStream/Read", read) / 1e6)
                    os.unlink(body)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                if store == "s3":
                    moto.stop()
            for kind, xs in (("upload (verified)", up), ("download", down)):
                med = statistics.median(xs)
                rows.append((store, kind, min(xs), med, max(xs), med / sha))
                figures[f"{store}_{kind.split()[0]}_MBps"] = {"min": min(xs), "median": med, "max": max(xs)}

    print(f"\nByteStream, {args.mib} MiB blob, {args.runs} runs; openssl speed -evp sha256 "
          f"(16 KiB blocks, one core): {sha:.0f} MB/s; 1 MiB writes to a file on the "
          f"filesystem store's disk: {disk:.0f} MB/s\n")
    print("| store | transfer | min MB/s | median MB/s | max MB/s | median / SHA-256 |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
