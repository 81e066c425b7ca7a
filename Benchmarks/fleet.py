"""Scenario `fleet`: the scheduler with a large fleet and a deep queue, driven by one Python
process (grpc.aio) that plays both sides.

* Workers: N WorkerAPI streams (spread over several HTTP/2 connections, under the server's
  1,000-stream limit each) that register as `OSFamily=linux`, 1 slot each, and answer each
  StartAction with an ActionFinished after a set time. WorkerAPI is Apus's own protocol
  (proto/apus/worker/v1/worker.proto); its few messages are encoded here by hand.
* Clients: M coroutines calling Execute on unique actions (distinct `salt`, platform in the
  Action so the scheduler never reads a Command), each dropping its stream after the first
  Operation, as 100,000 open streams would exceed any stream limit.

Phases, each against a fresh apus (memory CAS, one scheduler; with `--postgres`, one or
more schedulers sharing a throwaway PostgreSQL, each simulated worker and client connected
to one of them in turn):
1. free workers: N workers connected, actions submitted by M clients; Execute → StartAction
   latency p50/p99 and the dispatch rate.
2. deep queue: Q unique Executes with no worker connected (submit CPU of the first and last
   10%, RSS per queued action), then N workers connect and drain it: dispatch rate and apus
   CPU per dispatched action.

CPU is the apus processes' own (user + system from /proc/PID/stat) and, with `--postgres`,
PostgreSQL's (the postmaster and its backends): the simulator shares the cores, so
wall-clock rates are a floor, CPU per action is what the scheduler costs. Run standalone:
`python3 Benchmarks/fleet.py --apus .build/release/apus [--baseline OTHER] [--mode quick]`;
PostgreSQL: `... --mode postgres --postgres --schedulers 2` (Debian `postgresql`, started by
tests/postgres.py).
"""
import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.request

import grpc

from common import Figure, Server, fmt, free_port, percentile, re_grpc, re_pb2

CONNECT = "/apus.worker.v1.WorkerAPI/Connect"
STREAMS_PER_CONNECTION = 250
# baseline_queued: main's scheduler costs O(queue) per Execute (minutes for 20,000), so the
# "before" side queues fewer.
SIZES = {"full": dict(workers=1000, clients=64, free_actions=20_000, queued=100_000, baseline_queued=2_000),
         "quick": dict(workers=1000, clients=64, free_actions=5_000, queued=20_000, baseline_queued=2_000),
         "smoke": dict(workers=20, clients=4, free_actions=100, queued=200, baseline_queued=200),
         # The shared scheduler: each action is a few statements on one PostgreSQL on the same cores.
         "postgres": dict(workers=100, clients=32, free_actions=2_000, queued=2_000, baseline_queued=2_000)}


# --- hand-written protobuf for the few WorkerAPI messages ---------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes_field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _read_varint(buf, i):
    """The varint at buf[i:]: (value, index after it)."""
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _fields(buf):
    """(field number, value) of a message: bytes for length-delimited fields, int for varints."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
            yield number, v
        elif wire == 2:
            n, i = _read_varint(buf, i)
            yield number, buf[i:i + n]
            i += n
        else:
            raise ValueError(f"unexpected wire type {wire}")


def register_message(worker_id, slots):
    prop = _bytes_field(1, b"OSFamily") + _bytes_field(2, b"linux")
    reg = _bytes_field(1, worker_id.encode()) + _bytes_field(2, prop) + _varint(3 << 3) + _varint(slots)
    return _bytes_field(1, reg)


KEEP_ALIVE = _bytes_field(2, b"")


def finished_message(operation):
    # ExecuteResponse{result: ActionResult{}}: exit code 0, status OK.
    return _bytes_field(3, _bytes_field(1, operation) + _bytes_field(2, _bytes_field(1, b"")))


def started_operation(message):
    for number, value in _fields(message):
        if number == 2:  # SchedulerMessage.start
            for n, v in _fields(value):
                if n == 1:
                    return bytes(v)
    return None


# --- the simulator ------------------------------------------------------------------------

class Fleet:
    """N fake workers on a few connections; records when each operation started."""

    def __init__(self, addresses, n, action_seconds):
        """`addresses`: one scheduler's, or several (worker i connects to the i-th in turn)."""
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.n, self.action_seconds = n, action_seconds
        self.started = {}  # operation name → monotonic time of its StartAction
        self.channels, self.calls, self.tasks = [], [], []
        self.all_registered = asyncio.Event()
        self.registered = 0

    async def start(self, wait=True):
        per = len(self.addresses)
        for a, address in enumerate(self.addresses):
            count = len(range(a, self.n, per))
            for c in range((count + STREAMS_PER_CONNECTION - 1) // STREAMS_PER_CONNECTION):
                # Own subchannel pool: one HTTP/2 connection per channel.
                self.channels.append((a, grpc.aio.insecure_channel(
                    address, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.channel_id", c)])))
        for i in range(self.n):
            mine = [ch for a, ch in self.channels if a == i % per]
            ch = mine[(i // per) // STREAMS_PER_CONNECTION]
            self.tasks.append(asyncio.ensure_future(self._worker(ch, i)))
        self.tasks.append(asyncio.ensure_future(self._keep_alive()))
        if wait:
            await asyncio.wait_for(self.all_registered.wait(), 300)

    async def _worker(self, channel, i):
        call = channel.stream_stream(CONNECT)()
        self.calls.append(call)
        await call.write(register_message(f"sim-{os.getpid()}-{i}", 1))
        loop = asyncio.get_running_loop()
        try:
            async for message in call:
                name = started_operation(message)
                if name is None:
                    self.registered += 1
                    if self.registered == self.n:
                        self.all_registered.set()
                    continue
                self.started[name] = time.monotonic()
                if self.action_seconds:
                    await asyncio.sleep(self.action_seconds)
                await call.write(finished_message(name))
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        del loop

    async def _keep_alive(self):
        while True:
            await asyncio.sleep(3)
            for call in list(self.calls):
                try:
                    await call.write(KEEP_ALIVE)
                except Exception:
                    pass

    async def stop(self):
        for t in self.tasks:
            t.cancel()
        for call in self.calls:
            call.cancel()
        for _, ch in self.channels:
            await ch.close()


async def upload_actions(channel, count, tag):
    """`count` unique Actions (distinct salt, OSFamily=linux in the Action) in the CAS."""
    cas = re_grpc.ContentAddressableStorageStub(channel)
    command = re_pb2.Command(arguments=["/bin/true"]).SerializeToString()
    root = re_pb2.Directory().SerializeToString()

    def d(b):
        return re_pb2.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=len(b))

    blobs = [command, root]
    digests = []
    platform = re_pb2.Platform(properties=[re_pb2.Platform.Property(name="OSFamily", value="linux")])
    for i in range(count):
        action = re_pb2.Action(command_digest=d(command), input_root_digest=d(root), platform=platform,
                               salt=f"{tag}-{i}".encode()).SerializeToString()
        blobs.append(action)
        digests.append(d(action))
    for start in range(0, len(blobs), 2000):
        batch = blobs[start:start + 2000]
        await cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
            requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=d(b), data=b) for b in batch]))
    return digests


async def submit(addresses, digests, clients, submitted, cpu_marks=None, server=None):
    """Execute each digest, keeping the stream only for its first Operation. Records the
    submit time per operation name; with `cpu_marks`, the servers' CPU at each 10%. Client i
    calls the i-th of `addresses` in turn."""
    # Dropping a call that is still running is an HTTP/2 reset, and apus allows a client
    # connection a burst of 2,000 of those then 200 a second (rapid-reset protection): the
    # clients spread over one connection each.
    channels = [grpc.aio.insecure_channel(addresses[i % len(addresses)],
                                          options=[("grpc.use_local_subchannel_pool", 1), ("grpc.channel_id", i)])
                for i in range(clients)]
    queue = list(reversed(digests))
    total = len(digests)
    done = [0]
    errors = []

    async def client(stub):
        while queue:
            dg = queue.pop()
            t0 = time.monotonic()
            call = stub.Execute(re_pb2.ExecuteRequest(action_digest=dg, skip_cache_lookup=True))
            try:
                async for op in call:
                    submitted[op.name.encode()] = t0
                    break
            except grpc.aio.AioRpcError as e:
                errors.append(e)
            finally:
                call.cancel()
            done[0] += 1
            if cpu_marks is not None and done[0] % max(1, total // 10) == 0:
                cpu_marks.append((done[0], server.cpu_seconds(), time.monotonic()))

    await asyncio.gather(*(client(re_grpc.ExecutionStub(ch)) for ch in channels))
    for ch in channels:
        await ch.close()
    if errors:
        raise RuntimeError(f"{len(errors)} Executes failed, first: {errors[0].code()} {errors[0].details()}")


class Schedulers:
    """One apus, or several sharing a PostgreSQL (`postgres`: a tests/postgres.py server),
    stopped together; CPU and RSS are their sum, `postgres_cpu_seconds` the database's."""

    def __init__(self, apus, work, name, count=1, postgres=None, baseline=False):
        self.postgres = postgres
        self.servers = []
        try:
            for i in range(count):
                self.servers.append(self._start(apus, work, f"{name}-{i}", baseline))
        except Exception:
            self.stop()
            raise
        self.addresses = [f"127.0.0.1:{s.port}" for s in self.servers]

    def _start(self, apus, work, name, baseline):
        port, admin = free_port(), free_port()
        # main's binary before the queue cap refused `max_queued_actions`: the baseline goes without.
        scheduler = {} if baseline and not self.postgres else {"max_queued_actions": 1_000_000}
        if self.postgres:
            scheduler["state"] = {"postgres": {"url": self.postgres.url, "max_connections": 10}}
        cfg = {
            "stores": {"cas": {"memory": {"max_bytes": 1 << 30}}, "ac": {"memory": {}}},
            "schedulers": {"main": scheduler},
            "servers": [{"listen": f"127.0.0.1:{port}", "worker_api": "main",
                         "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "global": {"log_level": "warning"},
        }
        path = os.path.join(work, f"{name}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        server = Server(name, [apus, path], port, work)
        server.admin_port = admin
        return server

    def queue_wait_buckets(self):
        """`apus_scheduler_queue_wait_seconds` summed over the schedulers: {le: cumulative
        count}. The scheduler's own share of Execute → start (queued until handed to a worker's
        stream), free of the simulator's delays."""
        out = {}
        for s in self.servers:
            with urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/metrics", timeout=10) as r:
                text = r.read().decode()
            for line in text.splitlines():
                if line.startswith("apus_scheduler_queue_wait_seconds_bucket{"):
                    le = line.split('le="', 1)[1].split('"', 1)[0]
                    bound = float("inf") if le == "+Inf" else float(le)
                    out[bound] = out.get(bound, 0) + float(line.rsplit(" ", 1)[1])
        return out

    def cpu_seconds(self):
        return sum(s.cpu_seconds() for s in self.servers)

    def rss_bytes(self):
        return sum(s.rss_bytes() for s in self.servers)

    def postgres_cpu_seconds(self):
        """User + system CPU of the postmaster and its live backends (pooled connections
        live as long as apus), plus what its exited children used; 0 without PostgreSQL."""
        if not self.postgres:
            return 0.0
        root = self.postgres.proc.pid
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(pid) == root:
                total += sum(int(x) for x in fields[11:15])
            elif int(fields[1]) == root:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self):
        for s in self.servers:
            s.stop()
        if self.postgres:
            # The next phase starts from empty tables (they exist once a scheduler migrated).
            self.postgres.sql("DO $$ BEGIN IF to_regclass('apus_operations') IS NOT NULL THEN "
                              "TRUNCATE apus_operations, apus_workers, apus_platforms; END IF; END $$")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


async def upload_everywhere(server, count, tag):
    """The actions, in the CAS of every scheduler (each has its own memory CAS)."""
    digests = None
    for address in server.addresses:
        async with grpc.aio.insecure_channel(address) as ch:
            digests = await upload_actions(ch, count, tag)
    return digests


async def free_workers_phase(server, size, results):
    digests = await upload_everywhere(server, size["free_actions"], "free")
    fleet = Fleet(server.addresses, size["workers"], 0)
    await fleet.start()
    submitted = {}
    waits0 = server.queue_wait_buckets()
    cpu0, pg0, t0 = server.cpu_seconds(), server.postgres_cpu_seconds(), time.monotonic()
    await submit(server.addresses, digests, size["clients"], submitted)
    while len(fleet.started) < len(digests) and time.monotonic() - t0 < 300:
        await asyncio.sleep(0.01)
    elapsed, cpu = time.monotonic() - t0, server.cpu_seconds() - cpu0
    pg = server.postgres_cpu_seconds() - pg0
    waits = {le: n - waits0.get(le, 0) for le, n in server.queue_wait_buckets().items()}
    await fleet.stop()
    # The histogram's p99: the smallest bucket bound holding 99% of the waits (an upper bound).
    total = waits.get(float("inf"), 0)
    p99_bound = next((le for le in sorted(waits) if total and waits[le] >= 0.99 * total), float("nan"))
    within = waits.get(0.01, 0) / total if total else float("nan")
    lat = sorted((fleet.started[n] - t) * 1e3 for n, t in submitted.items() if n in fleet.started)
    results.update(free_rate=len(lat) / elapsed, free_p50=percentile(lat, 0.5), free_p99=percentile(lat, 0.99),
                   free_cpu_us=cpu / max(1, len(lat)) * 1e6, free_pg_cpu_us=pg / max(1, len(lat)) * 1e6,
                   free_wait_p99=p99_bound * 1e3, free_wait_within_10ms=within * 100,
                   free_started=len(lat), free_total=len(digests))


async def deep_queue_phase(server, size, results):
    digests = await upload_everywhere(server, size["queued"], "queued")
    rss0 = server.rss_bytes()
    submitted, marks = {}, [(0, server.cpu_seconds(), time.monotonic())]
    await submit(server.addresses, digests, size["clients"], submitted, marks, server)
    rss1 = server.rss_bytes()
    step = [(b[1] - a[1]) / max(1, b[0] - a[0]) * 1e6 for a, b in zip(marks, marks[1:])]
    fleet = Fleet(server.addresses, size["workers"], 0)
    cpu0, pg0, t0 = server.cpu_seconds(), server.postgres_cpu_seconds(), time.monotonic()
    # Not waiting for every registration: a scheduler that walks the queue on each one
    # (main's) is part of what is measured.
    await fleet.start(wait=False)
    while len(fleet.started) < len(digests) and time.monotonic() - t0 < 600:
        await asyncio.sleep(0.05)
    elapsed, cpu = time.monotonic() - t0, server.cpu_seconds() - cpu0
    pg = server.postgres_cpu_seconds() - pg0
    await fleet.stop()
    results.update(queued=len(submitted), rss_per_queued=(rss1 - rss0) / max(1, len(submitted)),
                   submit_first_us=step[0] if step else 0, submit_last_us=step[-1] if step else 0,
                   drain_rate=len(fleet.started) / elapsed, drain_cpu_us=cpu / max(1, len(fleet.started)) * 1e6,
                   drain_pg_cpu_us=pg / max(1, len(fleet.started)) * 1e6, drained=len(fleet.started))


def measure(apus, work, size, label, baseline=False, schedulers=1, postgres=None):
    results = {}
    if baseline:
        size = dict(size, queued=size["baseline_queued"])

    async def both():  # one event loop: grpc.aio binds to the first one it sees
        with Schedulers(apus, work, f"{label}-free", schedulers, postgres, baseline) as server:
            await free_workers_phase(server, size, results)
        with Schedulers(apus, work, f"{label}-queue", schedulers, postgres, baseline) as server:
            await deep_queue_phase(server, size, results)

    asyncio.run(both())
    return results


ROWS = [("free_rate", "dispatch rate, workers free", "actions/s"),
        ("free_p50", "Execute → start p50, workers free", "ms"),
        ("free_p99", "Execute → start p99, workers free", "ms"),
        ("free_wait_p99", "queue → dispatch p99 at the scheduler (histogram bucket bound), workers free", "ms"),
        ("free_wait_within_10ms", "dispatched within 10 ms of queueing, at the scheduler, workers free", "%"),
        ("free_cpu_us", "apus CPU per action, workers free (Execute + dispatch + result)", "µs"),
        ("submit_first_us", "apus CPU per Execute, first 10% of the queue", "µs"),
        ("submit_last_us", "apus CPU per Execute, last 10% of the queue", "µs"),
        ("rss_per_queued", "RSS per queued action", "bytes"),
        ("drain_rate", "dispatch rate draining the queue", "actions/s"),
        ("drain_cpu_us", "apus CPU per dispatched action, draining the queue", "µs")]
# With --postgres: the database's share.
PG_ROWS = [("free_pg_cpu_us", "PostgreSQL CPU per action, workers free", "µs"),
           ("drain_pg_cpu_us", "PostgreSQL CPU per dispatched action, draining the queue", "µs")]


def run(ctx):
    size = SIZES[ctx.mode]
    baseline = os.environ.get("APUS_FLEET_BASELINE")
    sides = [("after", ctx.apus, False)]
    if baseline:
        sides.insert(0, ("before", baseline, True))
    measured = {}
    for label, apus, old in sides:
        measured[label] = measure(apus, ctx.work, size, label, baseline=old)
        for key, name, unit in ROWS:
            ctx.add(Figure("fleet", f"{label}: {name}", unit, [measured[label][key]]))
    headers = ["measure"] + [label for label, _, _ in sides] + ["unit"]
    rows = [[name] + [fmt(measured[label][key]) for label, _, _ in sides] + [unit] for key, name, unit in ROWS]
    rows.append(["actions queued in the deep-queue phase"] +
                [fmt(measured[label]["queued"]) for label, _, _ in sides] + ["actions"])
    ctx.table(f"Fleet: {size['workers']} simulated workers, {size['queued']:,} queued, "
              f"{size['free_actions']:,} actions with free workers", headers, rows,
              ["One Python process (grpc.aio) plays workers and clients on the same cores; CPU is apus's own.",
               "before: APUS_FLEET_BASELINE (main's binary) when set, with a shorter queue "
               f"({size['baseline_queued']:,}): its cost per Execute grows with the queue."])
    after = measured["after"]
    ctx.target("≤ 100 µs apus CPU per dispatched action (1,000 workers, deep queue)", after["drain_cpu_us"], 100,
               " µs", higher_is_better=False)
    ctx.target("p99 Execute → start < 10 ms with free workers", after["free_p99"], 10, " ms",
               "as the simulator sees it: its own delays on the shared cores included", higher_is_better=False)
    ctx.target("p99 queue → dispatch < 10 ms with free workers, at the scheduler (apus_scheduler_queue_wait_seconds)",
               after["free_wait_p99"], 10, " ms", "bucket bound; the simulator's delays excluded",
               higher_is_better=False)
    ctx.target("≤ 2 KiB RSS per queued action", after["rss_per_queued"], 2048, " B", higher_is_better=False)
    # Flat submission cost as the queue deepens.
    if after["submit_first_us"]:
        ctx.target("apus CPU per Execute, last 10% of the queue ≤ 1.5× the first 10%",
                   after["submit_last_us"] / after["submit_first_us"], 1.5, "×",
                   f"{after['submit_last_us']:.0f} vs {after['submit_first_us']:.0f} µs, {after['queued']:,} queued",
                   higher_is_better=False)
    ctx.target("every queued action dispatched once workers connect", after["drained"] / max(after["queued"], 1), 1.0,
               "×", f"{after['drained']:,} of {after['queued']:,}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apus", required=True)
    ap.add_argument("--baseline", help="another apus binary (main's) measured first, the same way")
    ap.add_argument("--mode", choices=SIZES, default="full")
    ap.add_argument("--queued", type=int, help="override the deep queue's size")
    ap.add_argument("--baseline-queued", type=int)
    ap.add_argument("--free-actions", type=int)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--postgres", action="store_true",
                    help="shared state in a throwaway PostgreSQL (tests/postgres.py) instead of memory")
    ap.add_argument("--schedulers", type=int, default=1, help="scheduler processes (with --postgres)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate baseline and apus this many times")
    args = ap.parse_args()
    size = dict(SIZES[args.mode])
    for key in ("queued", "baseline_queued", "free_actions", "workers", "clients"):
        if getattr(args, key):
            size[key] = getattr(args, key)
    if args.schedulers > 1 and not args.postgres:
        ap.error("--schedulers above 1 needs --postgres (the memory scheduler is one process)")
    work = tempfile.mkdtemp(prefix="apus-fleet-")
    postgres = None
    if args.postgres:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        from postgres import PostgresServer
        postgres = PostgresServer(os.path.join(work, "postgres")).start()
    sides = ([("before", args.baseline, True)] if args.baseline else []) + [("after", args.apus, False)]
    out = {label: [] for label, _, _ in sides}
    try:
        for _ in range(args.rounds):
            for label, apus, old in sides:
                out[label].append(measure(os.path.abspath(apus), work, size, label, baseline=old,
                                          schedulers=args.schedulers, postgres=postgres))
                print(label, json.dumps(out[label][-1]), flush=True)
    finally:
        if postgres:
            postgres.cleanup()
    rows = ROWS + (PG_ROWS if postgres else []) + [("queued", "actions queued in the deep-queue phase", "actions")]
    for key, name, unit in rows:
        print(f"| {name} | " + " | ".join(" / ".join(fmt(r[key]) for r in out[l]) for l, _, _ in sides)
              + f" | {unit} |")


if __name__ == "__main__":
    sys.exit(main())
