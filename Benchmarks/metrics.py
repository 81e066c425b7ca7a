"""Scenario: what recording metrics costs. Two apus processes with the same memory stores, one
with the admin listener (so swift-metrics records into the Prometheus registry on every call)
and one without (swift-metrics' no-op handlers), loaded in turn with small_rpcs' own h2load runs:
GetActionResult and FindMissingBlobs (10 digests) at 64 streams, in the order off, on, on, off
so drift on a shared machine favours neither. While the instrumented one is loaded, /metrics is
scraped every second, as Prometheus would."""
import statistics
import threading
import urllib.request

import grpc

import small_rpcs
from common import Figure, fmt, free_port, re_pb2, start_apus

STREAMS = 64


def requests(ch):
    """GetActionResult (a hit) and FindMissingBlobs of 10 stored digests."""
    calls = small_rpcs.prepare(ch)
    path, _, check = calls["FindMissingBlobs, 1,000 digests"]
    many = calls["FindMissingBlobs, 1,000 digests"][1].blob_digests[:10]
    return {"GetActionResult": calls["GetActionResult"],
            "FindMissingBlobs, 10 digests": (path, re_pb2.FindMissingBlobsRequest(blob_digests=many), check)}


def scrape_while(url, stop):
    while not stop.wait(1):
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()


def run(ctx):
    admin_port = free_port()
    store = {"memory": {"max_bytes": 4 << 30}}
    with start_apus(ctx.apus, ctx.work, store, name="apus-plain") as plain, \
            start_apus(ctx.apus, ctx.work, store, name="apus-metrics",
                       extra={"admin": {"listen": f"127.0.0.1:{admin_port}"}}) as metered:
        servers = {"off": plain, "on": metered}
        calls = {}
        for state, server in servers.items():
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                calls[state] = requests(ch)
        loads = {(label, state): [] for label in calls["on"] for state in servers}
        for label in calls["on"]:
            for state in ("off", "on", "on", "off"):
                path, request, check = calls[state][label]
                stop = threading.Event()
                scraper = None
                if state == "on":
                    scraper = threading.Thread(target=scrape_while,
                                               args=(f"http://127.0.0.1:{admin_port}/metrics", stop))
                    scraper.start()
                try:
                    loads[label, state].append(small_rpcs.load(ctx, servers[state], f"{label}, metrics {state}",
                                                               path, request, check, STREAMS))
                finally:
                    stop.set()
                    if scraper:
                        scraper.join()
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        if 'apus_grpc_requests_total{method="ActionCache/GetActionResult",code="OK"}' not in text:
            raise RuntimeError("the instrumented apus did not count its GetActionResult calls")

    rows = []
    for label in calls["on"]:
        figs, cpu = {}, {}
        for state in ("off", "on"):
            runs = loads[label, state]
            figs[state] = ctx.add(Figure("metrics", f"{label}, {STREAMS} streams, metrics {state}", "req/s",
                                         [r for rates, *_ in runs for r in rates]))
            # Server CPU per request, in µs: the cost that does not depend on how the cores were shared.
            cpu[state] = statistics.mean(r[3] for r in runs) / figs[state].median * 1e6
        ratio = figs["on"].median / figs["off"].median
        ctx.ratio(f"{label}, {STREAMS} streams: with / without metrics req/s", ratio)
        ctx.target(f"{label} with metrics ≥ 0.95× without", ratio, 0.95, "×",
                   f"{figs['on'].median:,.0f} vs {figs['off'].median:,.0f} req/s")
        rows.append([label, f"{fmt(figs['off'].min)} / **{fmt(figs['off'].median)}** / {fmt(figs['off'].max)}",
                     f"{fmt(figs['on'].min)} / **{fmt(figs['on'].median)}** / {fmt(figs['on'].max)}",
                     f"**{ratio:.2f}×**", f"{cpu['off']:.1f} / {cpu['on']:.1f}"])
    ctx.table(f"Metrics: small RPCs at {STREAMS} streams, without and with the admin listener",
              ["RPC", "no metrics req/s min / median / max", "metrics req/s min / median / max", "with / without",
               "server µs CPU per request (without / with)"], rows,
              ["Two apus processes, memory stores; the instrumented one is scraped every second during its "
               "runs. Runs in the order without, with, with, without."])
