"""Scenario 1: ByteStream upload and download of one large blob, per store, beside the
machine's single-core SHA-256 speed.

The client is h2load (C, nghttp2): it posts a prepared body of framed 1 MiB WriteRequests and
reads a whole ReadResponse stream, so the figures are the server's, not a Python client's.
Every upload is a fresh random blob (no "already stored" shortcut) and is checked with
FindMissingBlobs before its download is timed.

With --s3 the same transfers also run against an `s3` store on moto_server (Python) on
loopback: that row measures apus plus moto, not what a real S3 would give."""
import hashlib
import os
import re
import statistics
from dataclasses import dataclass, field

import grpc

from common import Figure, Server, bs_pb2, fmt, frame, free_port, h2load, h2load_seconds, re_grpc, re_pb2, start_apus, start_buildgrid

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


@dataclass
class Transfer(Figure):
    """MB/s per run, with the CPU cores the server and the client used during each run and the
    response bytes (gRPC frames) the client received."""
    server_cpu: list = field(default_factory=list)
    client_cpu: list = field(default_factory=list)
    received: list = field(default_factory=list)

    def time(self, server, size, path, body, expect_data_at_least=0, base=None, headers=()):
        """One transfer; `base` is the scheme and authority (default http://127.0.0.1:PORT),
        `headers` more request headers ("name: value")."""
        cpu0 = server.cpu_seconds()
        extra = [arg for h in headers for arg in ("-H", h)]
        out, client_cpu = h2load(f"{base or f'http://127.0.0.1:{server.port}'}{path}", body, "-n1", "-c1",
                                 "-m1", "-w30", "-W30", *extra)
        server_cpu = server.cpu_seconds() - cpu0
        if "1 succeeded" not in out:
            raise RuntimeError(f"{path} failed:\n{out}")
        data = re.search(r"traffic: .*\((\d+)\) data", out)
        if data and int(data.group(1)) < expect_data_at_least:
            raise RuntimeError(f"{path} returned {data.group(1)} bytes, expected ≥ {expect_data_at_least}")
        self.received.append(int(data.group(1)) if data else 0)
        seconds = h2load_seconds(out)
        self.samples.append(size / seconds / 1e6)
        self.server_cpu.append(server_cpu / seconds)
        self.client_cpu.append(client_cpu / seconds)


def measure(ctx, server, label, size):
    up = Transfer("large blobs", f"{label} upload (verified)", "MB/s")
    down = Transfer("large blobs", f"{label} download", "MB/s")
    for _ in range(ctx.runs):
        upload_and_download(ctx, server, label, size, up, down)
    return up, down


def upload_and_download(ctx, server, label, size, up, down, base=None):
    """One timed upload of a fresh random blob, checked with FindMissingBlobs over plaintext on
    server.port, then its timed download; the transfers go to `base` (see Transfer.time)."""
    body = os.path.join(ctx.work, "write.body")
    read = os.path.join(ctx.work, "read.body")
    data = os.urandom(size)
    h = hashlib.sha256(data).hexdigest()
    write_body(body, data, h)
    del data
    up.time(server, size, WRITE, body, base=base)
    os.unlink(body)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(blob_digests=[re_pb2.Digest(hash=h, size_bytes=size)]))
        if missing.missing_blob_digests:
            raise RuntimeError(f"{label}: the uploaded blob is not in the CAS")
    with open(read, "wb") as f:
        f.write(frame(bs_pb2.ReadRequest(resource_name=f"blobs/{h}/{size}").SerializeToString()))
    down.time(server, size, READ, read, size, base=base)


def client_reference(ctx, size, tls=None, scenario="large blobs"):
    """The same client against nghttpd, nghttp2's own C server, on the same loopback: upload
    to a path that discards the body, download of a file in the page cache. What the client
    and loopback move with a lean C server on the other end; apus rows near or above these
    are limited by the client, not the server. With tls=(certificate, private key), over TLS."""
    root = os.path.join(ctx.work, "nghttpd")
    os.makedirs(root, exist_ok=True)
    blob, empty = os.path.join(root, "blob"), os.path.join(root, "empty")
    with open(blob, "wb") as f:
        for _ in range(size // CHUNK):
            f.write(os.urandom(CHUNK))
    open(empty, "wb").close()
    over = " over TLS" if tls else ""
    up = Transfer(scenario, f"h2load → nghttpd{over}, body discarded (client reference)", "MB/s")
    down = Transfer(scenario, f"nghttpd → h2load{over}, file in page cache (client reference)", "MB/s")
    port = free_port()
    argv = ["nghttpd", "-a", "127.0.0.1", "-d", root, str(port)]
    argv += [tls[1], tls[0]] if tls else ["--no-tls"]
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    with Server("nghttpd", argv, port, ctx.work) as server:
        for _ in range(ctx.runs):
            up.time(server, size, "/empty", blob, base=base)
            down.time(server, size, "/blob", None, size, base=base)
    os.unlink(blob)
    return up, down


def core_seconds_per_gb(fig):
    """Server CPU per GB moved: cores busy / GB per second, from the medians of the runs."""
    return statistics.median(fig.server_cpu) / (fig.median / 1000)


def run(ctx):
    size = ctx.large_blob_bytes
    mib = size >> 20
    sha = ctx.sha256_mbps
    stores = {
        "memory": {"memory": {"max_bytes": 16 << 30}},
        "filesystem": {"filesystem": {"path": os.path.join(ctx.work, "fs-cas"), "max_bytes": 64 << 30}},
    }
    moto = None
    if ctx.s3:
        from s3server import MotoServer, s3_spec
        moto = MotoServer(ctx.work).start()
        moto.make_bucket("bench")
        stores["s3 (moto_server)"] = s3_spec(moto, "bench", "cas/", multipart_threshold_bytes=8 << 20,
                                             part_bytes=8 << 20)
    results = {}
    try:
        for label, cas in stores.items():
            with start_apus(ctx.apus, ctx.work, cas, name=f"apus-{label.split()[0]}") as server:
                results[label] = measure(ctx, server, f"apus {label}", size)
    finally:
        if moto:
            moto.stop()
    if ctx.peer:
        with start_buildgrid(ctx.work) as server:
            results["buildgrid"] = measure(ctx, server, "BuildGrid (memory)", size)
    results["reference"] = client_reference(ctx, size)

    rows, notes = [], []
    for label, (up, down) in results.items():
        for fig in (up, down):
            fig.note = f"{mib} MiB blob"
            ctx.add(fig)
            rows.append([fig.name, fmt(fig.min), fmt(fig.median), fmt(fig.max), f"{fig.median / sha:.2f}×",
                         f"{statistics.median(fig.server_cpu):.2f}", f"{statistics.median(fig.client_cpu):.2f}",
                         f"{core_seconds_per_gb(fig):.2f}"])
    up, down = results["memory"]
    ref_up, ref_down = results["reference"]
    notes.append(f"apus memory / client reference: upload {up.median / ref_up.median:.2f}×, "
                 f"download {down.median / ref_down.median:.2f}×")
    ctx.ratio("large blob upload: apus memory / client reference", up.median / ref_up.median)
    ctx.ratio("large blob download: apus memory / client reference", down.median / ref_down.median)
    # CPU per GB against the floor measured in this run: nghttpd receiving (or serving) the same
    # stream, plus one SHA-256 pass for uploads (openssl speed, one core).
    sha_per_gb = 1000 / sha
    up_floor, down_floor = core_seconds_per_gb(ref_up) + sha_per_gb, core_seconds_per_gb(ref_down)
    up_ratio = core_seconds_per_gb(up) / up_floor if up_floor else float("nan")
    down_ratio = core_seconds_per_gb(down) / down_floor if down_floor else float("nan")
    notes.append(f"server core-seconds per GB, memory store: upload {core_seconds_per_gb(up):.2f} vs nghttpd "
                 f"receiving {core_seconds_per_gb(ref_up):.2f} + SHA-256 {sha_per_gb:.2f} = **{up_ratio:.2f}×**; "
                 f"download {core_seconds_per_gb(down):.2f} vs nghttpd serving {down_floor:.2f} = **{down_ratio:.2f}×**")
    for name, value in (("apus memory upload", core_seconds_per_gb(up)), ("nghttpd receiving", core_seconds_per_gb(ref_up)),
                        ("SHA-256, one pass", sha_per_gb), ("apus memory download", core_seconds_per_gb(down)),
                        ("nghttpd serving", down_floor)):
        ctx.add(Figure("large blobs", f"{name}: server core-seconds per GB", "core-s/GB", [value], f"{mib} MiB blob"))
    ctx.ratio("large blob upload: apus memory / (nghttpd receive + SHA-256) server CPU per GB", up_ratio)
    ctx.ratio("large blob download: apus memory / nghttpd server CPU per GB", down_ratio)
    if "buildgrid" in results:
        for i, kind in enumerate(("upload", "download")):
            ratio = results["memory"][i].median / results["buildgrid"][i].median
            notes.append(f"apus memory / BuildGrid, {kind}: **{ratio:.1f}×**")
            ctx.ratio(f"large blob {kind}: apus memory / BuildGrid", ratio)
    ctx.table(f"Large blobs: ByteStream, {mib} MiB blob, h2load as the client, {ctx.runs} runs; "
              f"openssl speed -evp sha256 (one core) = {sha:,.0f} MB/s",
              ["server, transfer", "min MB/s", "median MB/s", "max MB/s", "median / SHA-256",
               "server CPU cores", "h2load CPU cores", "server core-s / GB"], rows, notes)
    ctx.target("upload server CPU per GB ≤ 1.15× (nghttpd receive + SHA-256)", up_ratio, 1.15, "×",
               f"{core_seconds_per_gb(up):.2f} vs {up_floor:.2f} core-s/GB", higher_is_better=False)
    ctx.target("download server CPU per GB ≤ 1.0× nghttpd's", down_ratio, 1.0, "×",
               f"{core_seconds_per_gb(down):.2f} vs {down_floor:.2f} core-s/GB", higher_is_better=False)
    ctx.target("verified upload ≥ 0.8× single-core SHA-256", up.median / sha, 0.8, "×",
               f"memory store: {up.median:,.0f} MB/s")
    ctx.target("download from the memory store ≥ 2× single-core SHA-256", down.median / sha, 2.0, "×",
               f"{down.median:,.0f} MB/s")
