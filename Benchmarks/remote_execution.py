"""Scenario 4: trivial actions (`sh -c true`) through Execute against an all-in-one apus (cache,
scheduler, one local worker), beside running the same command locally.

Actions are uploaded before timing and differ only in an environment variable, so each one is
a real execution (skip_cache_lookup). Sequential wall time over N actions, remote minus local,
is the overhead a build sees per action on its critical path; a second batch with 8 in flight
gives throughput. The client is grpcio; its own CPU time per action is reported."""
import concurrent.futures
import json
import os
import subprocess
import time
from pathlib import Path

import grpc
from execution import Action, exec_config

from common import Figure, Server, fmt, free_port, re_grpc, re_pb2

COMMAND = ["/bin/sh", "-c", "true"]
IN_FLIGHT = 8


def start_executor(ctx):
    port = free_port()
    cfg = exec_config(Path(ctx.work) / "exec", workers=1)
    cfg["workers"][0]["max_concurrent_actions"] = IN_FLIGHT
    cfg["global"]["log_level"] = "warning"
    path = os.path.join(ctx.work, "apus-exec.json")
    with open(path, "w") as f:
        f.write(json.dumps(cfg).replace("PORT", str(port)))
    return Server("apus-exec", [ctx.apus, path], port, ctx.work)


def wait_for_worker(stub, ch):
    """Until one action runs: the in-process worker registers just after the port opens."""
    probe = Action(ch, COMMAND, env={"PATH": "/usr/bin:/bin", "PROBE": "1"})
    deadline = time.monotonic() + 60
    while True:
        try:
            ops = list(stub.Execute(re_pb2.ExecuteRequest(action_digest=probe.digest, skip_cache_lookup=True),
                                    timeout=10))
            if ops and ops[-1].done:
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def run(ctx):
    n = ctx.actions
    seq_remote = Figure("remote execution", f"{n} actions one after another, remote", "s")
    seq_local = Figure("remote execution", f"{n} actions one after another, local", "s")
    overhead = Figure("remote execution", "overhead per action (remote − local, sequential)", "ms")
    par_remote = Figure("remote execution", f"{IN_FLIGHT} in flight, remote", "actions/s")
    par_local = Figure("remote execution", f"{IN_FLIGHT} in flight, local", "actions/s")
    client_cpu = Figure("remote execution", "grpcio client CPU per remote action", "ms")
    with start_executor(ctx) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = re_grpc.ExecutionStub(ch)
        try:
            wait_for_worker(stub, ch)
        except grpc.RpcError as e:
            raise RuntimeError(f"no action ran: {e.code()} {e.details()}; apus log:\n{server.tail_log()}")

        def execute(action):
            ops = list(stub.Execute(re_pb2.ExecuteRequest(action_digest=action.digest, skip_cache_lookup=True)))
            result = re_pb2.ExecuteResponse()
            if not ops[-1].done or not ops[-1].response.Unpack(result) or result.result.exit_code != 0:
                raise RuntimeError(f"action did not succeed: {ops[-1]}")

        for r in range(ctx.runs):
            actions = [Action(ch, COMMAND, env={"PATH": "/usr/bin:/bin", "RUN": str(r), "N": str(i)})
                       for i in range(2 * n)]
            cpu0, start = time.process_time(), time.perf_counter()
            for a in actions[:n]:
                execute(a)
            remote = time.perf_counter() - start
            client_cpu.samples.append((time.process_time() - cpu0) / n * 1e3)
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
                list(pool.map(execute, actions[n:]))
            par_remote.samples.append(n / (time.perf_counter() - start))

            start = time.perf_counter()
            for _ in range(n):
                subprocess.run(COMMAND, check=True)
            local = time.perf_counter() - start
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
                list(pool.map(lambda _: subprocess.run(COMMAND, check=True), range(n)))
            par_local.samples.append(n / (time.perf_counter() - start))
            seq_remote.samples.append(remote)
            seq_local.samples.append(local)
            overhead.samples.append((remote - local) / n * 1e3)

    figures = [seq_remote, seq_local, overhead, par_remote, par_local, client_cpu]
    for f in figures:
        ctx.add(f)
    ctx.table(f"Remote execution: {n} trivial actions (`sh -c true`), one local worker, "
              f"{ctx.runs} runs", ["measure", "min", "median", "max", "unit"],
              [[f.name, fmt(f.min), fmt(f.median), fmt(f.max), f.unit] for f in figures],
              ["The client (grpcio, Python) is part of the remote figures; its CPU time is the last row."])
    ctx.target("≤ 15 ms remote-execution overhead per trivial action", overhead.median, 15, " ms",
               f"{n} sequential actions", higher_is_better=False)
