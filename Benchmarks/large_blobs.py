"""Scenario 1: ByteStream upload and download of one large blob, per store, beside the
machine's single-core SHA-256 speed.

The client is h2load (C, nghttp2): it posts a prepared body of framed 1 MiB WriteRequests and
reads a whole ReadResponse stream, so the figures are the server's, not a Python client's.
Every upload is a fresh random blob (no "already stored" shortcut) and is checked with
FindMissingBlobs before its download is timed."""
import hashlib
import os
import re

import grpc

from common import Figure, bs_pb2, fmt, frame, h2load, h2load_seconds, re_grpc, re_pb2, start_apus, start_buildgrid

CHUNK = 1024 * 1024
WRITE = "/google.bytestream.ByteStream/Write"
READ = "/google.bytestream.ByteStream/Read"


def write_body(path, data, digest_hash):
    name = f"uploads/bench/blobs/{digest_hash}/{len(data)}"
    with open(path, "wb") as f:
        for offset in range(0, len(data), CHUNK):
            piece = data[offset:offset + CHUNK]
            req = bs_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset,
                                      data=piece, finish_write=offset + len(piece) == len(data))
            f.write(frame(req.SerializeToString()))


def transfer_seconds(port, path, body, expect_data_at_least=0):
    out, _ = h2load(f"http://127.0.0.1:{port}{path}", body, "-n1", "-c1", "-m1", "-w30", "-W30")
    if "1 succeeded" not in out:
        raise RuntimeError(f"{path} failed:\n{out}")
    data = re.search(r"traffic: .*\((\d+)\) data", out)
    if data and int(data.group(1)) < expect_data_at_least:
        raise RuntimeError(f"{path} returned {data.group(1)} bytes, expected ≥ {expect_data_at_least}")
    return h2load_seconds(out)


def measure(ctx, server, label, size):
    up = Figure("large blobs", f"{label} upload (verified)", "MB/s")
    down = Figure("large blobs", f"{label} download", "MB/s")
    body = os.path.join(ctx.work, "write.body")
    read = os.path.join(ctx.work, "read.body")
    for _ in range(ctx.runs):
        data = os.urandom(size)
        h = hashlib.sha256(data).hexdigest()
        write_body(body, data, h)
        del data
        up.samples.append(size / transfer_seconds(server.port, WRITE, body) / 1e6)
        os.unlink(body)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
                re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash=h, size_bytes=size)]))
            if missing.missing_blob_digests:
                raise RuntimeError(f"{label}: the uploaded blob is not in the CAS")
        with open(read, "wb") as f:
            f.write(frame(bs_pb2.ReadRequest(resource_name=f"blobs/{h}/{size}").SerializeToString()))
        down.samples.append(size / transfer_seconds(server.port, READ, read, size) / 1e6)
    return up, down


def run(ctx):
    size = ctx.large_blob_bytes
    mib = size >> 20
    sha = ctx.sha256_mbps
    stores = {
        "memory": {"memory": {"max_bytes": 16 << 30}},
        "filesystem": {"filesystem": {"path": os.path.join(ctx.work, "fs-cas"), "max_bytes": 64 << 30}},
    }
    results = {}
    for label, cas in stores.items():
        with start_apus(ctx.apus, ctx.work, cas, name=f"apus-{label}") as server:
            results[label] = measure(ctx, server, f"apus {label}", size)
    if ctx.peer:
        with start_buildgrid(ctx.work) as server:
            results["buildgrid"] = measure(ctx, server, "BuildGrid (memory)", size)

    rows, notes = [], []
    for label, (up, down) in results.items():
        for fig in (up, down):
            fig.note = f"{mib} MiB blob"
            ctx.add(fig)
            rows.append([fig.name, fmt(fig.min), fmt(fig.median), fmt(fig.max), f"{fig.median / sha:.2f}×"])
    if "buildgrid" in results:
        for i, kind in enumerate(("upload", "download")):
            ratio = results["memory"][i].median / results["buildgrid"][i].median
            notes.append(f"apus memory / BuildGrid, {kind}: **{ratio:.1f}×**")
            ctx.ratio(f"large blob {kind}: apus memory / BuildGrid", ratio)
    ctx.table(f"Large blobs: ByteStream, {mib} MiB blob, h2load as the client, {ctx.runs} runs; "
              f"openssl speed -evp sha256 (one core) = {sha:,.0f} MB/s",
              ["server, transfer", "min MB/s", "median MB/s", "max MB/s", "median / SHA-256"], rows, notes)
    up, down = results["memory"]
    ctx.target("verified upload ≥ 0.8× single-core SHA-256", up.median / sha, 0.8, "×",
               f"memory store: {up.median:,.0f} MB/s")
    ctx.target("download from the memory store ≥ 2× single-core SHA-256", down.median / sha, 2.0, "×",
               f"{down.median:,.0f} MB/s")
