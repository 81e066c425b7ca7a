"""Scenario 2: small cache RPCs at 1, 16 and 64 concurrent streams, Apus beside BuildGrid.

Every RPC here is unary, so the load generator is h2load (C, nghttp2) replaying one prepared
gRPC request body for a fixed time: no Apus code on the client side. Each body is first sent
once through grpcio and its response checked, and h2load's received byte count must match that
response for every completed request (a gRPC error would arrive as headers without data).
Streams are spread over up to 4 connections, as a client with a connection pool would.
Requests/s is given over 1-second windows (min / median / max); latency percentiles are over
every request of the run, from h2load's per-request log.

Two more tables: the issue-15 RPCs with the server pinned to 1 and to 2 cores (`taskset`, nghttpd
pinned the same way as the reference), and, with `--baseline-apus PATH`, every row on both
binaries, alternated A B A B, with p99 and CPU per request side by side."""
import hashlib
import os
import statistics

import grpc

from common import Figure, Server, fmt, frame, free_port, h2load, h2load_counts, h2load_seconds, percentile, re_pb2, start_apus, start_buildgrid

CAS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
AC = "/build.bazel.remote.execution.v2.ActionCache/"
# The RPCs the small-RPC targets are about (FindMissingBlobs of 1,000 digests is a big request).
# The RPCs whose server CPU is compared with nghttpd's (issue 15's targets).
FLOOR_RPCS = ["GetActionResult", "FindMissingBlobs, 10 digests"]
SINGLE_DIGEST = ["GetActionResult", "FindMissingBlobs, 1 digest", "BatchUpdateBlobs, 4 KiB",
                 "BatchReadBlobs, 4 KiB"]


def digest(data):
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def prepare(ch):
    """Stores what the reads need; returns {label: (path, request bytes, check(response bytes))}."""
    read_blob, write_blob = os.urandom(4096), os.urandom(4096)
    small = [os.urandom(100) for _ in range(1000)]
    batch = re_pb2.BatchUpdateBlobsRequest(requests=[
        re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in small + [read_blob]])
    ch.unary_unary(CAS + "BatchUpdateBlobs")(batch.SerializeToString())
    action = digest(os.urandom(64))
    result = re_pb2.ActionResult(exit_code=0, output_files=[re_pb2.OutputFile(
        path="out/lib.o", digest=digest(read_blob), is_executable=False)])
    ch.unary_unary(AC + "UpdateActionResult")(re_pb2.UpdateActionResultRequest(
        action_digest=action, action_result=result).SerializeToString())

    def none_missing(raw):
        return not re_pb2.FindMissingBlobsResponse.FromString(raw).missing_blob_digests

    def stored(raw):
        r = re_pb2.BatchUpdateBlobsResponse.FromString(raw).responses
        return len(r) == 1 and r[0].status.code == 0

    def read_back(raw):
        r = re_pb2.BatchReadBlobsResponse.FromString(raw).responses
        return len(r) == 1 and r[0].status.code == 0 and r[0].data == read_blob

    return {
        "GetActionResult": (AC + "GetActionResult",
                            re_pb2.GetActionResultRequest(action_digest=action),
                            lambda raw: re_pb2.ActionResult.FromString(raw) == result),
        "FindMissingBlobs, 1 digest": (CAS + "FindMissingBlobs",
                                       re_pb2.FindMissingBlobsRequest(blob_digests=[digest(read_blob)]),
                                       none_missing),
        "FindMissingBlobs, 10 digests": (CAS + "FindMissingBlobs",
                                         re_pb2.FindMissingBlobsRequest(blob_digests=[digest(b) for b in small[:10]]),
                                         none_missing),
        "FindMissingBlobs, 1,000 digests": (CAS + "FindMissingBlobs",
                                            re_pb2.FindMissingBlobsRequest(blob_digests=[digest(b) for b in small]),
                                            none_missing),
        "BatchUpdateBlobs, 4 KiB": (CAS + "BatchUpdateBlobs", re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(write_blob), data=write_blob)]), stored),
        "BatchReadBlobs, 4 KiB": (CAS + "BatchReadBlobs",
                                  re_pb2.BatchReadBlobsRequest(digests=[digest(read_blob)]), read_back),
    }


def load(ctx, server, label, path, request, check, streams, base=None, channel=None):
    """One h2load run; returns (requests/s per window, p50 ms, p99 ms, server CPU, client CPU,
    server CPU µs per request).
    `base` is h2load's scheme and authority (default http://127.0.0.1:PORT) and `channel()` the
    grpcio channel for the check (default plaintext to server.port): TLS passes https:// and a
    secure channel to the same listener."""
    raw = request.SerializeToString()
    with (channel() if channel else grpc.insecure_channel(f"127.0.0.1:{server.port}")) as ch:
        response = ch.unary_unary(path)(raw)
    if not check(response):
        raise RuntimeError(f"{server.name}: {label} answered wrongly before the load")
    body = os.path.join(ctx.work, "rpc.body")
    log = os.path.join(ctx.work, "rpc.log")
    with open(body, "wb") as f:
        f.write(frame(raw))
    if os.path.exists(log):
        os.unlink(log)  # h2load appends
    conns = min(streams, 4)
    seconds = ctx.rpc_seconds
    warm_up = 0.5 if seconds >= 1 else 0.1
    cpu0 = server.cpu_seconds()
    out, client_cpu = h2load(f"{base or f'http://127.0.0.1:{server.port}'}{path}", body, "-D", f"{int(seconds * 1000)}ms",
                             "--warm-up-time", f"{int(warm_up * 1000)}ms", "-t", "1",
                             "-c", str(conns), "-m", str(streams // conns), f"--log-file={log}")
    server_cpu = server.cpu_seconds() - cpu0
    counts = h2load_counts(out)
    if counts["done"] == 0 or counts["failed"] or counts["errored"]:
        raise RuntimeError(f"{server.name}: {label} at {streams} streams: {counts}\n{out[-1500:]}")
    if counts["data_bytes"] is not None and counts["data_bytes"] < counts["done"] * (5 + len(response)):
        raise RuntimeError(f"{server.name}: {label}: {counts['data_bytes']} bytes for {counts['done']} "
                           f"responses of {5 + len(response)}: some calls failed")
    starts, latencies = [], []
    with open(log) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "200":
                starts.append(int(fields[0]))
                latencies.append(int(fields[2]) / 1000)
    latencies.sort()
    t0 = min(starts)
    windows = {}
    for s in starts:
        windows[(s - t0) // 1_000_000] = windows.get((s - t0) // 1_000_000, 0) + 1
    whole = int(seconds)
    rates = [windows.get(w, 0) for w in range(whole)] if whole >= 1 else [len(starts) / seconds]
    # CPU was counted over the warm-up too; h2load's own time covers the measured part only, so
    # the requests of the warm-up are estimated at the measured rate.
    measured = h2load_seconds(out)
    duration = measured + warm_up
    per_request_us = server_cpu / (counts["done"] * duration / measured) * 1e6
    return (rates, percentile(latencies, 0.5), percentile(latencies, 0.99), server_cpu / duration,
            client_cpu / duration, per_request_us, 5 + len(response))


def nghttpd_reference(ctx, size, streams, prefix=()):
    """nghttpd, nghttp2's own C server, answering the same h2load POSTs with a static body of
    the response's size: (requests/s, server CPU µs per request). The floor of the HTTP/2 layer
    Apus is built on, measured on the same machine in the same run. `prefix` as for start_apus
    (pinning)."""
    root = os.path.join(ctx.work, "nghttpd-rpc")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "reply"), "wb") as f:
        f.write(os.urandom(size))
    body = os.path.join(ctx.work, "rpc.body")
    port = free_port()
    with Server("nghttpd-rpc", [*prefix, "nghttpd", "-a", "127.0.0.1", "-d", root, "--no-tls", str(port)],
                port, ctx.work) as server:
        conns = min(streams, 4)
        warm_up = 0.5 if ctx.rpc_seconds >= 1 else 0.1
        cpu0 = server.cpu_seconds()
        out, _ = h2load(f"http://127.0.0.1:{port}/reply", body, "-D", f"{int(ctx.rpc_seconds * 1000)}ms",
                        "--warm-up-time", f"{int(warm_up * 1000)}ms", "-t", "1", "-c", str(conns),
                        "-m", str(streams // conns))
        server_cpu = server.cpu_seconds() - cpu0
    counts, measured = h2load_counts(out), h2load_seconds(out)
    if counts["done"] == 0 or counts["failed"] or counts["errored"]:
        raise RuntimeError(f"nghttpd reference: {counts}\n{out[-1500:]}")
    return counts["done"] / measured, server_cpu / (counts["done"] * (measured + warm_up) / measured) * 1e6


def measure(ctx, server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        calls = prepare(ch)
    results = {}
    for label, (path, request, check) in calls.items():
        for streams in ctx.rpc_streams:
            results[label, streams] = load(ctx, server, label, path, request, check, streams)
    return results


def ratio(a, b):
    """a / b, or nan when b is 0 (a smoke run's CPU can round to nothing)."""
    return a / b if b else float("nan")


def merge(rounds):
    """One result per row from the rounds of one binary: every round's 1-second windows, the
    median of the rounds' p50, p99 and CPU figures, and each round's p99 (for the A/B table)."""
    merged = {}
    for key in rounds[0]:
        runs = [r[key] for r in rounds]
        rates = [x for run in runs for x in run[0]]
        mid = [statistics.median(run[i] for run in runs) for i in range(1, 6)]
        merged[key] = (rates, *mid, runs[0][6], [run[2] for run in runs])
    return merged


def run(ctx):
    # With a baseline binary, both run every row twice, alternated (A B A B), so a drift in the
    # machine's load hits both alike.
    binaries = [("apus", ctx.apus)] + ([("baseline", ctx.baseline_apus)] if ctx.baseline_apus else [])
    rounds = {name: [] for name, _ in binaries}
    for _ in range(2 if ctx.baseline_apus else 1):
        for name, path in binaries:
            with start_apus(path, ctx.work, {"memory": {"max_bytes": 4 << 30}}, name=f"apus-{name}") as server:
                rounds[name].append(measure(ctx, server))
    apus = merge(rounds["apus"])
    peer = {}
    if ctx.peer:
        with start_buildgrid(ctx.work) as server:
            peer = measure(ctx, server)

    # The HTTP/2 floor: nghttpd answering the same client with a body of each target RPC's size.
    top = max(ctx.rpc_streams)
    floor = {label: nghttpd_reference(ctx, apus[label, top][6], top) for label in FLOOR_RPCS}

    rows, notes = [], []
    for (label, streams), (rates, p50, p99, server_cpu, client_cpu, cpu_us, _, _) in apus.items():
        fig = ctx.add(Figure("small RPCs", f"{label}, {streams} streams", "req/s", rates,
                             f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"))
        ctx.add(Figure("small RPCs", f"{label}, {streams} streams, p99", "ms", [p99]))
        ctx.add(Figure("small RPCs", f"{label}, {streams} streams, server CPU per request", "µs", [cpu_us]))
        row = [label, streams, f"{fmt(fig.min)} / **{fmt(fig.median)}** / {fmt(fig.max)}", fmt(p50), fmt(p99),
               f"{server_cpu:.2f}", f"{client_cpu:.2f}", f"{cpu_us:.1f}"]
        if peer:
            prates, pp50, pp99 = peer[label, streams][:3]
            pfig = ctx.add(Figure("small RPCs", f"BuildGrid {label}, {streams} streams", "req/s", prates,
                                  f"p50 {pp50:.3f} ms, p99 {pp99:.3f} ms"))
            ctx.ratio(f"{label}, {streams} streams: apus / BuildGrid req/s", fig.median / pfig.median)
            row += [fmt(pfig.median), fmt(pp99), f"{fig.median / pfig.median:.1f}×"]
        rows.append(row)
    headers = ["RPC", "streams", "apus req/s min / median / max", "p50 ms", "p99 ms", "apus CPU cores",
               "h2load CPU cores", "apus µs CPU / req"]
    if peer:
        headers += ["BuildGrid req/s", "BuildGrid p99 ms", "apus / BuildGrid"]
    notes.append("CPU cores = CPU seconds used during the run / wall seconds; h2load is the client, on "
                 "the same 2 cores, so the two columns together show how the machine was shared.")
    for label, (rate, floor_us) in floor.items():
        apus_us = apus[label, top][5]
        ctx.add(Figure("small RPCs", f"nghttpd, {label}-sized reply, {top} streams, server CPU per request",
                       "µs", [floor_us], f"{fmt(rate)} req/s"))
        ctx.ratio(f"{label}, {top} streams: apus / nghttpd server CPU per request", apus_us / floor_us)
        notes.append(f"{label} at {top} streams: apus {apus_us:.1f} µs of server CPU per request, nghttpd "
                     f"{floor_us:.2f} µs ({fmt(rate)} req/s) answering the same client with a static "
                     f"{apus[label, top][6]}-byte body: **{apus_us / floor_us:.1f}×**")
    ctx.table(f"Small RPCs: h2load, {ctx.rpc_seconds} s per row, in-memory stores", headers, rows, notes)

    worst = min(SINGLE_DIGEST, key=lambda k: statistics.median(apus[k, top][0]))
    slowest = max(SINGLE_DIGEST, key=lambda k: apus[k, top][2])
    for label, (_, floor_us) in floor.items():
        ctx.target(f"server CPU per {label} at {top} streams ≤ 3× nghttpd's", apus[label, top][5] / floor_us,
                   3, "×", f"{apus[label, top][5]:.1f} µs vs {floor_us:.2f} µs", higher_is_better=False)
    ctx.target(f"≥ 20,000 small RPCs/s at {top} streams (slowest of the single-digest RPCs)",
               statistics.median(apus[worst, top][0]), 20000, " req/s", worst)
    ctx.target(f"p99 < 5 ms at {top} streams (worst of the single-digest RPCs)",
               apus[slowest, top][2], 5, " ms", slowest, higher_is_better=False)


    if ctx.baseline_apus:
        baseline_table(ctx, apus, merge(rounds["baseline"]), top)
    pinned_table(ctx, {label: apus[label, top][6] for label in FLOOR_RPCS}, top)


def baseline_table(ctx, apus, base, top):
    """Every row on this binary and on the baseline, from the alternated rounds."""
    rows = []
    for key, a in apus.items():
        b = base[key]
        label, streams = key
        ctx.add(Figure("small RPCs", f"baseline {label}, {streams} streams", "req/s", b[0],
                       f"p50 {b[1]:.3f} ms, p99 {b[2]:.3f} ms"))
        ctx.add(Figure("small RPCs", f"baseline {label}, {streams} streams, p99", "ms", b[7]))
        ctx.add(Figure("small RPCs", f"baseline {label}, {streams} streams, server CPU per request", "µs", [b[5]]))
        ctx.ratio(f"{label}, {streams} streams: apus / baseline p99", ratio(a[2], b[2]))
        ctx.ratio(f"{label}, {streams} streams: apus / baseline server CPU per request", ratio(a[5], b[5]))
        rows.append([label, streams, fmt(statistics.median(a[0])), fmt(statistics.median(b[0])),
                     " / ".join(fmt(x) for x in a[7]), " / ".join(fmt(x) for x in b[7]),
                     f"{ratio(a[2], b[2]):.2f}", f"{a[5]:.1f}", f"{b[5]:.1f}", f"{ratio(a[5], b[5]):.2f}"])
    ctx.table(f"Small RPCs against the baseline binary: h2load, {ctx.rpc_seconds} s per row per round, "
              "rounds alternated A B A B",
              ["RPC", "streams", "apus req/s", "baseline req/s", "apus p99 ms (round 1 / 2)",
               "baseline p99 ms (round 1 / 2)", "p99 apus / baseline", "apus µs CPU / req",
               "baseline µs CPU / req", "CPU apus / baseline"], rows,
              [f"baseline: {ctx.baseline_apus}; apus: {ctx.apus}. Each binary ran every row twice, in "
               "the order apus, baseline, apus, baseline; req/s is the median of both rounds' 1-second "
               "windows, the ratios use the median (here the mean) of the two rounds' p99 and CPU."])
    for label in SINGLE_DIGEST + [x for x in FLOOR_RPCS if x not in SINGLE_DIGEST]:
        a, b = apus[label, top], base[label, top]
        ctx.target(f"p99 ≤ baseline's: {label} at {top} streams", ratio(a[2], b[2]), 1, "×",
                   f"{a[2]:.3f} ms vs {b[2]:.3f} ms", higher_is_better=False)


# (row name, CPUs for taskset, extra command before it). NIO sizes its event-loop group from the
# machine's (or the cgroup's) CPU count, not the affinity mask, so a server pinned to one core
# still runs 2 loops on it; the third row shows what matching the loops to the core changes.
PINNINGS = [("1 core", "0", []), ("1 core, 1 event loop", "0", ["env", "NIO_SINGLETON_GROUP_LOOP_COUNT=1"]),
            ("2 cores", "0,1", [])]


def pinned_table(ctx, sizes, top):
    """The issue-15 RPCs with the server pinned to 1 and to 2 cores, nghttpd pinned the same;
    which threads did the work shows whether connections spread over the event loops."""
    rows, rates = [], {}
    for name, cpus, before in PINNINGS:
        prefix = before + ["taskset", "-c", cpus]
        with start_apus(ctx.apus, ctx.work, {"memory": {"max_bytes": 4 << 30}}, name=f"apus-pinned-{cpus}",
                        prefix=prefix) as server:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                calls = prepare(ch)
            for label in FLOOR_RPCS:
                threads0 = server.thread_cpu_seconds()
                r = load(ctx, server, f"{label}, pinned to {name}", *calls[label], top)
                split = thread_split(threads0, server.thread_cpu_seconds())
                floor_rate, floor_us = nghttpd_reference(ctx, sizes[label], top, prefix)
                rate = statistics.median(r[0])
                rates[name, label] = rate
                ctx.add(Figure("small RPCs", f"{label}, {top} streams, server pinned to {name}", "req/s", r[0],
                               f"{r[3]:.2f} server cores, {r[5]:.1f} µs CPU per request; {split}"))
                ctx.add(Figure("small RPCs", f"{label}, {top} streams, server pinned to {name}, server CPU "
                               "per request", "µs", [r[5]]))
                ctx.add(Figure("small RPCs", f"nghttpd, {label}-sized reply, {top} streams, pinned to {name}, "
                               "server CPU per request", "µs", [floor_us], f"{fmt(floor_rate)} req/s"))
                ctx.ratio(f"{label}, {top} streams, pinned to {name}: apus / nghttpd server CPU per request",
                          ratio(r[5], floor_us))
                rows.append([name, label, fmt(rate), f"{r[3]:.2f}", fmt(ratio(rate, r[3])), f"{r[5]:.1f}",
                             fmt(floor_rate), f"{floor_us:.2f}", f"{ratio(r[5], floor_us):.1f}×", split])
    for label in FLOOR_RPCS:
        ctx.ratio(f"{label}, {top} streams: req/s pinned to 2 cores / to 1 core",
                  ratio(rates["2 cores", label], rates["1 core", label]))
    ctx.table(f"Small RPCs with the server pinned (taskset): h2load, {top} streams, {ctx.rpc_seconds} s per row",
              ["server CPUs", "RPC", "apus req/s", "apus CPU cores", "req/s per apus core", "apus µs CPU / req",
               "nghttpd req/s", "nghttpd µs CPU / req", "apus / nghttpd", "apus CPU by thread"], rows,
              ["The server (apus, and nghttpd for its reference row) is pinned with `taskset -c 0` or "
               "`-c 0,1`; h2load, the client, is not pinned and shares the machine's 2 cores with it, so "
               "at 2 cores the client takes CPU from the server and req/s understates how apus scales.",
               "nghttpd is single-threaded: pinning it to 2 cores changes little.",
               "NIO sizes its event-loop group from the machine's CPU count, not the affinity mask: "
               "'1 core' runs 2 event loops on one core; '1 core, 1 event loop' sets "
               "NIO_SINGLETON_GROUP_LOOP_COUNT=1.",
               "CPU by thread: each event loop's share of the server's CPU in the row (NIO-SGLTN-… "
               "threads), then the rest; even shares mean connections spread over the loops."])


def thread_split(before, after):
    """Each event loop's share of the process's CPU between two thread_cpu_seconds() readings."""
    used = {tid: (name, cpu - before.get(tid, (name, 0))[1]) for tid, (name, cpu) in after.items()}
    total = sum(cpu for _, cpu in used.values()) or 1
    loops = sorted((name, cpu) for name, cpu in used.values() if name.startswith(("NIO-SGLTN", "NIO-ELT")))
    rest = total - sum(cpu for _, cpu in loops)
    return ", ".join(f"loop {i} {cpu / total:.0%}" for i, (_, cpu) in enumerate(loops)) + f", other {rest / total:.0%}"
