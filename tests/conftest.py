"""Shared fixtures: start `apus` on a free loopback port with a config, stop it by PID."""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parent.parent
APUS = Path(os.environ.get("APUS_BIN", ROOT / ".build" / "debug" / "apus"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApusProcess:
    def __init__(self, config, workdir):
        self.config = config
        self.workdir = Path(workdir)
        self.proc = None
        self.port = None

    def start_worker(self):
        """A workers-only process: nothing to connect to, so wait for its registration."""
        return self.start(wait_for_port=False).wait_for_workers(1)

    def wait_for_workers(self, count):
        """Waits until this process's log shows `count` workers registered."""
        deadline = time.time() + 30
        while self.read_log().count("registered with scheduler") < count:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("workers did not register: " + self.read_log())
            time.sleep(0.05)
        return self

    def start(self, port=None, wait_for_port=True):
        self.port = port or free_port()
        cfg = json.loads(json.dumps(self.config).replace("PORT", str(self.port)))
        path = self.workdir / "apus.json"
        path.write_text(json.dumps(cfg, indent=2))
        self.log = open(self.workdir / "apus.log", "ab")
        env = dict(os.environ, HOME=str(self.workdir))
        self.proc = subprocess.Popen([str(APUS), str(path)], stdout=self.log, stderr=self.log, env=env)
        if not wait_for_port:
            return self
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apus exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("apus did not start listening: " + self.read_log())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def read_log(self):
        return (self.workdir / "apus.log").read_text(errors="replace")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"


def cache_config(cas_store, ac_store=None, **server):
    return {
        "stores": {"cas": cas_store, "ac": ac_store or {"memory": {"max_bytes": 64 << 20}}},
        "servers": [dict({"listen": "127.0.0.1:PORT",
                          "instances": {"": {"cas": "cas", "action_cache": "ac"},
                                        "team/a": {"cas": "cas", "action_cache": "ac"}}}, **server)],
        "global": {"shutdown_grace_seconds": 5},
    }


@pytest.fixture
def apus_factory(tmp_path):
    started = []

    def make(config, port=None):
        p = ApusProcess(config, tmp_path)
        started.append(p)
        return p.start(port)

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def apus(apus_factory):
    return apus_factory(cache_config({"memory": {"max_bytes": 1 << 30}}))


@pytest.fixture
def channel(apus):
    with grpc.insecure_channel(apus.address, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        yield ch
