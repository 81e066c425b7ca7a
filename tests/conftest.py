"""Shared fixtures: start `apus` on a loopback port with a config, stop it by PID."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Tests fork processes (PostgreSQL restarted mid-test) while grpcio channels are busy in
# other threads; grpcio's fork handlers then abort the child ("Check failed:
# next_worker->state == KICKED") before it execs. No test relies on grpcio across fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402
import pytest

ROOT = Path(__file__).resolve().parent.parent
APUS = Path(os.environ.get("APUS_BIN", ROOT / ".build" / "debug" / "apus"))
# `... info apus: address=[IPv4]127.0.0.1/127.0.0.1:PORT instances=[...] [ApusServer] listening`:
# the address apus actually bound.
LISTENING = re.compile(r"address=\S*:(\d+)\s.*\[ApusServer\] listening\s*$", re.M)


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
        self.log = None
        self.log_offset = 0

    def start_worker(self):
        """A workers-only process: nothing to connect to, so wait for its registration."""
        return self.start(wait_for_port=False).wait_for_workers(1)

    def wait_for_workers(self, count):
        """Waits until this process's log shows `count` workers registered."""
        deadline = time.time() + 60
        while self.read_log().count("registered with scheduler") < count:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("workers did not register: " + self.read_log())
            time.sleep(0.05)
        return self

    def start(self, port=None, wait_for_port=True):
        """Starts apus and, unless it only runs workers, waits for its `listening` log line.

        A config whose `PORT` appears only in `servers[].listen` binds port 0 and the port is
        read back from the log. One that also needs the port elsewhere (an in-process worker
        dialling its own server) gets a free port, retried if another process took it first.
        """
        fixed = port is not None or "PORT" in json.dumps({k: v for k, v in self.config.items() if k != "servers"})
        if not wait_for_port:
            return self._launch(port or 0)
        for _ in range(5):
            self._launch(port if port is not None else (free_port() if fixed else 0))
            address = self._wait_listening()
            if address is not None:
                self.port = address
                return self
            if port is not None or "in use" not in self.read_log(since_launch=True).lower():
                break
        raise RuntimeError(f"apus did not start listening (exit {self.proc.returncode}): {self.read_log()}")

    def _launch(self, port):
        self.port = port
        self.log_offset = (self.workdir / "apus.log").stat().st_size if (self.workdir / "apus.log").exists() else 0
        cfg = json.loads(json.dumps(self.config).replace("PORT", str(self.port)))
        path = self.workdir / "apus.json"
        path.write_text(json.dumps(cfg, indent=2))
        if self.log:
            self.log.close()
        self.log = open(self.workdir / "apus.log", "ab")
        env = dict(os.environ, HOME=str(self.workdir))
        self.proc = subprocess.Popen([str(APUS), str(path)], stdout=self.log, stderr=self.log, env=env)
        return self

    def _wait_listening(self):
        """The port from this run's first `listening` log line, or None if apus exited first."""
        deadline = time.time() + 60
        while time.time() < deadline:
            m = LISTENING.search(self.read_log(since_launch=True))
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("apus did not log `listening` within 60 s: " + self.read_log())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def read_log(self, since_launch=False):
        """The log file (shared by every apus a test starts in one directory), or only what
        was written to it since this process was launched."""
        data = (self.workdir / "apus.log").read_bytes()
        return data[self.log_offset if since_launch else 0:].decode(errors="replace")

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


SHARED = Path(os.environ.get("APUS_SHARED", ROOT.parent / "shared"))
BAZEL4 = SHARED / "bazel-offline" / "bazel4"
EXAMPLE = SHARED / "bazel-offline" / "example"


def missing_bazel():
    """What the Bazel end-to-end tests need and cannot find, as readable phrases."""
    missing = []
    if not BAZEL4.exists():
        missing.append(f"{BAZEL4} (../shared/bazel-offline)")
    if shutil.which("bazel") is None:
        missing.append("`bazel` on PATH (Debian's bazel-bootstrap)")
    return missing


@pytest.fixture
def require_bazel():
    """Skips a Bazel test when Bazel is missing, except under CI=true, where that fails it."""
    missing = missing_bazel()
    if not missing:
        return
    message = "needs " + " and ".join(missing) + " (scripts/setup.sh --test installs bazel-bootstrap)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail("CI=true but Bazel is missing: " + message, pytrace=False)
    pytest.skip(message)
