"""Two scheduler processes sharing their state in a real PostgreSQL (tests/postgres.py),
behind a real HAProxy in TCP mode, with a CAS process and workers: any scheduler takes
Execute and answers for any operation, identical actions merge across them, a `kill -9`
of one loses no operation, and a PostgreSQL outage is UNAVAILABLE and /readyz 503 until
it is back. Everything is a real process on loopback ports, stopped by PID."""
import concurrent.futures
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from admin import http_get
from conftest import APUS, ROOT, ApusProcess, free_port
from execution import Action, read_blob, response_of, stage_of, worker_config
from postgres import PostgresServer
from reapi import re_grpc, re_pb2

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
MAX_JOB_RETRIES = 3


@pytest.fixture
def postgres(tmp_path):
    server = PostgresServer(tmp_path / "pg").start()
    yield server
    server.cleanup()


def cas_config():
    return {"stores": {"cas": {"memory": {"max_bytes": 1 << 30}}, "ac": {"memory": {}}},
            "servers": [{"listen": "127.0.0.1:PORT", "instances": {"": {"cas": "cas", "action_cache": "ac"}}}],
            "global": {"shutdown_grace_seconds": 2}}


def scheduler_config(pg_url, cas_address, admin_port, lease_seconds=3):
    """A scheduler process: no stores of its own (the CAS process's, over gRPC), the
    shared state in PostgreSQL, a worker API, and an admin listener for /readyz."""
    cas = f"grpc://{cas_address}"
    return {
        "stores": {"cas": {"grpc": {"url": cas}}, "ac": {"grpc": {"url": cas, "role": "action_cache"}}},
        "schedulers": {"main": {"max_job_retries": MAX_JOB_RETRIES, "worker_reconnect_grace_seconds": 2,
                                "state": {"postgres": {"url": pg_url, "lease_seconds": lease_seconds,
                                                       "poll_interval_milliseconds": 500,
                                                       "query_timeout_seconds": 2}}}},
        "servers": [{"listen": "127.0.0.1:PORT", "worker_api": "main",
                     "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "global": {"shutdown_grace_seconds": 2},
    }


class Scheduler:
    def __init__(self, tmp_path, name, pg_url, cas_address):
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.admin_port = free_port()
        self.config = scheduler_config(pg_url, cas_address, self.admin_port)
        self.port = free_port()
        self.proc = ApusProcess(self.config, self.dir)

    def start(self):
        self.proc.start(port=self.port)
        self.wait_ready()
        return self

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _ = readyz(self.admin_port)
            if status == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"scheduler not ready: {self.proc.read_log()[-3000:]}")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"


def readyz(admin_port):
    try:
        status, _, body = http_get(f"http://127.0.0.1:{admin_port}/readyz", timeout=5)
        return status, body.decode(errors="replace")
    except OSError as e:
        return None, str(e)


class HAProxy:
    """HAProxy in TCP mode in front of the schedulers: each new connection goes to a live
    one (round robin; a refused connection is redispatched, and health checks take a dead
    backend out)."""

    def __init__(self, tmp_path, backends):
        self.port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        lines = ["global", "  maxconn 1000", "defaults", "  mode tcp", "  timeout connect 1s",
                 "  timeout client 1h", "  timeout server 1h", "  retries 3", "  option redispatch",
                 "frontend fe", f"  bind 127.0.0.1:{self.port}", "  default_backend schedulers",
                 "backend schedulers", "  balance roundrobin"]
        lines += [f"  server s{i} {address} check inter 500ms fall 1 rise 1" for i, address in enumerate(backends)]
        cfg.write_text("\n".join(lines) + "\n")
        log = open(tmp_path / "haproxy.log", "ab")
        self.proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=log, stderr=log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                import socket
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("haproxy did not listen")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def execute_to_end(address, action_digest, deadline_seconds=180):
    """What Bazel does: Execute, and when the stream breaks, WaitExecution by the operation
    name through the same (load-balanced) address until the operation is done."""
    name = None
    end = time.time() + deadline_seconds
    while time.time() < end:
        try:
            with grpc.insecure_channel(address) as ch:
                stub = re_grpc.ExecutionStub(ch)
                if name is None:
                    stream = stub.Execute(re_pb2.ExecuteRequest(action_digest=action_digest, skip_cache_lookup=True),
                                          timeout=end - time.time())
                else:
                    stream = stub.WaitExecution(re_pb2.WaitExecutionRequest(name=name), timeout=end - time.time())
                for op in stream:
                    name = op.name
                    if op.done:
                        return name, response_of(op)
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL,
                                grpc.StatusCode.UNKNOWN):
                raise
            time.sleep(0.3)
    raise AssertionError(f"operation {name} did not finish within {deadline_seconds} s")


@pytest.fixture
def cluster(tmp_path, postgres):
    cas = ApusProcess(cas_config(), tmp_path / "cas-dir")
    (tmp_path / "cas-dir").mkdir()
    cas.start()
    schedulers = [Scheduler(tmp_path, f"s{i}", postgres.url, cas.address).start() for i in range(2)]
    proxy = HAProxy(tmp_path, [s.address for s in schedulers])
    workers = []
    yield {"cas": cas, "schedulers": schedulers, "proxy": proxy, "workers": workers, "postgres": postgres}
    for w in workers:
        w.stop()
    proxy.stop()
    for s in schedulers:
        s.proc.stop()
    cas.stop()


def stdout(cluster, response):
    with grpc.insecure_channel(cluster["cas"].address) as ch:
        return read_blob(ch, response.result.stdout_digest)


def start_worker(tmp_path, cluster, i, scheduler_address, slots=2):
    """A worker process; `scheduler_address` may be a list (it moves to the next when its
    stream breaks)."""
    d = tmp_path / f"worker{i}"
    d.mkdir()
    cfg = dict(worker_config(tmp_path, i), max_concurrent_actions=slots)
    addresses = scheduler_address if isinstance(scheduler_address, list) else [scheduler_address]
    cfg["scheduler"] = [f"grpc://{a}" for a in addresses]
    cfg["cas"] = f"grpc://{cluster['cas'].address}"
    w = ApusProcess({"workers": [cfg]}, d).start_worker()
    cluster["workers"].append(w)
    return w


def test_kill_9_of_a_scheduler_mid_action_loses_nothing_and_runs_nothing_too_often(tmp_path, cluster):
    s0, s1 = cluster["schedulers"]
    # Two workers through HAProxy (they land on either scheduler and reconnect through it
    # to the survivor) and two configured with both schedulers' URLs (each starting on a
    # different one, moving to the other when its stream breaks).
    start_worker(tmp_path, cluster, 0, cluster["proxy"].address)
    start_worker(tmp_path, cluster, 1, cluster["proxy"].address)
    start_worker(tmp_path, cluster, 2, [s0.address, s1.address])
    start_worker(tmp_path, cluster, 3, [s1.address, s0.address])
    marks = tmp_path / "marks"
    marks.mkdir()
    count = 16
    with grpc.insecure_channel(cluster["cas"].address) as cas:
        actions = [Action(cas, ["/bin/sh", "-c", f"echo run >> {marks}/{i}; sleep 2; echo result-{i}"],
                          do_not_cache=True) for i in range(count)]
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(execute_to_end, cluster["proxy"].address, a.digest) for a in actions]
        deadline = time.time() + 60
        while len(list(marks.iterdir())) < 4 and time.time() < deadline:
            time.sleep(0.05)
        assert len(list(marks.iterdir())) >= 4, "actions did not start"
        s0.proc.proc.send_signal(signal.SIGKILL)
        s0.proc.proc.wait()
        results = [f.result(timeout=240) for f in futures]
    names = [name for name, _ in results]
    assert len(set(names)) == count
    for i, (name, response) in enumerate(results):
        assert response.status.code == 0, response.status
        assert response.result.exit_code == 0
        assert stdout(cluster, response) == f"result-{i}\n".encode()
        runs = (marks / str(i)).read_text().count("run")
        assert 1 <= runs <= MAX_JOB_RETRIES + 1, f"action {i} ran {runs} times"
    # Every operation is answered by the surviving scheduler, by name, directly.
    with grpc.insecure_channel(s1.address) as ch:
        for name, response in results:
            ops = list(re_grpc.ExecutionStub(ch).WaitExecution(re_pb2.WaitExecutionRequest(name=name), timeout=30))
            assert ops[-1].done and response_of(ops[-1]).result.exit_code == 0
    # The killed one comes back and takes work again; then the other is killed.
    s0.proc.start(port=s0.port)
    s0.wait_ready()
    with grpc.insecure_channel(cluster["cas"].address) as cas:
        again = [Action(cas, ["/bin/sh", "-c", f"echo run >> {marks}/b{i}; sleep 1; echo again-{i}"],
                        do_not_cache=True) for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(execute_to_end, cluster["proxy"].address, a.digest) for a in again]
        deadline = time.time() + 60
        while not any(p.name.startswith("b") for p in marks.iterdir()) and time.time() < deadline:
            time.sleep(0.05)
        s1.proc.proc.send_signal(signal.SIGKILL)
        s1.proc.proc.wait()
        for f in futures:
            _, response = f.result(timeout=240)
            assert response.status.code == 0 and response.result.exit_code == 0
    for i in range(6):
        assert 1 <= (marks / f"b{i}").read_text().count("run") <= MAX_JOB_RETRIES + 1


def test_identical_actions_merge_across_schedulers_and_any_answers_for_any(tmp_path, cluster):
    s0, s1 = cluster["schedulers"]
    with grpc.insecure_channel(cluster["cas"].address) as cas:
        action = Action(cas, ["/bin/sh", "-c", "echo merged"])
    names = []
    for s in (s0, s1):
        with grpc.insecure_channel(s.address) as ch:
            stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=action.digest), timeout=30)
            first = next(stream)
            assert stage_of(first) == re_pb2.ExecutionStage.QUEUED
            names.append(first.name)
            stream.cancel()
    assert names[0] == names[1]
    start_worker(tmp_path, cluster, 0, s1.address)
    # The worker is on s1; the watcher on s0 hears of the result through PostgreSQL.
    with grpc.insecure_channel(s0.address) as ch:
        ops = list(re_grpc.ExecutionStub(ch).WaitExecution(re_pb2.WaitExecutionRequest(name=names[0]), timeout=60))
    assert ops[-1].done and stdout(cluster, response_of(ops[-1])) == b"merged\n"


def test_postgres_outage_is_unavailable_and_not_ready_then_recovers_without_loss(tmp_path, cluster):
    s0, s1 = cluster["schedulers"]
    pg = cluster["postgres"]
    with grpc.insecure_channel(cluster["cas"].address) as cas:
        before = Action(cas, ["/bin/sh", "-c", "echo before"], do_not_cache=True)
        during = Action(cas, ["/bin/sh", "-c", "echo during"], do_not_cache=True)
    # Accepted before the outage, with no worker yet: it must survive it.
    with grpc.insecure_channel(s0.address) as ch:
        stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=before.digest), timeout=30)
        accepted = next(stream).name
        stream.cancel()
    pg.stop()
    with grpc.insecure_channel(s1.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=during.digest), timeout=30))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "PostgreSQL at 127.0.0.1:" in e.value.details() and "unavailable" in e.value.details()
    deadline = time.time() + 20
    while readyz(s0.admin_port)[0] != 503 and time.time() < deadline:
        time.sleep(0.2)
    status, body = readyz(s0.admin_port)
    assert status == 503
    assert "scheduler main" in body
    pg.start()
    s0.wait_ready(timeout=60)
    s1.wait_ready(timeout=60)
    start_worker(tmp_path, cluster, 0, s1.address)
    name, response = execute_to_end(s0.address, during.digest)
    assert stdout(cluster, response) == b"during\n"
    with grpc.insecure_channel(s1.address) as ch:
        ops = list(re_grpc.ExecutionStub(ch).WaitExecution(re_pb2.WaitExecutionRequest(name=accepted), timeout=60))
    assert ops[-1].done and stdout(cluster, response_of(ops[-1])) == b"before\n"


def test_example_ha_config_passes_check(tmp_path):
    out = subprocess.run([str(APUS), "check", str(ROOT / "configs" / "ha-scheduler.json")],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "APUS_PG_PASSWORD": "x",
                                                              "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "state shared in PostgreSQL db.internal:5432/apus (sslmode verify-full" in out.stdout


def execute_like_bazel(address, action_digest, deadline):
    """What Bazel 4 does with `--remote_retries`: Execute; when a stream ends or breaks before
    the operation is done, WaitExecution by its name (through the same load-balanced address);
    when that says NOT_FOUND, Execute again. Returns (name, response, calls); raises
    AssertionError naming the operation if a stream stays open, silent, past `deadline`."""
    name, calls = None, []
    while time.time() < deadline:
        call = "WaitExecution" if name else "Execute"
        try:
            with grpc.insecure_channel(address) as ch:
                stub = re_grpc.ExecutionStub(ch)
                if name is None:
                    stream = stub.Execute(re_pb2.ExecuteRequest(action_digest=action_digest), timeout=deadline - time.time())
                else:
                    stream = stub.WaitExecution(re_pb2.WaitExecutionRequest(name=name), timeout=deadline - time.time())
                for op in stream:
                    name = op.name
                    if op.done:
                        calls.append(f"{call}: done")
                        return name, response_of(op), calls
                calls.append(f"{call} {name}: ended without an answer")
        except grpc.RpcError as e:
            calls.append(f"{call} {name}: {e.code().name} {e.details()}")
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                break
            if e.code() == grpc.StatusCode.NOT_FOUND:
                name = None
            elif e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED):
                raise
            time.sleep(0.2)
    raise AssertionError(f"operation {name} got no answer: {calls}")


def test_execute_streams_open_across_a_postgres_outage_are_all_answered(tmp_path, cluster):
    """Many Execute streams open while PostgreSQL is stopped for 10 s (as a Bazel build sees
    it): each gets its result or an error it retries on, never silence; none is lost."""
    s0, s1 = cluster["schedulers"]
    pg = cluster["postgres"]
    start_worker(tmp_path, cluster, 0, [s0.address, s1.address], slots=6)
    start_worker(tmp_path, cluster, 1, [s1.address, s0.address], slots=6)
    marks = tmp_path / "marks"
    marks.mkdir()
    count, parallel = 120, 24
    with grpc.insecure_channel(cluster["cas"].address) as cas:
        actions = [Action(cas, ["/bin/sh", "-c", f"echo run >> {marks}/{i}; sleep 0.3; echo result-{i}"])
                   for i in range(count)]
    deadline = time.time() + 150
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(execute_like_bazel, cluster["proxy"].address, a.digest, deadline) for a in actions]
        started = time.time() + 60
        while len(list(marks.iterdir())) < 30 and time.time() < started:
            time.sleep(0.05)
        assert len(list(marks.iterdir())) >= 30, "actions did not start"
        pg.stop()
        time.sleep(10)
        pg.start()
        errors = []
        for i, f in enumerate(futures):
            try:
                _, response, _ = f.result(timeout=max(1, deadline - time.time() + 5))
                assert response.status.code == 0, response.status
                assert stdout(cluster, response) == f"result-{i}\n".encode()
            except AssertionError as e:
                errors.append(f"action {i}: {e}")
    assert not errors, "\n".join(errors[:10])
    for i in range(count):
        assert 1 <= (marks / str(i)).read_text().count("run") <= MAX_JOB_RETRIES + 1
