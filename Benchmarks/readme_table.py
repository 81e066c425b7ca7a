#!/usr/bin/env python3
"""Prints the README's "against the machine's floor" table from a suite run's JSON, so the
table is regenerated rather than hand-edited:

  Benchmarks/suite.py --quick --only small_rpcs --only large_blobs --no-peer \\
      [--baseline-apus PREVIOUS_BINARY]
  Benchmarks/readme_table.py [.build/benchmarks.json]

Rows whose figures the run lacks (no large_blobs, no baseline) are left out. The heading line
names the run: date, the binary's commit (--commit, else the checkout's HEAD as recorded by the
suite) and the command."""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RPCS = [("GetActionResult", "GetActionResult"), ("FindMissingBlobs, 10 digests", "FindMissingBlobs (10 digests)")]
PINNINGS = ["1 core", "1 core, 1 event loop", "2 cores"]


def ratio(a, b):
    """a / b, nan when b is 0 (a smoke run's CPU can round to nothing)."""
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="?", default=os.path.join(os.path.dirname(HERE), ".build", "benchmarks.json"))
    ap.add_argument("--commit", help="the measured binary's commit (default: the checkout's, from the run)")
    args = ap.parse_args()
    with open(args.json) as f:
        run = json.load(f)
    figures = {f["name"]: f for f in run["figures"]}

    def median(name):
        return figures[name]["median"] if name in figures else None

    streams = max((int(n.split(", ")[-1].split()[0]) for n in figures
                   if n.startswith("GetActionResult, ") and n.endswith(" streams")), default=64)
    rows = []

    def row(figure, apus, reference, ratio, target=""):
        rows.append(f"| {figure} | {apus} | {reference} | {ratio} | {target} |")

    for label, shown in RPCS:
        apus_us = median(f"{label}, {streams} streams, server CPU per request")
        floor = figures.get(f"nghttpd, {label}-sized reply, {streams} streams, server CPU per request")
        if apus_us is None or floor is None:
            continue
        row(f"{shown}, {streams} streams: server µs of CPU per request", f"{apus_us:.1f}",
            f"{floor['median']:.2f} ({floor['note']})", f"**{ratio(apus_us, floor['median']):.1f}×**", "≤ 3×")
        rate = median(f"{label}, {streams} streams")
        p99 = median(f"{label}, {streams} streams, p99")
        base = median(f"baseline {label}, {streams} streams, p99")
        if rate is not None:
            row(f"{shown}, {streams} streams: req/s (p99 ms)", f"{rate:,.0f} ({p99:.2f})",
                f"previous release p99 {base:.2f} ms" if base else "", f"p99 {ratio(p99, base):.2f}×" if base else "",
                "p99 ≤ previous release's" if base else "")
    for pinning in PINNINGS:
        for label, shown in RPCS:
            rate = figures.get(f"{label}, {streams} streams, server pinned to {pinning}")
            apus_us = median(f"{label}, {streams} streams, server pinned to {pinning}, server CPU per request")
            floor = figures.get(f"nghttpd, {label}-sized reply, {streams} streams, pinned to {pinning}, "
                                "server CPU per request")
            if rate is None or apus_us is None or floor is None:
                continue
            row(f"{shown}, {streams} streams, server pinned to {pinning}: req/s, µs of CPU per request",
                f"{rate['median']:,.0f}, {apus_us:.1f}", f"{floor['note']}, {floor['median']:.2f}",
                f"{ratio(apus_us, floor['median']):.1f}×")
    up, recv, sha = (median(f"{n}: server core-seconds per GB") for n in
                     ("apus memory upload", "nghttpd receiving", "SHA-256, one pass"))
    if None not in (up, recv, sha):
        row("large blob upload, memory store: server core-s per GB", f"{up:.2f}",
            f"nghttpd receiving {recv:.2f} + SHA-256 {sha:.2f}", f"**{ratio(up, recv + sha):.2f}×**", "≤ 1.15×")
    down, serve = median("apus memory download: server core-seconds per GB"), median("nghttpd serving: server core-seconds per GB")
    if None not in (down, serve):
        row("large blob download, memory store: server core-s per GB", f"{down:.2f}", f"nghttpd serving {serve:.2f}",
            f"**{ratio(down, serve):.2f}×**", "≤ 1.0×")

    commit = args.commit or run.get("commit", "?")
    print(f"Measured {run['date'][:10]}, binary of commit {commit}, {run['machine']['cores']} cores "
          f"({run['mode']} mode): `{run.get('command', 'Benchmarks/suite.py')}`; regenerate with "
          f"`Benchmarks/readme_table.py`.\n")
    print("| figure | apus | nghttpd (same client, same run) | apus / nghttpd | target |")
    print("|---|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
