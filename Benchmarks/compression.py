"""Scenario: zstd on the wire and on disk, with one compressible blob (the machine's shared
libraries concatenated) and the server's CPU.

1. Memory store: ByteStream upload and download uncompressed (`blobs/…`) and compressed
   (`compressed-blobs/zstd/…`, compressed per read), with the bytes on the wire; and the
   uncompressed download again from a second listener of the same process with
   `response_compression`, the client offering gzip or zstd in `grpc-accept-encoding`.
2. Filesystem stores with `compression: none`, `zstd` level 1 and level 3 (`sync: none`, to
   measure compression, not the disk): bytes on disk, uncompressed upload and download, and a
   `compressed-blobs` download (from a zstd store: the stored frame, sent as it is), each with
   MB/s and server core-seconds per uncompressed GB.

The client is h2load with prepared bodies, as in the large-blob scenario: the compressed
upload body is compressed once beforehand (zstd level 1, python-zstandard) and not timed, so
the rows measure the server decompressing, hashing and storing, or reading and compressing.
Each upload is a fresh blob (its first 64 bytes random), checked with FindMissingBlobs."""
import glob
import hashlib
import os
import shutil
import statistics

import grpc
import zstandard

from common import bs_pb2, fmt, frame, free_port, re_grpc, re_pb2, start_apus
from large_blobs import CHUNK, READ, WRITE, Transfer, core_seconds_per_gb, write_body

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


def per_core(fig):
    """Median MB/s of uncompressed data per server CPU core (NaN when the server's CPU time
    did not move, as in smoke runs)."""
    rates = [s / c for s, c in zip(fig.samples, fig.server_cpu) if c > 0]
    return statistics.median(rates) if rates else float("nan")



def upload(ctx, server, fig, base, compressed):
    """One timed upload of a fresh copy of `base` (its first 64 bytes random), uncompressed or
    zstd-compressed, checked with FindMissingBlobs. Returns (hash, bytes of the upload's data)."""
    body = os.path.join(ctx.work, "write.body")
    data = os.urandom(64) + base[64:]
    h = hashlib.sha256(data).hexdigest()
    if compressed:
        wire = compressed_body(body, data, h)
    else:
        write_body(body, data, h)
        wire = len(data)
    del data
    fig.time(server, len(base), WRITE, body)
    os.unlink(body)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash=h, size_bytes=len(base))]))
        if missing.missing_blob_digests:
            raise RuntimeError(f"{fig.name}: the uploaded blob is not in the CAS")
    return h, wire


def download(ctx, server, fig, h, size, compressed, base=None, headers=()):
    """One timed ByteStream Read of the whole blob, `compressed-blobs/zstd` or `blobs`; an
    uncompressed read without a response encoding must return at least `size` bytes."""
    read = os.path.join(ctx.work, "read.body")
    prefix = "compressed-blobs/zstd" if compressed else "blobs"
    with open(read, "wb") as f:
        f.write(frame(bs_pb2.ReadRequest(resource_name=f"{prefix}/{h}/{size}").SerializeToString()))
    fig.time(server, size, READ, read, 0 if compressed or headers else size, base=base, headers=headers)


def disk_bytes(root):
    """Bytes of the files under `root` (what a filesystem store's `max_bytes` counts)."""
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names)


def ratio(a, b):
    """a / b, NaN when b is 0."""
    return a / b if b else float("nan")


def memory_store(ctx, size, base):
    """Part 1: the memory store, with a second listener compressing responses."""
    figures = {k: Transfer("compression", k, "MB/s") for k in
               ("uncompressed upload", "zstd upload", "uncompressed download", "zstd download")}
    responses = {enc: Transfer("compression", f"download, response_compression {enc}", "MB/s")
                 for enc in ("gzip", "zstd")}
    wire = {"uncompressed upload": size, "uncompressed download": size}
    port = free_port()
    listener = {"listen": f"127.0.0.1:{port}", "response_compression": {"min_bytes": 1024,
                                                                          "encodings": ["zstd", "gzip"]}}
    with start_apus(ctx.apus, ctx.work, {"memory": {"max_bytes": 16 << 30}}, name="apus-zstd",
                    listeners=[listener]) as server:
        for _ in range(ctx.runs):
            for compressed in (False, True):
                kind = "zstd" if compressed else "uncompressed"
                h, wire[f"{kind} upload"] = upload(ctx, server, figures[f"{kind} upload"], base, compressed)
                download(ctx, server, figures[f"{kind} download"], h, size, compressed)
                if not compressed:
                    for enc, fig in responses.items():
                        download(ctx, server, fig, h, size, False, base=f"http://127.0.0.1:{port}",
                                 headers=[f"grpc-accept-encoding: {enc}"])
    wire["zstd download"] = statistics.median(figures["zstd download"].received)

    mib = size >> 20
    rows = []
    for name, fig in figures.items():
        fig.note = f"{mib} MiB of shared libraries, memory store; MB/s of uncompressed data"
        ctx.add(fig)
        rows.append([name, f"{wire[name] / (1 << 20):,.1f}", f"{ratio(size, wire[name]):.2f}×", fmt(fig.min),
                     fmt(fig.median), fmt(fig.max), f"{statistics.median(fig.server_cpu):.2f}",
                     fmt(per_core(fig))])
        ctx.ratio(f"compression: {name} MB/s per server core", per_core(fig))
    ctx.table(f"Compression: ByteStream {mib} MiB of shared libraries, memory store, h2load, {ctx.runs} runs "
              "(zstd level 1 both ways)",
              ["transfer", "wire MiB", "ratio", "min MB/s", "median MB/s", "max MB/s", "server CPU cores",
               "MB/s per server core"], rows,
              ["MB/s count uncompressed bytes; server CPU from /proc/PID/stat over the transfer."])

    identity = figures["uncompressed download"]
    rows = [["identity (uncompressed download above)", f"{size / (1 << 20):,.1f}", "1.00×", fmt(identity.median),
             f"{core_seconds_per_gb(identity):.2f}"]]
    for enc, fig in responses.items():
        fig.note = f"{mib} MiB of shared libraries, memory store; MB/s of uncompressed data"
        ctx.add(fig)
        received = statistics.median(fig.received)
        rows.append([enc, f"{received / (1 << 20):,.1f}", f"{ratio(size, received):.2f}×", fmt(fig.median),
                     f"{core_seconds_per_gb(fig):.2f}"])
        ctx.ratio(f"compression: response_compression {enc} download core-s per GB", core_seconds_per_gb(fig))
    ctx.table(f"Compressed responses: ByteStream download of the same {mib} MiB, `response_compression` "
              f"(level 1), the client offering one encoding, {ctx.runs} runs",
              ["grpc-accept-encoding", "wire MiB", "ratio", "median MB/s", "server core-s / GB"], rows)
    return figures["zstd upload"]


STORES = {"none": {}, "zstd level 1": {"compression": "zstd", "compression_level": 1},
          "zstd level 3": {"compression": "zstd", "compression_level": 3}}


def filesystem_stores(ctx, size, base):
    """Part 2: filesystem stores keeping blobs as they are or compressed. Returns the core-s/GB
    of the `none` store's uncompressed download and of the level-1 store's compressed one."""
    mib = size >> 20
    rows, per_gb = [], {}
    for label, options in STORES.items():
        root = os.path.join(ctx.work, "fs-cas")
        spec = {"filesystem": {"path": root, "max_bytes": 64 << 30, "sync": "none", **options}}
        figs = {k: Transfer("compression", f"filesystem {label}: {k}", "MB/s")
                for k in ("upload", "download", "compressed-blobs download")}
        with start_apus(ctx.apus, ctx.work, spec, name=f"apus-fs-{label.replace(' ', '-')}") as server:
            for _ in range(ctx.runs):
                h, _ = upload(ctx, server, figs["upload"], base, False)
                download(ctx, server, figs["download"], h, size, False)
                download(ctx, server, figs["compressed-blobs download"], h, size, True)
        on_disk = disk_bytes(os.path.join(root, "content")) / ctx.runs
        shutil.rmtree(root)
        row = [label, f"{on_disk / (1 << 20):,.1f}", f"{ratio(size, on_disk):.2f}×"]
        for k, fig in figs.items():
            fig.note = f"{mib} MiB of shared libraries, filesystem store {label}; MB/s of uncompressed data"
            ctx.add(fig)
            per_gb[label, k] = core_seconds_per_gb(fig)
            row += [fmt(fig.median), f"{per_gb[label, k]:.2f}"]
            ctx.ratio(f"compression: filesystem {label} {k} core-s per GB", per_gb[label, k])
        row.append(f"{statistics.median(figs['compressed-blobs download'].received) / (1 << 20):,.1f}")
        rows.append(row)
    ctx.table(f"Stored compression: filesystem store (`sync: none`), {mib} MiB of shared libraries, h2load, "
              f"{ctx.runs} runs",
              ["store", "on disk MiB", "ratio", "upload MB/s", "upload core-s / GB", "download MB/s",
               "download core-s / GB", "compressed-blobs download MB/s", "its core-s / GB", "its wire MiB"], rows,
              ["Uploads and downloads uncompressed unless named; MB/s and core-s / GB count uncompressed bytes. "
               "A compressed-blobs read from `none` compresses at level 1 per read; from a zstd store it "
               "sends the stored frame."])
    return per_gb["none", "download"], per_gb["zstd level 1", "compressed-blobs download"]


def run(ctx):
    size = ctx.large_blob_bytes if ctx.mode == "smoke" else 256 << 20
    base = corpus(size)
    zstd_up = memory_store(ctx, size, base)
    plain_dl, stored_dl = filesystem_stores(ctx, size, base)
    ctx.target("zstd upload ≥ 300 MB/s of uncompressed data per server core", per_core(zstd_up), 300, " MB/s",
               f"{zstd_up.median:,.0f} MB/s at {statistics.median(zstd_up.server_cpu):.2f} cores")
    stored = ratio(stored_dl, plain_dl)
    ctx.ratio("compression: zstd-store compressed download / none-store download, server CPU per GB", stored)
    ctx.target("compressed download from a `compression: zstd` store ≤ 1.0× the server CPU per uncompressed GB "
               "of an uncompressed download", stored, 1.0, "×",
               f"{stored_dl:.2f} vs {plain_dl:.2f} core-s/GB, filesystem stores, zstd level 1",
               higher_is_better=False)
