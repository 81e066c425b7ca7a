"""Helpers for the admin listener tests: HTTP GETs, a queue of sleeping actions, a config."""
import json
import math
import threading
import time
import urllib.error
import urllib.request

from conftest import free_port
from execution import Action
from reapi import re_grpc, re_pb2


def http_get(url, token=None, timeout=5):
    """(status, headers, body bytes) of a GET; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http_get_json(url, token=None):
    status, _, body = http_get(url, token)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


def wait_ready(admin_url, timeout=60):
    """Waits until `/readyz` answers 200 (listeners bound, workers registered); its body."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = http_get(admin_url + "/readyz", timeout=2)
            if last[0] == 200:
                return json.loads(last[2])
        except OSError as e:  # not listening yet
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{admin_url}/readyz not 200 within {timeout} s: {last}")


def wait_status(admin_url, predicate, timeout=30, what="condition"):
    """Polls `/status` until `predicate(status)` holds; that status."""
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        status = http_get_json(admin_url + "/status")
        if predicate(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"/status never showed {what} within {timeout} s; last: {json.dumps(status, indent=1)}")


def admin_exec_config(tmp_path, slots, ac_store=None):
    """Cache + scheduler `main` + one local worker with `slots` slots; an admin listener on a
    free port. Returns (config, admin port)."""
    admin_port = free_port()
    config = {
        "stores": {"cas": {"memory": {"max_bytes": 1 << 30}}, "ac": ac_store or {"memory": {}}},
        "schedulers": {"main": {}},
        "servers": [{"listen": "127.0.0.1:PORT", "worker_api": "main",
                     "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
        "workers": [{"scheduler": "grpc://127.0.0.1:PORT", "cas": "grpc://127.0.0.1:PORT",
                     "work_directory": str(tmp_path / "work"), "cache_directory": str(tmp_path / "cache"),
                     "max_concurrent_actions": slots}],
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "global": {"shutdown_grace_seconds": 2},
    }
    return config, admin_port


def desired_workers(queued, running, slots_per_worker):
    """docs/operations.md: ceil((queued + running) / slots_per_worker), 0 when idle."""
    return math.ceil((queued + running) / slots_per_worker) if queued + running else 0


class SleepingQueue:
    """`count` distinct actions that each sleep `seconds`, submitted with Execute from
    background threads so the scheduler holds them queued and running at once."""

    def __init__(self, channel, count, seconds):
        self.actions = [Action(channel, ["/bin/sh", "-c", f"sleep {seconds}; echo {i}"]) for i in range(count)]
        self.streams = [None] * count
        self.responses = [None] * count
        self.errors = []
        self._stub = re_grpc.ExecutionStub(channel)
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def _run(self, i):
        try:
            stream = self._stub.Execute(re_pb2.ExecuteRequest(action_digest=self.actions[i].digest), timeout=300)
            self.streams[i] = stream
            ops = list(stream)
            self.responses[i] = ops[-1]
        except Exception as e:  # a cancelled stream at teardown lands here too
            self.errors.append(e)

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def join(self, timeout):
        deadline = time.time() + timeout
        for t in self._threads:
            t.join(max(0, deadline - time.time()))
        return not any(t.is_alive() for t in self._threads)

    def cancel(self):
        for s in self.streams:
            if s is not None:
                s.cancel()
