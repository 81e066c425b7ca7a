"""S3 outages: apus degrades and never stalls a build.

moto is frozen (SIGSTOP: connections are accepted, nothing answers) or killed (SIGKILL, then
started again empty on the same port) while real Bazel builds through apus, or while a grpcio
client talks to apus run with the shipped `configs/s3-cas.json`. The circuit breaker's log
lines (`circuit opened` / `circuit closed`) are watched in apus.log as they appear.
"""
import json
import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from conftest import APUS, BAZEL4, ROOT, ApusProcess, cache_config, free_port
from reapi import digest, download, re_grpc, re_pb2
from s3server import CREDENTIALS, moto, s3_spec  # noqa: F401

OUTAGE_SECONDS = 60
MAX_CALL_SECONDS = 5.0  # the longest a Bazel call may take once the breaker has opened
BUCKET = "outage"


# ---------------------------------------------------------------------------------------------
# apus helpers


class LogWatcher:
    """Polls apus.log in a thread and records the wall-clock time at which each line that
    matches `pattern` first appeared (apus's own timestamps have a one-second resolution)."""

    def __init__(self, apus, pattern=r"circuit (opened|closed)|unreachable"):
        self.apus = apus
        self.pattern = re.compile(pattern)
        self.events = []  # (time.time(), line)
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.poll()
            time.sleep(0.05)

    def poll(self):
        now = time.time()
        lines = self.apus.read_log().splitlines()
        for line in lines[self._seen:]:
            if self.pattern.search(line):
                self.events.append((now, line))
        self._seen = len(lines)

    def first(self, word):
        return next((t for t, line in self.events if word in line), None)

    def count(self, word):
        return sum(1 for _, line in self.events if word in line)

    def lines(self, word=""):
        return [line for _, line in self.events if word in line]

    def wait_for(self, word, timeout, count=1, action=None):
        """Waits until `count` lines containing `word` appeared, running `action()` between
        checks (a call that gives the breaker something to count); returns the first one's time."""
        deadline = time.time() + timeout
        while self.count(word) < count:
            if time.time() > deadline:
                raise AssertionError(f"no {word!r} line in apus.log within {timeout} s; log tail:\n"
                                     + "\n".join(self.apus.read_log().splitlines()[-40:]))
            if action:
                action()
            else:
                time.sleep(0.1)
        return self.first(word)

    def close(self):
        self._stop.set()
        self._thread.join()


class ShippedConfigApus(ApusProcess):
    """apus run with a config file as shipped (JSON5 with `${VAR}`s), not a dict written by
    the test: the listen address comes from APUS_LISTEN=127.0.0.1:0 and is read back from the
    `listening` line like ApusProcess does."""

    def __init__(self, path, env, workdir):
        super().__init__({}, workdir)
        self.path = Path(path)
        self.env = env

    def _launch(self, port):
        self.port = port
        log = self.workdir / "apus.log"
        self.log_offset = log.stat().st_size if log.exists() else 0
        if self.log:
            self.log.close()
        self.log = open(log, "ab")
        env = dict(os.environ, HOME=str(self.workdir), **self.env)
        self.proc = subprocess.Popen([str(APUS), str(self.path)], stdout=self.log, stderr=self.log, env=env)
        return self


def s3_store(moto, prefix, **extra):
    """An s3 store that gives up on a silent S3 quickly: 1 s to connect, 2 s to the first byte."""
    return s3_spec(moto, BUCKET, prefix, **dict({"first_byte_timeout_seconds": 2, "connect_timeout_seconds": 1},
                                                 **extra))


def async_fast_slow(fast, slow, journal):
    return {"fast_slow": {"fast": fast, "slow": slow, "slow_write": "async",
                          "write_behind": {"path": str(journal)}}}


def outage_config(moto, tmp_path):
    """CAS and AC both fast_slow(filesystem, s3) with write-behind to S3."""
    config = cache_config(
        async_fast_slow({"filesystem": {"path": str(tmp_path / "fast-cas"), "max_bytes": 4 << 30}},
                        s3_store(moto, "cas/"), tmp_path / "write-behind-cas"),
        async_fast_slow({"filesystem": {"path": str(tmp_path / "fast-ac"), "content": "action_cache"}},
                        s3_store(moto, "ac/"), tmp_path / "write-behind-ac"))
    config["global"]["shutdown_grace_seconds"] = 2
    return config


def fast_tier_blobs(root, since=None):
    """`<hash>-<size>` of every plain blob file under `root/content/` (`.sealed` files are
    action-cache values), only those written at or after `since` if given."""
    blobs = set()
    content = Path(root) / "content"
    if not content.exists():
        return blobs
    for sub in content.iterdir():
        try:
            entries = list(sub.iterdir())
        except (NotADirectoryError, FileNotFoundError):
            continue
        for f in entries:
            if not re.fullmatch(r"[0-9a-f]{64}-\d+", f.name):
                continue
            if since is not None:
                try:
                    if f.stat().st_mtime < since:
                        continue
                except FileNotFoundError:
                    continue
            blobs.add(f.name)
    return blobs


def bucket_keys(moto, prefix, bucket=BUCKET):
    client, keys, token = moto.client(), set(), None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kwargs)
        keys.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def wait_until_in_bucket(moto, blobs_fn, deadline):
    """Polls until every blob `blobs_fn()` names is in the bucket under `cas/`; returns the
    time it first was, or raises with what is still missing at `deadline`."""
    while True:
        wanted = blobs_fn()
        try:
            missing = wanted - bucket_keys(moto, "cas/")
        except Exception as e:  # noqa: BLE001 -- moto just back, or not yet
            missing = {f"(listing failed: {e})"}
        if not missing:
            return time.time(), len(wanted)
        if time.time() > deadline:
            raise AssertionError(f"{len(missing)} of {len(wanted)} fast-tier blobs not in the bucket in time, "
                                 f"e.g. {sorted(missing)[:5]}")
        time.sleep(1)


# ---------------------------------------------------------------------------------------------
# Bazel's --experimental_remote_grpc_log: varint-delimited remote_logging.LogEntry messages
# (src/main/protobuf/remote_execution_log.proto: status = 2, method_name = 3, start_time = 5,
# end_time = 6; google.protobuf.Timestamp: seconds = 1, nanos = 2; google.rpc.Status: code = 1).


def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf):
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _timestamp(buf):
    seconds = nanos = 0
    for number, value in _fields(buf):
        if number == 1:
            seconds = value
        elif number == 2:
            nanos = value
    return seconds + nanos / 1e9


def read_grpc_log(path):
    """[{method, start, end, duration, code}] for each call Bazel logged."""
    data, i, entries = Path(path).read_bytes(), 0, []
    while i < len(data):
        n, i = _varint(data, i)
        message, i = data[i:i + n], i + n
        entry = {"method": "", "start": None, "end": None, "code": 0}
        for number, value in _fields(message):
            if number == 2:
                entry["code"] = next((v for k, v in _fields(value) if k == 1), 0)
            elif number == 3:
                entry["method"] = value.decode()
            elif number == 5:
                entry["start"] = _timestamp(value)
            elif number == 6:
                entry["end"] = _timestamp(value)
        if entry["start"] is not None and entry["end"] is not None:
            entry["duration"] = entry["end"] - entry["start"]
            entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------
# A generated workspace: sleeping genrules with distinct outputs, some chained, in packages.

PACKAGES = 5
RULES_PER_PACKAGE = 36


def generate_workspace(root, packages=PACKAGES, rules=RULES_PER_PACKAGE):
    root.mkdir(parents=True)
    (root / "WORKSPACE").write_text('workspace(name = "outage")\n')
    for p in range(packages):
        pkg = root / f"p{p}"
        pkg.mkdir()
        out = []
        for r in range(rules):
            size = [2_000, 15_000, 50_000, 110_000, 220_000][(p * rules + r) % 5]  # x 4/3 in base64
            srcs = f'srcs = [":r{r - 1}"], ' if r % 4 else ""
            chained = "sha256sum $(SRCS); " if r % 4 else ""
            # Genrules run under `set -o pipefail`: nothing here may die of SIGPIPE.
            out.append(
                f'genrule(name = "r{r}", {srcs}outs = ["r{r}.out"], '
                f'cmd = "sleep 1.5; {{ echo p{p}/r{r}; {chained}head -c {size} /dev/urandom | base64; }} > $@")\n')
        (pkg / "BUILD").write_text("".join(out))
    return root


class BazelBuild:
    """One `bazel build //...` in the background against apus, with a gRPC log."""

    def __init__(self, tmp_path):
        self.workspace = generate_workspace(tmp_path / "ws")
        self.root = tmp_path / "bazel-root"
        self.grpc_log = tmp_path / "grpc.log"
        self.output = tmp_path / "bazel.out"
        self.proc = None
        self.started = self.ended = None

    def start(self, port):
        cmd = [str(BAZEL4), f"--output_user_root={self.root}", "build", "//...", "--jobs=4",
               f"--remote_cache=grpc://127.0.0.1:{port}", "--remote_timeout=60", "--noremote_local_fallback",
               f"--experimental_remote_grpc_log={self.grpc_log}"]
        self.started = time.time()
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.workspace, stdout=out, stderr=subprocess.STDOUT)
        return self

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=400):
        code = self.proc.wait(timeout=timeout)
        self.ended = time.time()
        return code, self.output.read_text(errors="replace")

    def shutdown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run([str(BAZEL4), f"--output_user_root={self.root}", "shutdown"], cwd=self.workspace,
                       capture_output=True, timeout=120)


@pytest.fixture
def bazel_build(tmp_path):
    b = BazelBuild(tmp_path)
    yield b
    b.shutdown()


def run_build_through_outage(apus_factory, moto, bazel_build, tmp_path, outage, only_since_outage):
    """Builds while `outage(moto)` takes S3 away for OUTAGE_SECONDS (it returns when the outage
    began and when S3 was back); checks the build, Bazel's call durations and that the bucket
    catches up with the fast tier (only with the blobs written since the outage began if
    `only_since_outage`: S3 lost the others); returns the figures."""
    moto.make_bucket(BUCKET)
    apus = apus_factory(outage_config(moto, tmp_path))
    watcher = LogWatcher(apus)
    fast = tmp_path / "fast-cas"
    try:
        bazel_build.start(apus.port)
        # Take S3 away once the build is well under way.
        deadline = time.time() + 120
        while len(fast_tier_blobs(fast)) < 60 or time.time() - bazel_build.started < 20:
            assert bazel_build.running(), "the build ended before the outage: " + bazel_build.output.read_text()[-3000:]
            assert time.time() < deadline, "the fast tier filled too slowly"
            time.sleep(0.2)
        outage_started, back = outage(moto)
        assert bazel_build.running(), "the build ended during the outage: make the workspace bigger"

        # Every blob written to the fast tier until now (or since the outage) reaches the
        # bucket within OUTAGE_SECONDS of S3's return, even while the build goes on.
        since = outage_started if only_since_outage else None
        snapshot = fast_tier_blobs(fast, since)
        at_return, count = wait_until_in_bucket(moto, lambda: snapshot, back + 60)
        code, out = bazel_build.wait()
        assert code == 0, out[-4000:]
        # And, once the build is over, every blob it wrote.
        all_in, total = wait_until_in_bucket(moto, lambda: fast_tier_blobs(fast, since),
                                             max(back, bazel_build.ended) + 60)
    finally:
        watcher.close()

    opened = watcher.first("circuit opened")
    assert opened is not None, "the breaker never opened:\n" + apus.read_log()[-4000:]
    calls = read_grpc_log(bazel_build.grpc_log)
    assert calls, "empty gRPC log"
    after = [c for c in calls if c["start"] >= opened]
    slowest = max(after, key=lambda c: c["duration"], default=None)
    figures = {
        "build_seconds": round(bazel_build.ended - bazel_build.started, 1),
        "outage_began_after_build_start_s": round(outage_started - bazel_build.started, 1),
        "breaker_opened_after_outage_began_s": round(opened - outage_started, 1),
        "breaker_lines": watcher.lines("circuit"),
        "calls": len(calls),
        "calls_after_breaker_opened": len(after),
        "max_call_after_breaker_opened_s": round(slowest["duration"], 2) if slowest else None,
        "slowest_call_after_breaker_opened": slowest and slowest["method"],
        "max_call_overall_s": round(max(c["duration"] for c in calls), 2),
        "s3_back_after_build_start_s": round(back - bazel_build.started, 1),
        "outage_blobs_in_bucket_after_s3_back_s": round(at_return - back, 1),
        "outage_blobs": count,
        "all_blobs_in_bucket_after_s3_back_s": round(all_in - back, 1),
        "all_blobs_in_bucket_after_build_end_s": round(all_in - bazel_build.ended, 1),
        "all_blobs": total,
    }
    print(json.dumps(figures, indent=2))
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
    # Uploads are acknowledged from the fast tier, and lookups answered from it: no call fails
    # (a GetActionResult miss is NOT_FOUND).
    failed = [(c["method"], c["code"], round(c["start"] - opened, 1)) for c in calls
              if c["code"] != 0 and not (c["code"] == 5 and c["method"].endswith("/GetActionResult"))]
    assert not failed, f"{len(failed)} calls failed, e.g. {failed[:8]}"
    slow = sorted((c for c in after if c["duration"] > MAX_CALL_SECONDS), key=lambda c: -c["duration"])
    assert not slow, (f"{len(slow)} calls took over {MAX_CALL_SECONDS} s after the breaker opened, e.g. "
                      + repr([(c["method"], round(c["duration"], 1), round(c["start"] - opened, 1)) for c in slow[:8]])
                      + "\n" + json.dumps(figures, indent=2))
    return figures


def freeze_for_a_while(moto):
    began = time.time()
    moto.freeze()
    try:
        time.sleep(OUTAGE_SECONDS)
    finally:
        moto.resume()
    return began, time.time()


def kill_and_restart(moto):
    moto.kill()
    began = time.time()  # moto is dead: nothing written after this reached it
    time.sleep(OUTAGE_SECONDS)
    moto.start()  # on the same port, empty
    moto.make_bucket(BUCKET)
    return began, time.time()


@pytest.mark.usefixtures("require_bazel")
@pytest.mark.timeout(600)
def test_bazel_build_survives_s3_freeze(apus_factory, moto, bazel_build, tmp_path):
    run_build_through_outage(apus_factory, moto, bazel_build, tmp_path, freeze_for_a_while, False)


@pytest.mark.usefixtures("require_bazel")
@pytest.mark.timeout(600)
def test_bazel_build_survives_s3_restart(apus_factory, moto, bazel_build, tmp_path):
    run_build_through_outage(apus_factory, moto, bazel_build, tmp_path, kill_and_restart, True)


# ---------------------------------------------------------------------------------------------
# grpcio client against apus


def batch_update(ch, blobs, timeout):
    """Per-blob status codes of one BatchUpdateBlobs (an RPC-level error counts for each
    blob), and how long it took."""
    request = re_pb2.BatchUpdateBlobsRequest(
        requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs])
    began = time.monotonic()
    try:
        response = re_grpc.ContentAddressableStorageStub(ch).BatchUpdateBlobs(request, timeout=timeout)
        codes = [r.status.code for r in response.responses]
    except grpc.RpcError as e:
        codes = [e.code().value[0]] * len(blobs)
    return codes, time.monotonic() - began


def find_missing(ch, digests, timeout=60):
    began = time.monotonic()
    response = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=digests), timeout=timeout)
    return {(d.hash, d.size_bytes) for d in response.missing_blob_digests}, time.monotonic() - began


def keys_of(digests):
    return {(d.hash, d.size_bytes) for d in digests}


def new_blobs(sizes):
    return [os.urandom(n) for n in sizes]


SMALL_AND_LARGE = [100, 5_000, 40_000, 64 * 1024, 200_000, 1 << 20]
HOLD_SECONDS = 25  # how long S3 stays frozen once the breaker opened: two half-open probes


def shipped_apus(tmp_path, moto_endpoint, bucket):
    env = {"APUS_S3_ENDPOINT": moto_endpoint, "APUS_S3_BUCKET": bucket, "AWS_REGION": "us-east-1",
           "APUS_S3_PATH_STYLE": "true", "APUS_DATA": str(tmp_path / "data"), "APUS_LISTEN": "127.0.0.1:0",
           **CREDENTIALS}
    return ShippedConfigApus(ROOT / "configs" / "s3-cas.json", env, tmp_path)


def test_shipped_s3_config_with_frozen_s3(moto, tmp_path):
    moto.make_bucket("shipped")
    apus = shipped_apus(tmp_path, moto.endpoint, "shipped")
    try:
        apus.start()
        watcher = LogWatcher(apus)
        figures = {}
        with grpc.insecure_channel(apus.address) as ch:
            # While S3 is up: blobs below and above the 64 KiB memory/disk threshold, and an
            # action result whose outputs are among them.
            before = new_blobs(SMALL_AND_LARGE)
            codes, _ = batch_update(ch, before, timeout=60)
            assert codes == [0] * len(before)
            before_digests = [digest(b) for b in before]
            action = digest(os.urandom(64))
            result = re_pb2.ActionResult(exit_code=0, output_files=[
                re_pb2.OutputFile(path=f"out/{i}", digest=d) for i, d in enumerate(before_digests)])
            ac = re_grpc.ActionCacheStub(ch)
            ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=action, action_result=result),
                                  timeout=60)
            assert ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action), timeout=60) == result
            in_bucket = {o["Key"] for o in moto.client().list_objects_v2(Bucket="shipped").get("Contents", [])}
            assert {f"cas/{d.hash}-{d.size_bytes}" for d in before_digests} <= in_bucket  # slow_write sync

            moto.freeze()
            try:
                # Uploads of new blobs until the breaker opens; these may wait for the S3
                # client's timeouts and retries, several at once so the breaker counts quickly.
                failed = []
                lock = threading.Lock()

                def attempt_upload():
                    blobs = new_blobs([1_000, 100_000])
                    codes, _ = batch_update(ch, blobs, timeout=60)
                    with lock:
                        failed.extend(digest(b) for b, c in zip(blobs, codes) if c != 0)
                    return codes

                frozen_at = time.time()
                pool = ThreadPoolExecutor(8)
                pending = set()
                while watcher.count("circuit opened") == 0:
                    assert time.time() - frozen_at < 150, "no `circuit opened` within 150 s of the freeze:\n" \
                        + apus.read_log()[-4000:]
                    pending = {f for f in pending if not f.done()}
                    while len(pending) < 8:
                        pending.add(pool.submit(attempt_upload))
                    time.sleep(0.2)
                opened = watcher.first("circuit opened")
                figures["breaker_opened_after_freeze_s"] = round(opened - frozen_at, 1)
                # The calls still in flight finish on their own (below, after the checks).
                pool.shutdown(wait=False)

                # With the breaker open, and through its half-open probes (open_seconds is
                # 10 in the shipped config), while S3 stays frozen for HOLD_SECONDS:
                upload_seconds, find_seconds, get_seconds, failed_find_seconds = [], [], [], []
                while time.time() < opened + HOLD_SECONDS:
                    # uploads of new blobs fail fast;
                    blobs = new_blobs(SMALL_AND_LARGE)
                    codes, took = batch_update(ch, blobs, timeout=60)
                    upload_seconds.append(took)
                    assert all(c != 0 for c in codes), f"an upload succeeded with S3 frozen: {codes}"
                    with lock:
                        failed.extend(digest(b) for b in blobs)
                        failed_so_far = list(failed)
                    assert took < 5, (round(took, 2), round(time.time() - opened, 1))

                    # blobs stored before the freeze: FindMissingBlobs answers from the fast tier;
                    missing, took = find_missing(ch, before_digests, timeout=60)
                    find_seconds.append(took)
                    assert missing == set(), f"blobs stored before the freeze reported missing: {missing}"
                    assert took < 0.1, (round(took, 3), round(time.time() - opened, 1))

                    # the stored action: found (its outputs are in the fast tier) or NOT_FOUND, at once;
                    began = time.monotonic()
                    try:
                        got = ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action), timeout=60)
                        figures.setdefault("get_action_result", set()).add("found")
                        assert got == result
                    except grpc.RpcError as e:
                        figures.setdefault("get_action_result", set()).add(e.code().name)
                        assert e.code() == grpc.StatusCode.NOT_FOUND, e
                    get_seconds.append(time.monotonic() - began)
                    assert get_seconds[-1] < 1, (round(get_seconds[-1], 2), round(time.time() - opened, 1))

                    # blobs whose upload failed are missing: not kept half-stored in the fast tier.
                    missing, took = find_missing(ch, failed_so_far, timeout=60)
                    failed_find_seconds.append(took)
                    assert missing == keys_of(failed_so_far), \
                        f"{len(keys_of(failed_so_far) - missing)} failed uploads reported present"
                    assert took < 5, (round(took, 2), round(time.time() - opened, 1))
                    time.sleep(0.25)
                figures["get_action_result"] = sorted(figures["get_action_result"])
                for name, values in [("batch_update", upload_seconds), ("find_missing_stored", find_seconds),
                                     ("get_action_result", get_seconds),
                                     ("find_missing_failed", failed_find_seconds)]:
                    figures[f"{name}_while_open_max_s"] = round(max(values), 4)
                    figures[f"{name}_while_open_calls"] = len(values)
            finally:
                moto.resume()
            resumed_at = time.time()
            early = [f.result() for f in pending]  # the uploads in flight when the breaker opened
            figures["uploads_in_flight_when_opened"] = [c for codes in early for c in codes]

            def assert_failed_uploads_missing(when):
                # A request apus gave up on can still sit in the frozen moto's socket buffer and
                # be carried out when it resumes: such a blob is in the bucket and may be
                # reported present (or missing, while the breaker is open). Any other must be
                # reported missing.
                time.sleep(2)
                missing, _ = find_missing(ch, failed, timeout=60)
                stored = {(h, int(n)) for h, n in (k.split("-") for k in bucket_keys(moto, "cas/", "shipped"))}
                wrong = keys_of(failed) - stored - missing
                assert not wrong, f"{len(wrong)} failed uploads, not in the bucket, reported present {when}"
                figures[f"failed_uploads_{when}"] = {"total": len(keys_of(failed)),
                                                     "in_bucket_via_moto_replay": len(keys_of(failed) & stored),
                                                     "reported_missing": len(missing)}

            assert_failed_uploads_missing("after_resume")

            # Once the breaker has closed again, uploads work.
            def probe():
                batch_update(ch, new_blobs([2_000]), timeout=60)
                time.sleep(0.5)

            closed = watcher.wait_for("circuit closed", 60, action=probe)
            figures["breaker_closed_after_resume_s"] = round(closed - resumed_at, 1)
            blobs = new_blobs([3_000, 300_000])
            codes, took = batch_update(ch, blobs, timeout=60)
            figures["upload_after_close_s"] = round(took, 3)
            assert codes == [0, 0], figures
            for b in blobs:
                d = digest(b)
                moto.client().head_object(Bucket="shipped", Key=f"cas/{d.hash}-{d.size_bytes}")
            assert_failed_uploads_missing("after_close")
            figures["breaker_lines"] = watcher.lines("circuit")
            print(json.dumps(figures, indent=2))
        watcher.close()
    finally:
        apus.stop()


def test_unreachable_bucket_at_start(apus_factory, tmp_path):
    fast = {"filesystem": {"path": str(tmp_path / "fast"), "max_bytes": 1 << 30}}
    stored = new_blobs([10, 20_000, 100_000, 3 << 20])
    # First, fill the fast tier through a filesystem-only apus.
    first = apus_factory(cache_config(fast))
    with grpc.insecure_channel(first.address) as ch:
        assert batch_update(ch, stored, timeout=60)[0] == [0] * len(stored)
    assert first.stop() == 0

    # Then the same directory as the fast tier of a fast_slow whose S3 nothing answers.
    dead = f"http://127.0.0.1:{free_port()}"
    slow = {"s3": {"endpoint": dead, "bucket": "nowhere", "key_prefix": "cas/", "path_style": True,
                   "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                   "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                   "connect_timeout_seconds": 1, "first_byte_timeout_seconds": 2}}
    apus = apus_factory(cache_config({"fast_slow": {"fast": fast, "slow": slow, "slow_write": "sync"}}))
    watcher = LogWatcher(apus)
    try:
        watcher.wait_for("unreachable", 30)
        digests = [digest(b) for b in stored]
        with grpc.insecure_channel(apus.address, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
            missing, took = find_missing(ch, digests, timeout=60)
            assert missing == set()
            batch = re_grpc.ContentAddressableStorageStub(ch).BatchReadBlobs(
                re_pb2.BatchReadBlobsRequest(digests=digests[:3]), timeout=60)
            assert [r.data for r in batch.responses] == stored[:3]
            assert all(r.status.code == 0 for r in batch.responses)
            assert download(ch, digests[3]) == stored[3]

            # New blobs cannot be written through to S3: each upload fails, quickly once the
            # breaker is open.
            codes, first_took = batch_update(ch, new_blobs([1_000]), timeout=60)
            assert codes[0] != 0
            watcher.wait_for("circuit opened", 60,
                             action=lambda: batch_update(ch, new_blobs([1_000]), timeout=60))
            took = []
            for _ in range(3):
                codes, t = batch_update(ch, new_blobs([1_000, 100_000]), timeout=60)
                assert all(c != 0 for c in codes)
                took.append(t)
            print(json.dumps({"first_upload_s": round(first_took, 2), "uploads_with_breaker_open_s":
                              [round(t, 3) for t in took], "lines": watcher.lines()}, indent=2))
            assert max(took) < 5
            # The fast tier still serves what it holds.
            assert find_missing(ch, digests, timeout=60)[0] == set()
    finally:
        watcher.close()
