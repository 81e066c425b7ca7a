#!/usr/bin/env python3
"""One benchmark row under `perf record`, summarised: where apus spends its CPU.

Runs apus (memory stores) under the same load as the suite's row — h2load posting one prepared
gRPC request for small RPCs, or one large ByteStream upload/download — while `perf record
--call-graph dwarf` samples the apus process only. Writes, in --out:
  perf.data      the raw profile (`perf report -i perf.data`)
  folded.txt     folded stacks, demangled, one "frame;frame;… count" per line: the input of any
                 flame-graph renderer (flamegraph.pl, speedscope, inferno)
  summary.md     the top functions by self and by inclusive samples, and the share per library
and prints summary.md. Choose optimisations from it and show before/after with two runs.

Run it through Benchmarks/profile, which builds a release apus with debug info first."""
import argparse
import collections
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time

import grpc

import large_blobs
import small_rpcs
from common import bs_pb2, frame, h2load, start_apus

ROWS = ["small", "upload", "download"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("row", choices=ROWS, help="small: one small RPC under h2load; upload/download: one large blob")
    p.add_argument("--rpc", default="GetActionResult", help=f"for small: one of {list(small_rpcs.FLOOR_RPCS)} "
                   "or any label of small_rpcs.prepare (default GetActionResult)")
    p.add_argument("--streams", type=int, default=64, help="for small: concurrent streams (default 64)")
    p.add_argument("--seconds", type=float, default=5, help="for small: load duration (default 5)")
    p.add_argument("--through-grpc", action="store_true",
                   help="for small: the profiled apus serves through grpc stores (CAS and action cache) "
                        "from a second apus with memory stores, so every call is also a client call: "
                        "what the client side (GRPCClient, GRPCStore) costs")
    p.add_argument("--blob-mib", type=int, default=512, help="for upload/download: blob size (default 512)")
    p.add_argument("--frequency", type=int, default=999, help="perf sampling frequency in Hz (default 999)")
    p.add_argument("--apus", default=".build/release/apus")
    p.add_argument("--out", default=".build/profile", help="output directory (default .build/profile)")
    p.add_argument("--top", type=int, default=30, help="functions listed per table (default 30)")
    return p.parse_args()


class Recording:
    """`perf record` attached to one PID for the duration of a `with` block."""

    def __init__(self, pid, out, frequency):
        self.argv = ["perf", "record", "-q", "-F", str(frequency), "--call-graph", "dwarf,16384",
                     "-p", str(pid), "-o", os.path.join(out, "perf.data")]

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # perf attaches asynchronously; the load must not start before it samples
        if self.proc.poll() is not None:
            raise RuntimeError(f"perf record failed: {self.proc.stderr.read().decode()[-2000:]}")
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(2)  # SIGINT: perf writes its file and exits
        _, err = self.proc.communicate(timeout=120)
        if self.proc.returncode not in (0, -2):
            raise RuntimeError(f"perf record exited {self.proc.returncode}: {err.decode()[-2000:]}")


def load_small(args, server, work):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        calls = small_rpcs.prepare(ch)
    if args.rpc not in calls:
        sys.exit(f"--rpc must be one of {sorted(calls)}")
    path, request, check = calls[args.rpc]

    class Ctx:
        rpc_seconds = args.seconds
    Ctx.work = work
    rates, p50, p99, cores, _, cpu_us, _ = small_rpcs.load(Ctx, server, args.rpc, path, request, check,
                                                             args.streams)
    return (f"{args.rpc}, {args.streams} streams, {args.seconds:g} s: {sorted(rates)[len(rates) // 2]:,.0f} req/s, "
            f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, {cores:.2f} server cores, {cpu_us:.1f} µs server CPU per request")


def prepare_blob(args, work):
    """Writes the upload body (framed WriteRequests) and returns (digest hash, size, body path)."""
    data = os.urandom(1 << 20) * args.blob_mib  # what the server does not depend on the content
    h = hashlib.sha256(data).hexdigest()
    body = os.path.join(work, "upload.body")
    large_blobs.write_body(body, data, h)
    return h, len(data), body


def load_blob(args, server, work, direction, h, size, body):
    url = f"http://127.0.0.1:{server.port}/google.bytestream.ByteStream/"
    if direction == "upload":
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        h2load(url + "Write", body, "-n1", "-c1", "-m1")
    else:
        read = os.path.join(work, "read.body")
        with open(read, "wb") as f:
            f.write(frame(bs_pb2.ReadRequest(resource_name=f"blobs/{h}/{size}").SerializeToString()))
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        h2load(url + "Read", read, "-n1", "-c1", "-m1")
    seconds, cpu = time.perf_counter() - t0, server.cpu_seconds() - cpu0
    return (f"{direction} of {size >> 20} MiB: {size / seconds / 1e6:,.0f} MB/s, "
            f"{cpu / (size / 1e9):.2f} server core-seconds per GB")


def fold(out):
    """perf script → {demangled stack: samples}, root first."""
    script = subprocess.run(["perf", "script", "-i", os.path.join(out, "perf.data"), "-F", "ip,sym,dso"],
                            capture_output=True, text=True, check=True).stdout
    stacks, frames = collections.Counter(), []
    for line in script.splitlines() + [""]:
        line = line.strip()
        if not line:
            if frames:
                stacks[";".join(reversed(frames))] += 1
            frames = []
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        sym, _, dso = parts[1].rpartition(" (")
        dso = os.path.basename(dso.rstrip(")"))
        frames.append(f"{sym or '[unknown]'} [{dso}]")
    # Demangle Swift names in one pass (perf leaves them mangled).
    keys = list(stacks)
    demangled = subprocess.run(["swift", "demangle", "--simplified"], input="\n".join(keys), capture_output=True,
                               text=True).stdout.split("\n")
    if len(demangled) >= len(keys):
        stacks = collections.Counter({demangled[i]: stacks[k] for i, k in enumerate(keys)})
    return stacks


def library_of(frame):
    """"name [library]" → "library"."""
    return frame[frame.rfind(" [") + 2:-1]


def summarise(stacks, top, headline):
    total = sum(stacks.values()) or 1
    self_counts, inclusive, libraries = collections.Counter(), collections.Counter(), collections.Counter()
    for stack, n in stacks.items():
        frames = stack.split(";")
        self_counts[frames[-1]] += n
        # An inlined frame's code lives in the library of the first real frame above it.
        library = next((lib for lib in map(library_of, reversed(frames)) if lib != "inlined"), "inlined")
        libraries[library] += n
        for f in set(frames):
            inclusive[f] += n

    def table(title, counter, column="function [library]"):
        rows = [f"### {title}", "", f"| % | samples | {column} |", "|---:|---:|---|"]
        rows += [f"| {100 * n / total:.1f} | {n} | `{f[:160]}` |" for f, n in counter.most_common(top)]
        return "\n".join(rows)

    return "\n\n".join([f"## Profile: {headline}", f"{total:,} samples of the apus process.",
                        table("By library (self samples)", libraries, "library"), table("Self", self_counts),
                        table("Inclusive", inclusive)]) + "\n"


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apus-profile-") as work, contextlib.ExitStack() as stack:
        cas, ac = {"memory": {"max_bytes": 16 << 30}}, None
        if args.through_grpc:
            upstream = stack.enter_context(start_apus(args.apus, work, cas, name="apus-upstream"))
            url = f"grpc://127.0.0.1:{upstream.port}"
            cas, ac = {"grpc": {"url": url}}, {"grpc": {"url": url, "role": "action_cache"}}
        with start_apus(args.apus, work, cas, ac) as server:
            if args.row == "small":
                with Recording(server.proc.pid, args.out, args.frequency):
                    headline = load_small(args, server, work)
                if args.through_grpc:
                    headline = f"through grpc stores to another apus: {headline}"
            else:
                h, size, body = prepare_blob(args, work)
                if args.row == "download":
                    load_blob(args, server, work, "upload", h, size, body)
                with Recording(server.proc.pid, args.out, args.frequency):
                    headline = load_blob(args, server, work, args.row, h, size, body)
    stacks = fold(args.out)
    with open(os.path.join(args.out, "folded.txt"), "w") as f:
        for stack, n in stacks.most_common():
            f.write(f"{stack} {n}\n")
    summary = summarise(stacks, args.top, headline)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(summary)
    print(summary)
    print(f"perf.data, folded.txt and summary.md in {args.out}")


if __name__ == "__main__":
    main()
