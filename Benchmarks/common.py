"""What every benchmark scenario shares: servers on loopback, figures with min / median / max,
the gRPC framing of prepared request bodies, and the machine references (openssl, disk)."""
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get("APUS_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from reapi import bs_pb2, re_grpc, re_pb2  # noqa: E402,F401  (re-exported for the scenarios)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message, uncompressed."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def wait_for_port(port, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


class Server:
    """A server process on a loopback port, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, name, argv, port, workdir, cwd=None):
        self.name, self.port = name, port
        self.log_path = os.path.join(workdir, f"{name}-{port}.log")
        self.log = open(self.log_path, "wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)
        try:
            wait_for_port(port, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"{name} did not start; log:\n{self.tail_log()}")
        self.startup_seconds = time.perf_counter() - started
        # cpu_seconds: threads' on-CPU time at the last call, and what ended threads had used.
        self._seen_ns, self._gone_ns = {}, 0

    def tail_log(self, n=4000):
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024

    def cpu_seconds(self):
        """CPU time of the process so far, to the nanosecond: the sum of its threads' on-CPU
        time (/proc/PID/task/TID/schedstat), plus what threads gone since an earlier call had
        used by then. /proc/PID/stat counts in 10 ms ticks, which at 4 GB/s is a sixth of a
        256 MiB transfer's CPU; a thread that ends loses only its time since the last call."""
        live = {tid: ns for tid, (_, ns) in self._thread_ns(names=False).items()}
        self._gone_ns += sum(ns for tid, ns in self._seen_ns.items() if tid not in live)
        self._seen_ns = live
        return (sum(live.values()) + self._gone_ns) / 1e9

    def thread_cpu_seconds(self):
        """{thread id: (thread name, on-CPU seconds so far)} of every thread: shows which
        threads did the work (NIO's event loops are named NIO-SGLTN-… or NIO-ELT-…)."""
        return {tid: (name, ns / 1e9) for tid, (name, ns) in self._thread_ns().items()}

    def _thread_ns(self, names=True):
        """{thread id: (name, or None without `names`; on-CPU nanoseconds)} of the live threads."""
        threads = {}
        task = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(task):
            try:
                name = None
                if names:
                    with open(f"{task}/{tid}/comm") as f:
                        name = f.read().strip()
                with open(f"{task}/{tid}/schedstat") as f:
                    threads[tid] = (name, int(f.read().split()[0]))
            except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
                continue
        return threads

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_apus(apus, workdir, cas, ac=None, name="apus", port=None, extra=None, listeners=(), prefix=()):
    """An apus serving instance "" with the given CAS store spec (and a memory AC). Each of
    `listeners` (e.g. {"listen": "127.0.0.1:PORT", "tls": {...}}) is one more servers[] entry
    serving the same instance; the returned Server's port is the first, plaintext, listener.
    `prefix` goes before the command, e.g. ["taskset", "-c", "0"] to pin the server."""
    port = port or free_port()
    instances = {"": {"cas": "cas", "action_cache": "ac"}}
    cfg = {"stores": {"cas": cas, "ac": ac or {"memory": {}}},
           "servers": [{"listen": f"127.0.0.1:{port}", "instances": instances}]
           + [{"instances": instances, **listener} for listener in listeners],
           "global": {"log_level": "warning"}}
    cfg.update(extra or {})
    path = os.path.join(workdir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    server = Server(name, [*prefix, apus, path], port, workdir)
    try:
        for listener in listeners:
            wait_for_port(int(listener["listen"].rsplit(":", 1)[1]), server.proc, timeout=60)
    except Exception:
        server.stop()
        raise RuntimeError(f"{name} did not start all its listeners; log:\n{server.tail_log()}")
    return server


def start_buildgrid(workdir, port=None):
    """BuildGrid's cache services from ../shared/peers/buildgrid-cache.yml, on a free port."""
    port = port or free_port()
    with open(os.path.join(SHARED, "peers", "buildgrid-cache.yml")) as f:
        text = re.sub(r'address: "127\.0\.0\.1:\d+"', f'address: "127.0.0.1:{port}"', f.read())
    path = os.path.join(workdir, "buildgrid-cache.yml")
    with open(path, "w") as f:
        f.write(text)
    bgd = os.path.join(os.path.dirname(sys.executable), "bgd")
    return Server("buildgrid", [bgd, "server", "start", path], port, workdir)


@dataclass
class Figure:
    """One measured quantity over repeated runs."""
    scenario: str
    name: str
    unit: str
    samples: list = field(default_factory=list)
    note: str = ""

    @property
    def min(self):
        return min(self.samples)

    @property
    def median(self):
        return statistics.median(self.samples)

    @property
    def max(self):
        return max(self.samples)

    def as_json(self):
        return {"scenario": self.scenario, "name": self.name, "unit": self.unit,
                "min": self.min, "median": self.median, "max": self.max,
                "samples": self.samples, "note": self.note}


def fmt(x):
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3g}"


def percentile(sorted_xs, p):
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(len(sorted_xs) * p))]


def openssl_sha256_mbps(seconds=2):
    """Single-core SHA-256 throughput of this machine's OpenSSL (16 KiB blocks)."""
    out = subprocess.run(["openssl", "speed", "-evp", "sha256", "-seconds", str(seconds),
                          "-bytes", "16384"], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"sha256\s+([\d.]+)k", out).group(1)) * 1000 / 1e6


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


H2LOAD_GRPC = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


def h2load(url, body, *options):
    """Runs h2load posting a prepared gRPC request body (a plain GET without one); returns
    (stdout, client CPU seconds)."""
    before = children_cpu_seconds()
    request = ["-d", body, *H2LOAD_GRPC] if body else []
    p = subprocess.run(["h2load", *options, *request, url],
                       capture_output=True, text=True)
    cpu = children_cpu_seconds() - before
    if p.returncode != 0:
        raise RuntimeError(f"h2load failed ({p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}")
    return p.stdout, cpu


def h2load_counts(out):
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    total, started, done, ok, failed, errored = map(int, m.groups())
    data = re.search(r"traffic: .*\((\d+)\) data", out)
    data = int(data.group(1)) if data else None
    return {"done": done, "succeeded": ok, "failed": failed, "errored": errored, "data_bytes": data}


def h2load_seconds(out):
    """The wall time h2load reports for its run ("finished in 1.23s" or "…ms")."""
    m = re.search(r"finished in ([\d.]+)(ms|s|us)", out)
    return float(m.group(1)) / {"s": 1, "ms": 1e3, "us": 1e6}[m.group(2)]
