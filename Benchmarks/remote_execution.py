#!/usr/bin/env python3
"""Remote-execution overhead: N trivial actions through Execute against an all-in-one apus
(cache + scheduler + one local worker), beside running the same commands locally.

Actions are uploaded before timing and differ only in an environment variable, so each is
a real execution (skip_cache_lookup). Reports sequential per-action latency (remote minus
local = the overhead a build sees per action on its critical path) and throughput with
several actions in flight. Figures are printed, not asserted.

Usage: Benchmarks/remote_execution.py [--actions 500] [--parallel 8] [--apus .build/release/apus]
"""
import argparse
import concurrent.futures
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import grpc  # noqa: E402
from execution import Action, exec_config  # noqa: E402
from reapi import re_grpc, re_pb2  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--actions", type=int, default=500)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--apus", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "apus"))
    args = ap.parse_args()
    command = ["/bin/sh", "-c", "true"]

    with tempfile.TemporaryDirectory() as work:
        from pathlib import Path
        port = free_port()
        cfg = exec_config(Path(work), workers=1)
        cfg["workers"][0]["max_concurrent_actions"] = args.parallel
        cfg["global"]["log_level"] = "warning"
        text = json.dumps(cfg).replace("PORT", str(port))
        path = os.path.join(work, "apus.json")
        with open(path, "w") as f:
            f.write(text)
        proc = subprocess.Popen([args.apus, path])
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                for _ in range(200):
                    try:
                        re_grpc.CapabilitiesStub(ch).GetCapabilities(re_pb2.GetCapabilitiesRequest(), timeout=1)
                        break
                    except grpc.RpcError:
                        time.sleep(0.05)
                time.sleep(0.5)  # the worker registers
                actions = [Action(ch, command, env={"PATH": "/usr/bin:/bin", "N": str(i)})
                           for i in range(args.actions)]
                stub = re_grpc.ExecutionStub(ch)

                def execute(a):
                    start = time.perf_counter()
                    ops = list(stub.Execute(re_pb2.ExecuteRequest(action_digest=a.digest, skip_cache_lookup=True)))
                    assert ops[-1].done
                    return time.perf_counter() - start

                execute(actions[0])  # warm up connections
                seq = [execute(a) for a in actions[: args.actions // 2]]
                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
                    list(pool.map(execute, actions[args.actions // 2:]))
                par_wall = time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()

    local = []
    for _ in range(args.actions // 2):
        start = time.perf_counter()
        subprocess.run(command, check=True)
        local.append(time.perf_counter() - start)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda _: subprocess.run(command, check=True), range(args.actions - args.actions // 2)))
    local_par = time.perf_counter() - start

    n_par = args.actions - args.actions // 2
    rm, lm = statistics.median(seq), statistics.median(local)
    print(f"\nRemote execution, {args.actions} trivial actions (`sh -c true`), one local worker\n")
    print("| measure | remote | local | overhead |")
    print("|---|---:|---:|---:|")
    print(f"| sequential latency, median ms | {rm * 1e3:.2f} | {lm * 1e3:.2f} | {(rm - lm) * 1e3:.2f} |")
    print(f"| sequential latency, p90 ms | {sorted(seq)[int(len(seq) * 0.9)] * 1e3:.2f} | "
          f"{sorted(local)[int(len(local) * 0.9)] * 1e3:.2f} | |")
    print(f"| {args.parallel} in flight, actions/s | {n_par / par_wall:.0f} | {n_par / local_par:.0f} | |")


if __name__ == "__main__":
    main()
