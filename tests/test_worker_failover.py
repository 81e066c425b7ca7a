"""Workers ride out the loss of a scheduler: several scheduler URLs, reconnection with backoff,
results of actions that ran through a broken stream, and credentials reloaded on SIGHUP.
Real processes on loopback ports (apus, Debian haproxy in TCP mode), stopped by PID."""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import ApusProcess, free_port
from execution import Action, response_of, worker_config
from buildgrid._protos.google.longrunning import operations_pb2, operations_pb2_grpc
from reapi import re_grpc, re_pb2
from tlscerts import CertificateAuthority

HAPROXY = "/usr/sbin/haproxy"


def cas_process(tmp_path):
    d = tmp_path / "cas"
    d.mkdir()
    return ApusProcess({
        "stores": {"cas": {"memory": {"max_bytes": 1 << 30}}, "ac": {"memory": {}}},
        "servers": [{"listen": "127.0.0.1:PORT", "instances": {"": {"cas": "cas", "action_cache": "ac"}}}],
        "global": {"shutdown_grace_seconds": 2},
    }, d).start()


def scheduler_process(tmp_path, name, cas_url):
    """A scheduler whose CAS and action cache are `grpc` stores on the shared CAS process."""
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return ApusProcess({
        "stores": {"cas": {"grpc": {"url": cas_url}}, "ac": {"grpc": {"url": cas_url, "role": "action_cache"}}},
        "schedulers": {"main": {"unsatisfiable_grace_seconds": 30}},
        "servers": [{"listen": "127.0.0.1:PORT", "worker_api": "main",
                     "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
        "global": {"shutdown_grace_seconds": 2},
    }, d)


def worker_process(tmp_path, schedulers, cas_url, **extra):
    d = tmp_path / "worker"
    d.mkdir(exist_ok=True)
    cfg = dict(worker_config(d, 0, url=cas_url), scheduler=schedulers, **extra)
    return ApusProcess({"workers": [cfg]}, d)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, what()
        time.sleep(0.05)


class HAProxy:
    """Debian's haproxy in TCP mode, in the foreground, started and stopped by PID."""

    def __init__(self, directory, backend_port):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.backend_port = backend_port
        self.proc = None

    def start(self):
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(
            "global\n  maxconn 200\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n"
            f"listen scheduler\n  bind 127.0.0.1:{self.port}\n  server s 127.0.0.1:{self.backend_port}\n")
        self.log = open(self.dir / "haproxy.log", "ab")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while True:
            try:
                with __import__("socket").create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                assert self.proc.poll() is None and time.time() < deadline, (self.dir / "haproxy.log").read_text()
                time.sleep(0.05)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def execute_in_background(action, **kw):
    """Runs Execute in a thread; returns (thread, box) with box["response"] when it ends."""
    box = {}

    def run():
        try:
            box["ops"], box["response"] = action.execute(timeout=120, **kw)
        except Exception as e:  # noqa: BLE001 — reported by the test's assertion
            box["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def registrations(worker):
    return worker.read_log().count("registered with scheduler")


def test_worker_moves_to_the_next_scheduler_when_one_dies(tmp_path):
    cas = cas_process(tmp_path)
    cas_url = f"grpc://{cas.address}"
    first = scheduler_process(tmp_path, "s1", cas_url).start()
    second = scheduler_process(tmp_path, "s2", cas_url).start()
    worker = worker_process(tmp_path, [f"grpc://{first.address}", f"grpc://{second.address}"], cas_url)
    try:
        worker.start_worker()
        assert f"scheduler=grpc://{first.address}" in worker.read_log()
        with grpc.insecure_channel(cas.address) as cas_channel, grpc.insecure_channel(first.address) as s1:
            action = Action(cas_channel, ["/bin/sh", "-c", "echo one"])
            action.channel = s1
            _, response = action.execute()
            assert response.status.code == 0 and response.result.exit_code == 0, response

        first.proc.kill()  # kill -9: no goodbye on the stream
        first.proc.wait()
        killed = time.time()
        wait_for(lambda: registrations(worker) >= 2, 15, worker.read_log)
        took = time.time() - killed
        log = worker.read_log()
        assert "switching scheduler" in log
        assert f"scheduler=grpc://{second.address}" in log.split("switching scheduler")[-1]
        print(f"re-registered with the second scheduler {took:.2f} s after kill -9 of the first")
        assert took < 10, log

        with grpc.insecure_channel(cas.address) as cas_channel, grpc.insecure_channel(second.address) as s2:
            action = Action(cas_channel, ["/bin/sh", "-c", "echo two > out.txt"], outputs=["out.txt"])
            action.channel = s2
            _, response = action.execute()
            assert response.status.code == 0 and response.result.exit_code == 0, response
            assert [f.path for f in response.result.output_files] == ["out.txt"]
    finally:
        worker.stop()
        second.stop()
        first.stop()
        cas.stop()


def test_running_action_survives_a_broken_stream(tmp_path):
    """Worker → haproxy → scheduler: haproxy killed and restarted while `sleep 3` runs; the
    worker reconnects and the client's Execute stream still gets exit 0."""
    cas = cas_process(tmp_path)
    cas_url = f"grpc://{cas.address}"
    scheduler = scheduler_process(tmp_path, "s", cas_url).start()
    proxy = HAProxy(tmp_path / "haproxy", scheduler.port).start()
    worker = worker_process(tmp_path, f"grpc://127.0.0.1:{proxy.port}", cas_url)
    try:
        worker.start_worker()
        with grpc.insecure_channel(cas.address) as cas_channel, grpc.insecure_channel(scheduler.address) as s:
            marker = tmp_path / "ran"
            action = Action(cas_channel, ["/bin/sh", "-c", f"echo x >> {marker}; sleep 3; echo slept"])
            action.channel = s
            thread, box = execute_in_background(action)
            wait_for(marker.exists, 30, worker.read_log)
            proxy.kill()
            time.sleep(0.3)
            proxy.start()
            thread.join(60)
            assert "error" not in box, box
            response = box["response"]
            assert response.status.code == 0 and response.result.exit_code == 0, response
            assert response.result.stdout_digest.size_bytes == len(b"slept\n")
        assert registrations(worker) >= 2, worker.read_log()
        assert marker.read_text() == "x\n", "the action ran more than once"
    finally:
        worker.stop()
        proxy.kill()
        scheduler.stop()
        cas.stop()


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].startswith("Z")


def test_kill_reaches_an_action_that_ran_through_a_reconnect(tmp_path):
    """The stream breaks while `sleep 300` runs; after the worker registers again,
    CancelOperation still kills the action's process and the client sees CANCELLED."""
    cas = cas_process(tmp_path)
    cas_url = f"grpc://{cas.address}"
    scheduler = scheduler_process(tmp_path, "s", cas_url).start()
    proxy = HAProxy(tmp_path / "haproxy", scheduler.port).start()
    worker = worker_process(tmp_path, f"grpc://127.0.0.1:{proxy.port}", cas_url)
    try:
        worker.start_worker()
        pidfile = tmp_path / "action.pid"
        with grpc.insecure_channel(cas.address) as cas_channel, grpc.insecure_channel(scheduler.address) as ch:
            action = Action(cas_channel, ["/bin/sh", "-c", f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 300"],
                            do_not_cache=True)
            stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=action.digest), timeout=120)
            first = next(stream)
            wait_for(pidfile.exists, 30, worker.read_log)
            pid = int(pidfile.read_text())
            proxy.kill()
            time.sleep(0.3)
            proxy.start()
            wait_for(lambda: registrations(worker) >= 2, 20, worker.read_log)
            time.sleep(0.5)  # the scheduler gives the action back to this worker as it registers
            assert not process_gone(pid), "the broken stream stopped the action"
            operations_pb2_grpc.OperationsStub(ch).CancelOperation(operations_pb2.CancelOperationRequest(name=first.name))
            response = response_of(list(stream)[-1])
            assert response.status.code == grpc.StatusCode.CANCELLED.value[0], response
            wait_for(lambda: process_gone(pid), 30, lambda: f"the cancelled action's process {pid} still runs")
        assert pidfile.read_text().strip() == str(pid), "the action ran again"
    finally:
        worker.stop()
        proxy.kill()
        scheduler.stop()
        cas.stop()


def test_worker_reloads_its_client_certificate_on_sighup(tmp_path):
    """mTLS to the scheduler through haproxy: the worker's certificate files are replaced by a
    new pair from the same CA and the worker gets SIGHUP while an action runs; after a forced
    reconnect the action's result arrives, and a scheduler that admits only the new
    certificate's subject takes the worker."""
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    client = ca.issue("client", "ci", client=True)
    old = ca.issue("worker-old", "worker-old", client=True)
    new = ca.issue("worker-new", "worker-new", client=True)
    cert, key = tmp_path / "worker.pem", tmp_path / "worker.key"
    cert.write_bytes(Path(old[0]).read_bytes())
    key.write_bytes(Path(old[1]).read_bytes())

    def scheduler_config(workers):
        return {
            "stores": {"cas": {"memory": {"max_bytes": 1 << 30}}, "ac": {"memory": {}}},
            "schedulers": {"main": {}},
            "servers": [{"listen": "127.0.0.1:PORT", "worker_api": "main",
                         "tls": {"certificate": str(server[0]), "private_key": str(server[1]),
                                 "client_ca": str(ca.cert), "client_auth": "require"},
                         "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
            "auth": {"instances": {"*": {"ci": ["read", "write", "execute"],
                                         "worker-old": ["read", "write", "write_ac"],
                                         "worker-new": ["read", "write", "write_ac"]}},
                     "schedulers": {"main": {name: ["worker"] for name in workers}}},
            "global": {"shutdown_grace_seconds": 2},
        }

    sdir = tmp_path / "s"
    sdir.mkdir()
    scheduler = ApusProcess(scheduler_config(["worker-old", "worker-new"]), sdir).start()
    proxy = HAProxy(tmp_path / "haproxy", scheduler.port).start()
    tls = {"ca": str(ca.cert), "certificate": str(cert), "private_key": str(key)}
    worker = worker_process(tmp_path, f"grpcs://127.0.0.1:{proxy.port}", f"grpcs://127.0.0.1:{scheduler.port}",
                            tls=tls)
    read = lambda p: Path(p).read_bytes()  # noqa: E731
    creds = grpc.ssl_channel_credentials(read(ca.cert), read(client[1]), read(client[0]))
    strict = ApusProcess(scheduler_config(["worker-new"]), sdir)
    try:
        worker.start_worker()
        with grpc.secure_channel(f"localhost:{scheduler.port}", creds) as ch:
            marker = tmp_path / "ran"
            action = Action(ch, ["/bin/sh", "-c", f"echo x >> {marker}; sleep 3; echo slept"])
            thread, box = execute_in_background(action)
            wait_for(marker.exists, 30, worker.read_log)
            # A rotation as certbot or cert-manager does it: new files renamed over the old.
            for src, dst in ((new[0], cert), (new[1], key)):
                tmp = dst.with_suffix(".tmp")
                tmp.write_bytes(read(src))
                os.replace(tmp, dst)
            worker.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "worker credentials loaded again" in worker.read_log(), 10, worker.read_log)
            assert worker.proc.poll() is None
            proxy.kill()  # the reconnect makes a new TLS connection
            time.sleep(0.3)
            proxy.start()
            thread.join(60)
            assert "error" not in box, box
            response = box["response"]
            assert response.status.code == 0 and response.result.exit_code == 0, response
        assert marker.read_text() == "x\n"
        assert registrations(worker) >= 2

        # The proof of which certificate is presented: a scheduler that admits only the new one.
        before = registrations(worker)
        scheduler.stop()
        strict.start(port=scheduler.port)
        wait_for(lambda: registrations(worker) > before, 20, worker.read_log)
        assert "worker refused" not in strict.read_log(since_launch=True)
        assert worker.proc.poll() is None
    finally:
        worker.stop()
        proxy.kill()
        strict.stop()
        scheduler.stop()
