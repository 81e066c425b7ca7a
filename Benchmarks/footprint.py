"""Scenario 5: what an index costs. Server RSS after storing N small blobs in the memory store
(bytes per entry, and per entry beyond the payload), and how long a filesystem store takes to
come back up with N blobs on disk (the start-up scan rebuilds its index from the files).

Blobs are 100 distinct bytes each, uploaded with BatchUpdateBlobs of 1,000 from a few client
threads; a sample is checked with FindMissingBlobs after the upload and after each restart."""
import concurrent.futures
import hashlib
import os
import random
import shutil
import time

import grpc

from common import Figure, fmt, re_pb2, start_apus

BLOB_BYTES = 100
BATCH = 1000
UPDATE = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"
FIND = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"


def blob(i):
    return i.to_bytes(8, "big") + b"apus footprint benchmark blob ".ljust(BLOB_BYTES - 8, b".")


def digest(data):
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def upload(port, n):
    """Stores blobs 0..n-1; returns seconds taken."""

    def send(start):
        req = re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(blob(i)), data=blob(i))
            for i in range(start, min(n, start + BATCH))])
        raw = ch.unary_unary(UPDATE)(req.SerializeToString(), timeout=120)
        codes = {r.status.code for r in re_pb2.BatchUpdateBlobsResponse.FromString(raw).responses}
        if codes != {0}:
            raise RuntimeError(f"BatchUpdateBlobs answered codes {codes}")

    options = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(0, n, BATCH)))
        return time.perf_counter() - t0


def check_present(port, n):
    sample = random.Random(n).sample(range(n), min(n, 1000))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        raw = ch.unary_unary(FIND)(re_pb2.FindMissingBlobsRequest(
            blob_digests=[digest(blob(i)) for i in sample]).SerializeToString())
    missing = re_pb2.FindMissingBlobsResponse.FromString(raw).missing_blob_digests
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(sample)} sampled blobs are missing")


def run(ctx):
    n, nfs = ctx.footprint_blobs, ctx.fs_blobs
    with start_apus(ctx.apus, ctx.work, {"memory": {}}, name="apus-footprint") as server:
        upload(server.port, BATCH)  # the first batch warms allocator pools and connections
        before = server.rss_bytes()
        seconds = upload(server.port, n)
        check_present(server.port, n)
        after = server.rss_bytes()
    per_entry = (after - before) / n
    mem_total = ctx.add(Figure("footprint", f"memory store RSS per blob ({BLOB_BYTES} B blobs)", "bytes",
                               [per_entry], f"{n:,} blobs; RSS {before >> 20} → {after >> 20} MiB"))
    mem_index = ctx.add(Figure("footprint", "memory store RSS per blob beyond its payload", "bytes",
                               [per_entry - BLOB_BYTES]))
    mem_rate = ctx.add(Figure("footprint", "memory store ingest (BatchUpdateBlobs of 1,000)", "blobs/s",
                              [n / seconds]))

    root = os.path.join(ctx.work, "footprint-fs")
    cas = {"filesystem": {"path": root}}
    with start_apus(ctx.apus, ctx.work, cas, name="apus-footprint-fs") as server:
        seconds = upload(server.port, nfs)
    fs_rate = ctx.add(Figure("footprint", "filesystem store ingest (BatchUpdateBlobs of 1,000)", "blobs/s",
                             [nfs / seconds]))
    restart = ctx.add(Figure("footprint", f"filesystem store restart with {nfs:,} blobs (exec → listening)", "s"))
    fs_index = ctx.add(Figure("footprint", "filesystem store RSS after restart, per blob", "bytes"))
    for _ in range(ctx.runs):
        with start_apus(ctx.apus, ctx.work, cas, name="apus-footprint-fs") as server:
            restart.samples.append(server.startup_seconds)
            fs_index.samples.append(server.rss_bytes() / nfs)
            check_present(server.port, nfs)
    shutil.rmtree(root, ignore_errors=True)

    figures = [mem_total, mem_index, mem_rate, fs_rate, restart, fs_index]
    ctx.table(f"Footprint: {n:,} blobs in the memory store, {nfs:,} in the filesystem store",
              ["measure", "min", "median", "max", "unit"],
              [[f.name, fmt(f.min), fmt(f.median), fmt(f.max), f.unit] for f in figures],
              [f"memory store RSS {before / 2**20:.0f} MiB before, {after / 2**20:.0f} MiB after "
               f"({n:,} × {BLOB_BYTES} B = {n * BLOB_BYTES / 2**20:.0f} MiB of payload)",
               "The filesystem store's RSS per blob is the whole process divided by the blob count."])
    ctx.target("≤ 200 bytes of RSS per cached entry in the memory store index", mem_index.median, 200,
               " bytes", f"beyond the {BLOB_BYTES} B payload, {n:,} entries", higher_is_better=False)
