"""Mixed cache + execution load against one local apus for a set time; see scripts/soak.sh.

Starts apus from configs/default.json (port, store sizes and operation retention changed,
data in a temp HOME), runs `--clients` grpcio threads doing FindMissingBlobs,
BatchUpdateBlobs, ByteStream Write/Read, UpdateActionResult/GetActionResult and Execute,
samples the server's RSS and open fds every `--sample-seconds`, and fails on any RPC error or
wrong answer, on RSS or fd growth after the warm-up, or on an unclean exit. Everything is on
loopback; apus is stopped by its PID.
"""
import argparse
import collections
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from reapi import bs_grpc, bs_pb2, digest, re_grpc, re_pb2  # noqa: E402

MIB = 1 << 20


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30, help="load duration (default 30)")
    p.add_argument("--warmup-minutes", type=float, default=2,
                   help="RSS/fd baseline is taken after this (default 2, at most half the run)")
    p.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    p.add_argument("--sample-seconds", type=float, default=5, help="RSS/fd sampling period (default 5)")
    p.add_argument("--rss-growth", type=float, default=1.5,
                   help="fail if end RSS > this x warm-up RSS (and > warm-up + 32 MiB); default 1.5")
    p.add_argument("--max-rss-mib", type=int, default=1024, help="fail if RSS ever exceeds this (default 1024)")
    p.add_argument("--fd-growth", type=int, default=32, help="fail if end fds > warm-up fds + this (default 32)")
    p.add_argument("--cas-max-mib", type=int, default=64,
                   help="CAS and worker cache size, so both evict and their indexes stop growing during "
                        "the warm-up (default 64)")
    p.add_argument("--ac-max-mib", type=int, default=2,
                   help="action cache size (default 2, ~14k entries, full within minutes, so its "
                        "index stops growing during the warm-up)")
    p.add_argument("--completed-operation-seconds", type=int, default=60,
                   help="how long the scheduler keeps finished operations (default 60, so the "
                        "warm-up reaches the steady state; apus's own default is 600)")
    p.add_argument("--apus", default=os.environ.get("APUS_BIN", str(ROOT / ".build" / "debug" / "apus")))
    p.add_argument("--keep", action="store_true", help="keep the temp data dir and log")
    return p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """apus with the default config on a free port (retried if taken), HOME in a temp dir."""

    def __init__(self, binary, home, cas_max_bytes, ac_max_bytes, completed_operation_seconds):
        self.binary, self.home = binary, Path(home)
        self.cas_max_bytes, self.ac_max_bytes = cas_max_bytes, ac_max_bytes
        self.completed_operation_seconds = completed_operation_seconds
        self.log_path = self.home / "apus.log"

    def start(self):
        # configs/default.json allows // comments and trailing commas; plain JSON is written.
        text = re.sub(r"^\s*//.*$", "", (ROOT / "configs" / "default.json").read_text(), flags=re.M)
        config = json.loads(re.sub(r",(\s*[}\]])", r"\1", text))
        config["stores"]["cas"]["filesystem"]["max_bytes"] = self.cas_max_bytes
        config["stores"]["ac"]["filesystem"]["max_bytes"] = self.ac_max_bytes
        config["schedulers"]["main"]["completed_operation_seconds"] = self.completed_operation_seconds
        # Every index reaches its cap (and steady state) during the warm-up.
        config["workers"][0]["cache_max_bytes"] = self.cas_max_bytes
        template = json.dumps(config, indent=2)
        assert template.count("127.0.0.1:50051") == 3, template
        for _ in range(5):
            self.port = free_port()
            path = self.home / "apus.json"
            path.write_text(template.replace("127.0.0.1:50051", f"127.0.0.1:{self.port}"))
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([self.binary, str(path)], stdout=log, stderr=log,
                                             env=dict(os.environ, HOME=str(self.home)))
            deadline = time.time() + 60
            while time.time() < deadline and self.proc.poll() is None:
                text = self.log_path.read_text(errors="replace")[offset:]
                if "listening" in text and "registered with scheduler" in text:
                    return self
                time.sleep(0.1)
            if self.proc.poll() is None:
                self.stop()
                break
            if "in use" not in self.log_path.read_text(errors="replace")[offset:].lower():
                break
        raise RuntimeError("apus did not start: " + self.log_path.read_text(errors="replace")[-3000:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "killed after 60 s"
        return self.proc.returncode

    def sample(self):
        pid = self.proc.pid
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """One client thread's loop: a random mix of calls, each answer checked."""

    def __init__(self, address, stop_at, seed, stats):
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 * MIB)])
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)
        self.bs = bs_grpc.ByteStreamStub(self.channel)
        self.ac = re_grpc.ActionCacheStub(self.channel)
        self.ex = re_grpc.ExecutionStub(self.channel)
        self.stop_at, self.rng, self.stats = stop_at, random.Random(seed), stats
        self.known = collections.deque(maxlen=16)  # (digest, data) recently written, maybe evicted since
        self.seed = seed

    def rpc(self, name, method, *args, **kwargs):
        """Calls one RPC (a streaming response is read to the end) and counts it."""
        result = method(*args, **kwargs)
        if name in ("ByteStream.Read", "Execute"):
            result = list(result)
        self.stats.count(name)
        return result

    def blob(self, max_size):
        # Sizes log-uniform from 16 B to max_size; content random so every blob is new.
        size = int(2 ** self.rng.uniform(4, max_size.bit_length() - 1))
        return self.rng.randbytes(size)

    def run(self):
        kinds = [("FindMissingBlobs", 3, self.find_missing), ("BatchUpdateBlobs", 2, self.batch_update),
                 ("ByteStream", 3, self.bytestream), ("ActionCache", 2, self.action_cache),
                 ("Execute", 1, self.execute)]
        weights = [w for _, w, _ in kinds]
        try:
            while time.time() < self.stop_at:
                name, _, call = self.rng.choices(kinds, weights)[0]
                try:
                    call()
                except grpc.RpcError as e:
                    self.stats.error(name, f"{e.code().name}: {e.details()}")
                except AssertionError as e:
                    self.stats.error(name, f"wrong answer: {e}")
                except Exception as e:  # anything else unexpected is a failure too, not a dead thread
                    self.stats.error(name, f"{type(e).__name__}: {e}")
        finally:
            self.channel.close()

    def find_missing(self):
        fresh = [digest(self.rng.randbytes(32)) for _ in range(20)]
        known = [d for d, _ in self.known]
        r = self.rpc("FindMissingBlobs", self.cas.FindMissingBlobs,
                     re_pb2.FindMissingBlobsRequest(blob_digests=fresh + known), timeout=60)
        missing = {(d.hash, d.size_bytes) for d in r.missing_blob_digests}
        assert {(d.hash, d.size_bytes) for d in fresh} <= missing, "never-written digests reported present"

    def batch_update(self):
        blobs = [self.blob(64 * 1024) for _ in range(self.rng.randint(1, 10))]
        r = self.rpc("BatchUpdateBlobs", self.cas.BatchUpdateBlobs, re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs]), timeout=60)
        assert all(x.status.code == 0 for x in r.responses), r
        r = self.rpc("BatchReadBlobs", self.cas.BatchReadBlobs,
                     re_pb2.BatchReadBlobsRequest(digests=[digest(b) for b in blobs]), timeout=60)
        assert [x.data for x in r.responses] == blobs, "BatchReadBlobs returned other bytes"

    def bytestream(self):
        if self.known and self.rng.random() < 0.2:
            d, data = self.rng.choice(self.known)  # a rewrite of an existing blob (answered early)
        else:
            data = self.blob(4 * MIB)
            d = digest(data)
        name = f"uploads/soak-{self.seed}/blobs/{d.hash}/{d.size_bytes}"
        chunk = 256 * 1024

        def requests():
            if not data:
                yield bs_pb2.WriteRequest(resource_name=name, finish_write=True)
            for offset in range(0, len(data), chunk):
                piece = data[offset:offset + chunk]
                yield bs_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset,
                                          data=piece, finish_write=offset + len(piece) == len(data))

        r = self.rpc("ByteStream.Write", self.bs.Write, requests(), timeout=120)
        assert r.committed_size == len(data), f"committed {r.committed_size} of {len(data)}"
        got = b"".join(x.data for x in self.rpc("ByteStream.Read", self.bs.Read,
            bs_pb2.ReadRequest(resource_name=f"blobs/{d.hash}/{d.size_bytes}"), timeout=120))
        assert got == data, "ByteStream Read returned other bytes"
        self.known.append((d, data))

    def action_cache(self):
        action = digest(self.rng.randbytes(32))
        out = self.blob(1024)
        self.rpc("BatchUpdateBlobs", self.cas.BatchUpdateBlobs, re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(out), data=out)]), timeout=60)
        result = re_pb2.ActionResult(exit_code=0, output_files=[re_pb2.OutputFile(path="o", digest=digest(out))])
        self.rpc("UpdateActionResult", self.ac.UpdateActionResult, re_pb2.UpdateActionResultRequest(action_digest=action, action_result=result),
                                   timeout=60)
        got = self.rpc("GetActionResult", self.ac.GetActionResult, re_pb2.GetActionResultRequest(action_digest=action), timeout=60)
        assert got.output_files[0].digest == digest(out), "GetActionResult returned another result"

    def execute(self):
        salt = self.rng.randrange(1 << 30)
        command = re_pb2.Command(arguments=["/bin/sh", "-c", f"echo {salt} > out; echo {salt}"],
                                 output_files=["out"],
                                 environment_variables=[re_pb2.Command.EnvironmentVariable(name="PATH", value="/usr/bin:/bin")])
        root = re_pb2.Directory()
        blobs = [command.SerializeToString(), root.SerializeToString()]
        action = re_pb2.Action(command_digest=digest(blobs[0]), input_root_digest=digest(blobs[1]))
        blobs.append(action.SerializeToString())
        r = self.rpc("BatchUpdateBlobs", self.cas.BatchUpdateBlobs, re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs]), timeout=60)
        assert all(x.status.code == 0 for x in r.responses), r
        for attempt in range(2):  # the second time from the action cache
            ops = self.rpc("Execute", self.ex.Execute, re_pb2.ExecuteRequest(action_digest=digest(blobs[2])), timeout=300)
            response = re_pb2.ExecuteResponse()
            ops[-1].response.Unpack(response)
            assert ops[-1].done and response.status.code == 0, response.status
            assert response.result.exit_code == 0, response.result
            assert response.cached_result == (attempt == 1), f"cached_result={response.cached_result} on run {attempt}"
            [out] = response.result.output_files
            data = self.rpc("BatchReadBlobs", self.cas.BatchReadBlobs, re_pb2.BatchReadBlobsRequest(digests=[out.digest]), timeout=60)
            assert data.responses[0].data == f"{salt}\n".encode(), "Execute output differs"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = collections.Counter()
        self.errors = collections.Counter()
        self.first_errors = []

    def count(self, kind):
        with self.lock:
            self.requests[kind] += 1

    def error(self, kind, message):
        with self.lock:
            self.errors[kind] += 1
            if len(self.first_errors) < 10:
                self.first_errors.append(f"{time.strftime('%H:%M:%S')} {kind}: {message[:300]}")


def main():
    args = parse_args()
    home = Path(tempfile.mkdtemp(prefix="apus-soak-"))
    server = Server(args.apus, home, args.cas_max_mib * MIB, args.ac_max_mib * MIB,
                    args.completed_operation_seconds).start()
    address = f"127.0.0.1:{server.port}"
    start = time.time()
    stop_at = start + args.minutes * 60
    warmup_at = start + min(args.warmup_minutes, args.minutes / 2) * 60
    print(f"soak: apus pid {server.proc.pid} on {address}, data in {home}, {args.minutes:g} min, "
          f"{args.clients} clients, warm-up until +{warmup_at - start:.0f} s", flush=True)
    stats = Stats()
    threads = [threading.Thread(target=Load(address, stop_at, seed, stats).run, daemon=True)
               for seed in range(args.clients)]
    for t in threads:
        t.start()

    samples, baseline = [], None
    next_print = start + 60
    while any(t.is_alive() for t in threads):
        if server.proc.poll() is not None:
            stats.error("server", f"apus exited with {server.proc.returncode}")
            break
        now = time.time()
        rss, fds = server.sample()
        samples.append((now - start, rss, fds))
        if baseline is None and now >= warmup_at:
            baseline = (rss, fds)
        if now >= next_print:
            next_print += 60
            with stats.lock:
                total, errors = sum(stats.requests.values()), sum(stats.errors.values())
            print(f"soak: +{now - start:.0f} s  requests {total}  errors {errors}  "
                  f"RSS {rss / MIB:.1f} MiB  fds {fds}", flush=True)
        for t in threads:
            t.join(timeout=args.sample_seconds / len(threads))
    end_rss, end_fds = samples[-1][1], samples[-1][2]
    baseline = baseline or (samples[0][1], samples[0][2])
    exit_status = server.stop()

    failures = []
    if sum(stats.errors.values()):
        failures.append(f"{sum(stats.errors.values())} RPC errors")
    if end_rss > args.rss_growth * baseline[0] and end_rss > baseline[0] + 32 * MIB:
        failures.append(f"RSS grew from {baseline[0] / MIB:.1f} MiB after warm-up to {end_rss / MIB:.1f} MiB "
                        f"(bound {args.rss_growth}x and +32 MiB)")
    max_rss = max(s[1] for s in samples)
    if max_rss > args.max_rss_mib * MIB:
        failures.append(f"RSS reached {max_rss / MIB:.1f} MiB (bound {args.max_rss_mib} MiB)")
    if end_fds > baseline[1] + args.fd_growth:
        failures.append(f"open fds grew from {baseline[1]} after warm-up to {end_fds} (bound +{args.fd_growth})")
    if exit_status != 0:
        failures.append(f"apus exit status on SIGTERM: {exit_status}")

    summary = {
        "minutes": args.minutes, "clients": args.clients,
        "requests": dict(sorted(stats.requests.items())), "requests_total": sum(stats.requests.values()),
        "errors": dict(sorted(stats.errors.items())), "errors_total": sum(stats.errors.values()),
        "rss_mib": {"start": round(samples[0][1] / MIB, 1), "after_warmup": round(baseline[0] / MIB, 1),
                    "end": round(end_rss / MIB, 1), "max": round(max_rss / MIB, 1)},
        "fds": {"start": samples[0][2], "after_warmup": baseline[1], "end": end_fds,
                "max": max(s[2] for s in samples)},
        "samples": len(samples), "apus_exit": exit_status, "failures": failures,
    }
    print("soak summary:")
    print(json.dumps(summary, indent=2))
    for e in stats.first_errors:
        print("  error:", e)
    if failures or args.keep:
        print(f"soak: data and apus log kept in {home}")
    else:
        subprocess.run(["rm", "-rf", str(home)], check=False)
    print("soak: " + ("FAILED: " + "; ".join(failures) if failures else "OK"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
