"""Scenario: what TLS costs. One apus with two listeners on the same memory stores, one plaintext
h2c and one TLS (a self-signed EC P-256 certificate made with openssl), measured side by side in
the same process: ByteStream upload (verified) and download of a large blob, and GetActionResult
at 64 streams; and, as the client's own ceiling, the same transfers against nghttpd over h2c and
over TLS.

The transfers and the load are large_blobs' and small_rpcs' own (h2load as the client; for
https:// URLs it speaks TLS with ALPN h2). The two transports alternate (large blobs: h2c first
on even runs, TLS first on odd ones; GetActionResult: h2c, TLS, TLS, h2c) so drift on a shared
machine does not favour either. h2load also pays for TLS, on the same cores as the server, so
the ratios are of the whole loopback pair, not of the server alone."""
import os
import re
import statistics
import subprocess

import grpc

import large_blobs
import small_rpcs
from common import Figure, fmt, frame, free_port, h2load, start_apus

STREAMS = 64


def make_certificate(directory):
    """A self-signed EC P-256 certificate for localhost and 127.0.0.1; returns (cert, key) paths."""
    cert, key = os.path.join(directory, "tls-cert.pem"), os.path.join(directory, "tls-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def negotiated(ctx, base, path, request):
    """What h2load and apus agree on (protocol, cipher, ALPN), from one request."""
    body = os.path.join(ctx.work, "tls-probe.body")
    with open(body, "wb") as f:
        f.write(frame(request.SerializeToString()))
    out, _ = h2load(f"{base}{path}", body, "-n1", "-c1", "-m1")
    if "1 succeeded" not in out:
        raise RuntimeError(f"a GetActionResult over TLS failed:\n{out[-1500:]}")
    found = {k: re.search(rf"{k}: (\S+)", out) for k in ("TLS Protocol", "Cipher", "Application protocol")}
    if not found["Application protocol"] or found["Application protocol"].group(1) != "h2":
        raise RuntimeError(f"h2load did not negotiate h2 over TLS:\n{out[-1500:]}")
    return ", ".join(f"{k} {m.group(1)}" for k, m in found.items() if m)


def run(ctx):
    size = ctx.large_blob_bytes
    mib = size >> 20
    cert, key = make_certificate(ctx.work)
    with open(cert, "rb") as f:
        root = f.read()
    tls_port = free_port()
    listener = {"listen": f"127.0.0.1:{tls_port}", "tls": {"certificate": cert, "private_key": key}}
    with start_apus(ctx.apus, ctx.work, {"memory": {"max_bytes": 16 << 30}}, name="apus-tls",
                    listeners=[listener]) as server:
        transports = {"h2c": (f"http://127.0.0.1:{server.port}",
                              lambda: grpc.insecure_channel(f"127.0.0.1:{server.port}")),
                      "TLS": (f"https://127.0.0.1:{tls_port}",
                              lambda: grpc.secure_channel(f"localhost:{tls_port}",
                                                          grpc.ssl_channel_credentials(root_certificates=root)))}

        # Large blobs: each run one fresh blob per transport, in alternating order.
        blobs = {t: (large_blobs.Transfer("tls", f"apus memory over {t}, upload (verified)", "MB/s"),
                     large_blobs.Transfer("tls", f"apus memory over {t}, download", "MB/s")) for t in transports}
        for i in range(ctx.runs):
            for t in (("h2c", "TLS") if i % 2 == 0 else ("TLS", "h2c")):
                large_blobs.upload_and_download(ctx, server, f"apus memory over {t}", size, *blobs[t],
                                                base=transports[t][0])

        # GetActionResult at 64 streams, each transport twice: h2c, TLS, TLS, h2c.
        with transports["h2c"][1]() as ch:
            path, request, check = small_rpcs.prepare(ch)["GetActionResult"]
        handshake = negotiated(ctx, transports["TLS"][0], path, request)
        rpc = {t: [] for t in transports}
        for t in ("h2c", "TLS", "TLS", "h2c"):
            base, channel = transports[t]
            rpc[t].append(small_rpcs.load(ctx, server, f"GetActionResult over {t}", path, request, check,
                                          STREAMS, base=base, channel=channel))

    # The client's own ceiling, each way: the same transfers against nghttpd (C), h2c and TLS.
    reference = {t: large_blobs.client_reference(ctx, size, tls=(cert, key) if t == "TLS" else None,
                                                 scenario="tls") for t in transports}

    rows, notes = [], []

    def row(what, h2c, tls, unit, h2c_cpu, tls_cpu, h2c_client, tls_client):
        ratio = tls.median / h2c.median
        rows.append([what, f"{fmt(h2c.min)} / **{fmt(h2c.median)}** / {fmt(h2c.max)}",
                     f"{fmt(tls.min)} / **{fmt(tls.median)}** / {fmt(tls.max)}", unit, f"**{ratio:.2f}×**",
                     f"{h2c_cpu:.2f} / {tls_cpu:.2f}", f"{h2c_client:.2f} / {tls_client:.2f}"])
        return ratio

    ratios = {}
    for i, kind in enumerate(("upload (verified)", "download")):
        h2c, tls = blobs["h2c"][i], blobs["TLS"][i]
        for fig in (h2c, tls):
            fig.note = f"{mib} MiB blob, memory store"
            ctx.add(fig)
        ratios[kind] = row(f"ByteStream {kind}, {mib} MiB", h2c, tls, "MB/s",
                           statistics.median(h2c.server_cpu), statistics.median(tls.server_cpu),
                           statistics.median(h2c.client_cpu), statistics.median(tls.client_cpu))
    for i, kind in enumerate(("upload (body discarded)", "download (page cache)")):
        h2c, tls = reference["h2c"][i], reference["TLS"][i]
        for fig in (h2c, tls):
            fig.note = f"{mib} MiB, client reference"
            ctx.add(fig)
        ratios[f"nghttpd {kind}"] = row(f"client reference: nghttpd {kind}, {mib} MiB", h2c, tls, "MB/s",
                                        statistics.median(h2c.server_cpu), statistics.median(tls.server_cpu),
                                        statistics.median(h2c.client_cpu), statistics.median(tls.client_cpu))
    figs = {}
    for t, loads in rpc.items():
        windows = [r for rates, *_ in loads for r in rates]
        p50, p99 = statistics.median(l[1] for l in loads), max(l[2] for l in loads)
        figs[t] = ctx.add(Figure("tls", f"apus GetActionResult over {t}, {STREAMS} streams", "req/s",
                                             windows, f"p50 {p50:.3f} ms, p99 {p99:.3f} ms (worst of 2 runs)"))
    cpu = {t: (statistics.mean(l[3] for l in rpc[t]), statistics.mean(l[4] for l in rpc[t])) for t in rpc}
    ratios["GetActionResult"] = row(f"GetActionResult, {STREAMS} streams", figs["h2c"], figs["TLS"], "req/s",
                                    cpu["h2c"][0], cpu["TLS"][0], cpu["h2c"][1], cpu["TLS"][1])

    for kind in ("upload (verified)", "download"):
        name = kind.split()[0]
        ctx.ratio(f"large blob {name}: TLS / h2c", ratios[kind])
        ctx.target(f"large blob {name} over TLS ≥ 0.7× h2c", ratios[kind], 0.7, "×",
                   f"{blobs['TLS'][0 if name == 'upload' else 1].median:,.0f} vs "
                   f"{blobs['h2c'][0 if name == 'upload' else 1].median:,.0f} MB/s")
    for i, name in enumerate(("upload", "download")):
        vs_ref = blobs["TLS"][i].median / reference["TLS"][i].median
        ctx.ratio(f"large blob {name} over TLS: apus memory / nghttpd (client reference)", vs_ref)
        notes.append(f"{name} over TLS, apus / nghttpd (the client's TLS ceiling): {vs_ref:.2f}×")
    ctx.ratio(f"GetActionResult, {STREAMS} streams: TLS / h2c req/s", ratios["GetActionResult"])
    ctx.target(f"GetActionResult at {STREAMS} streams over TLS ≥ 0.8× h2c", ratios["GetActionResult"], 0.8, "×",
               f"{figs['TLS'].median:,.0f} vs {figs['h2c'].median:,.0f} req/s")

    notes.insert(0, f"One apus, memory stores, two listeners: h2c and TLS ({handshake}; self-signed EC P-256 "
                 f"certificate). Uploads are checked with FindMissingBlobs; GetActionResult is checked "
                 f"through grpcio over each transport before its load, and by h2load's byte counts.")
    notes.insert(1, f"Large blobs: {ctx.runs} runs per transport, a fresh blob each. GetActionResult: "
                 f"{ctx.rpc_seconds} s per load, two loads per transport (req/s over 1 s windows of both).")
    notes.insert(2, "CPU cores = CPU seconds / wall seconds (the server is nghttpd in the client "
                    "reference rows). h2load's TLS work runs on the same cores as the server, so on a small "
                    "machine the client's share lowers the TLS rows too; the nghttpd rows show how far.")
    ctx.table(f"TLS beside h2c, one apus, {mib} MiB blobs and GetActionResult at {STREAMS} streams",
              ["measurement", "h2c min / median / max", "TLS min / median / max", "unit", "TLS / h2c",
               "server CPU cores h2c / TLS", "h2load CPU cores h2c / TLS"], rows, notes)
