"""Scenario: zstd on the wire. ByteStream upload and download of one compressible blob (the
machine's shared libraries concatenated) to the memory store, uncompressed (`blobs/…`) and
compressed (`compressed-blobs/zstd/…`), with the bytes on the wire and the server's CPU.

The client is h2load with prepared bodies, as in the large-blob scenario: the compressed
upload body is compressed once beforehand (zstd level 1, python-zstandard) and not timed, so
the rows measure the server decompressing, hashing and storing, or reading and compressing.
Each upload is a fresh blob (its first 64 bytes random), checked with FindMissingBlobs."""
import glob
import hashlib
import os
import statistics

import grpc
import zstandard

from common import bs_pb2, fmt, frame, re_grpc, re_pb2, start_apus
from large_blobs import CHUNK, READ, WRITE, Transfer, write_body

LIBRARIES = "/usr/lib/x86_64-linux-gnu/*.so*"


def corpus(size):
    """`size` bytes of shared libraries, repeated if the machine has fewer."""
    out = bytearray()
    paths = sorted(p for p in glob.glob(LIBRARIES) if os.path.isfile(p))
    while len(out) < size and paths:
        for p in paths:
            with open(p, "rb") as f:
                out += f.read(size - len(out))
            if len(out) >= size:
                break
    if len(out) < size:  # no libraries at all: compressible text
        out += b"".join(b"%09d compiling file_%d.cc\n" % (i, i % 97) for i in range(size // 20 + 1))
    return bytes(out[:size])


def compressed_body(path, data, digest_hash):
    """A compressed Write of `data`: 1 MiB messages of one level-1 frame, offsets counting
    compressed bytes. Returns the compressed size."""
    name = f"uploads/bench/compressed-blobs/zstd/{digest_hash}/{len(data)}"
    chunker = zstandard.ZstdCompressor(level=1).chunker(size=len(data), chunk_size=CHUNK)
    pieces = []
    for i in range(0, len(data), 8 * CHUNK):
        pieces.extend(chunker.compress(data[i:i + 8 * CHUNK]))
    pieces.extend(chunker.finish())
    offset = 0
    with open(path, "wb") as f:
        for i, piece in enumerate(pieces):
            req = bs_pb2.WriteRequest(resource_name=name if i == 0 else "", write_offset=offset,
                                      data=piece, finish_write=i == len(pieces) - 1)
            f.write(frame(req.SerializeToString()))
            offset += len(piece)
    return offset


def compressed_read_bytes(port, h, size):
    """What a compressed download puts on the wire (ReadResponse data bytes)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stream = ch.unary_stream(READ, request_serializer=lambda r: r.SerializeToString(),
                                 response_deserializer=bs_pb2.ReadResponse.FromString)
        return sum(len(r.data) for r in stream(bs_pb2.ReadRequest(
            resource_name=f"compressed-blobs/zstd/{h}/{size}")))


def per_core(fig):
    """Median MB/s of uncompressed data per server CPU core (NaN when the server's CPU time
    did not move, as in smoke runs)."""
    rates = [s / c for s, c in zip(fig.samples, fig.server_cpu) if c > 0]
    return statistics.median(rates) if rates else float("nan")


def run(ctx):
    size = ctx.large_blob_bytes if ctx.mode == "smoke" else 256 << 20
    mib = size >> 20
    base = corpus(size)
    figures = {k: Transfer("compression", f"{k}", "MB/s") for k in
               ("uncompressed upload", "zstd upload", "uncompressed download", "zstd download")}
    wire = {}
    body = os.path.join(ctx.work, "write.body")
    read = os.path.join(ctx.work, "read.body")
    with start_apus(ctx.apus, ctx.work, {"memory": {"max_bytes": 16 << 30}}, name="apus-zstd") as server:
        for _ in range(ctx.runs):
            for compressed in (False, True):
                data = os.urandom(64) + base[64:]
                h = hashlib.sha256(data).hexdigest()
                if compressed:
                    wire["zstd upload"] = compressed_body(body, data, h)
                else:
                    write_body(body, data, h)
                    wire["uncompressed upload"] = size
                del data
                kind = "zstd" if compressed else "uncompressed"
                figures[f"{kind} upload"].time(server, size, WRITE, body)
                os.unlink(body)
                with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                    missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
                        re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash=h, size_bytes=size)]))
                    if missing.missing_blob_digests:
                        raise RuntimeError(f"{kind}: the uploaded blob is not in the CAS")
                prefix = "compressed-blobs/zstd" if compressed else "blobs"
                with open(read, "wb") as f:
                    f.write(frame(bs_pb2.ReadRequest(resource_name=f"{prefix}/{h}/{size}").SerializeToString()))
                figures[f"{kind} download"].time(server, size, READ, read, 0 if compressed else size)
                wire[f"{kind} download"] = compressed_read_bytes(server.port, h, size) if compressed else size

    rows = []
    for name, fig in figures.items():
        fig.note = f"{mib} MiB of shared libraries; MB/s of uncompressed data"
        ctx.add(fig)
        cores = statistics.median(fig.server_cpu)
        rows.append([name, f"{wire[name] / (1 << 20):,.1f}", f"{size / wire[name]:.2f}×", fmt(fig.min),
                     fmt(fig.median), fmt(fig.max), f"{cores:.2f}", fmt(per_core(fig))])
        ctx.ratio(f"compression: {name} MB/s per server core", per_core(fig))
    zstd_up = figures["zstd upload"]
    ctx.table(f"Compression: ByteStream {mib} MiB of shared libraries, memory store, h2load, {ctx.runs} runs "
              "(zstd level 1 both ways)",
              ["transfer", "wire MiB", "ratio", "min MB/s", "median MB/s", "max MB/s", "server CPU cores",
               "MB/s per server core"], rows,
              ["MB/s count uncompressed bytes; server CPU from /proc/PID/stat over the transfer."])
    ctx.target("zstd upload ≥ 300 MB/s of uncompressed data per server core", per_core(zstd_up), 300, " MB/s",
               f"{zstd_up.median:,.0f} MB/s at {statistics.median(zstd_up.server_cpu):.2f} cores")
