#!/usr/bin/env python3
"""The Apus benchmark suite: every scenario, each against the machine's own limits and (where
it has the same services) BuildGrid as a peer, all in one run. Prints Markdown and writes every
figure (min / median / max over repeated runs) to a JSON file. Targets are reported, never
asserted: a miss is a finding, not a failure.

Run it through Benchmarks/run, which installs what it needs and builds apus first."""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import common
from common import fmt

SCENARIOS = ["large_blobs", "compression", "small_rpcs", "metrics", "tls", "bazel_e2e", "remote_execution", "footprint",
             "fleet"]

# Sizes per mode. quick stays under 5 minutes on a 2-core machine; smoke runs each scenario once
# at tiny sizes so CI notices when the suite rots, and its figures mean nothing.
MODES = {
    "full": dict(runs=3, large_blob_bytes=1 << 30, rpc_seconds=6, rpc_streams=[1, 16, 64],
                 bazel_targets=300, bazel_runs=3, bazel_rebuilds=3, actions=500, footprint_blobs=1_000_000,
                 fs_blobs=1_000_000),
    "quick": dict(runs=3, large_blob_bytes=256 << 20, rpc_seconds=2, rpc_streams=[1, 16, 64],
                  bazel_targets=300, bazel_runs=1, bazel_rebuilds=3, actions=500, footprint_blobs=250_000,
                  fs_blobs=250_000),
    "smoke": dict(runs=1, large_blob_bytes=4 << 20, rpc_seconds=0.3, rpc_streams=[1, 16],
                  bazel_targets=6, bazel_runs=1, bazel_rebuilds=1, actions=10, footprint_blobs=2_000,
                  fs_blobs=2_000),
}


class Context:
    """What a scenario gets: settings for the mode, a work directory, and the report."""

    def __init__(self, args, work):
        self.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        self.__dict__.update(MODES[self.mode])
        self.apus, self.work, self.peer, self.s3 = args.apus, work, not args.no_peer, args.s3
        self.baseline_apus = args.baseline_apus
        self.command = " ".join(["Benchmarks/suite.py"] + sys.argv[1:])
        # The checkout's commit: the measured binary's when it was built here (Benchmarks/run).
        self.commit = subprocess.run(["git", "-C", common.ROOT, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip() or "?"
        self.figures, self.sections, self.targets, self.ratios, self.failures = [], [], [], {}, []
        self.sha256_mbps = common.openssl_sha256_mbps(1 if self.mode == "smoke" else 3)

    def add(self, figure):
        self.figures.append(figure)
        return figure

    def ratio(self, name, value):
        self.ratios[name] = value

    def table(self, title, headers, rows, notes=()):
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        self.sections.append("\n".join(lines))
        print("\n" + self.sections[-1] + "\n", flush=True)

    def target(self, name, value, threshold, unit, detail="", higher_is_better=True):
        met = value >= threshold if higher_is_better else value <= threshold
        self.targets.append({"target": name, "measured": value, "threshold": threshold, "unit": unit,
                             "detail": detail, "met": met})

    def report(self):
        lines = [f"## Apus benchmarks ({self.mode}), {datetime.date.today().isoformat()}", "",
                 f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, Linux "
                 f"{platform.release()}; apus {self.apus}"
                 + (f"; baseline apus {self.baseline_apus}" if self.baseline_apus else ""), ""]
        if self.mode == "smoke":
            lines += ["Smoke mode: every scenario once at tiny sizes, to show the suite works. "
                      "These figures say nothing about performance.", ""]
        lines += [s + "\n" for s in self.sections]
        if self.targets:
            lines += ["### Targets (reported, not asserted)", "", "| target | measured | met |",
                      "|---|---:|---|"]
            for t in self.targets:
                lines.append(f"| {t['target']} | {fmt(t['measured'])}{t['unit']} ({t['detail']}) | "
                             f"{'yes' if t['met'] else '**no**'} |")
        if self.failures:
            lines += ["", "### Scenarios that failed", ""] + [f"- {name}: {err}" for name, err in self.failures]
        return "\n".join(lines) + "\n"

    def as_json(self):
        return {"mode": self.mode, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "command": self.command, "commit": self.commit, "apus": self.apus, "baseline_apus": self.baseline_apus,
                "machine": {"cores": os.cpu_count(), "arch": platform.machine(), "kernel": platform.release()},
                "openssl_sha256_MBps": self.sha256_mbps,
                "figures": [f.as_json() for f in self.figures], "ratios": self.ratios,
                "targets": self.targets, "failures": [{"scenario": n, "error": e} for n, e in self.failures]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes, one Bazel run: under 5 minutes")
    mode.add_argument("--smoke", action="store_true", help="each scenario once at tiny sizes (CI)")
    ap.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    ap.add_argument("--no-peer", action="store_true", help="skip the BuildGrid side-by-side rows")
    ap.add_argument("--s3", action="store_true", help="large blobs also through an s3 store on moto_server")
    ap.add_argument("--apus", default=os.path.join(common.ROOT, ".build", "release", "apus"))
    ap.add_argument("--baseline-apus", metavar="PATH",
                    help="small_rpcs: also run its rows on this binary (e.g. the previous release's), "
                         "alternating the two (A B A B), and compare p99 and CPU per request")
    ap.add_argument("--json", default=os.path.join(common.ROOT, ".build", "benchmarks.json"))
    ap.add_argument("--markdown", default=os.path.join(common.ROOT, ".build", "benchmarks.md"))
    ap.add_argument("--workdir", help="parent of the scratch directory (default: $TMPDIR)")
    args = ap.parse_args()
    args.apus = os.path.abspath(args.apus)
    if args.baseline_apus:
        args.baseline_apus = os.path.abspath(args.baseline_apus)
        if not os.access(args.baseline_apus, os.X_OK):
            ap.error(f"--baseline-apus {args.baseline_apus}: not an executable file")

    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="apus-bench-", dir=args.workdir)
    try:
        ctx = Context(args, work)
        for name in args.only or SCENARIOS:
            t0 = time.monotonic()
            print(f"== {name} ({ctx.mode})", flush=True)
            try:
                __import__(name).run(ctx)
            except Exception as e:  # one broken scenario must not hide the others' figures
                traceback.print_exc()
                ctx.failures.append((name, f"{type(e).__name__}: {e}".splitlines()[0]))
            print(f"== {name}: {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = ctx.report() + f"\nWhole suite: {time.monotonic() - started:.0f} s.\n"
    print("\n" + report)
    for path, text in ((args.markdown, report), (args.json, json.dumps(ctx.as_json(), indent=2) + "\n")):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    print(f"Figures: {args.json}\nTable: {args.markdown}")
    return 1 if ctx.failures else 0


if __name__ == "__main__":
    sys.exit(main())
