"""The filesystem store against damaged files, a full disk and kill -9, through a real apus."""
import concurrent.futures
import hashlib
import os
import re
import signal
import subprocess
import threading
import time

import grpc
import pytest

from conftest import cache_config
from reapi import digest, download, re_grpc, re_pb2, upload


def fs_store(path, **options):
    return {"filesystem": dict({"path": str(path)}, **options)}


def blob_file(root, data):
    d = digest(data)
    return root / "content" / d.hash[:2] / f"{d.hash}-{d.size_bytes}"


def missing(channel, blobs):
    response = re_grpc.ContentAddressableStorageStub(channel).FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[digest(b) for b in blobs]))
    return {d.hash for d in response.missing_blob_digests}


def read_error(channel, data):
    with pytest.raises(grpc.RpcError) as info:
        download(channel, digest(data))
    return info.value


def wait_for_log(apus, text, timeout=20):
    deadline = time.time() + timeout
    while text not in apus.read_log():
        assert time.time() < deadline, f"no {text!r} in the log: {apus.read_log()}"
        time.sleep(0.05)


def plant_damage(apus_factory, tmp_path, cas):
    """Stores good, truncated, emptied and bit-flipped blobs, then damages them on disk."""
    blobs = {name: os.urandom(200_000) for name in ["good", "truncated", "empty", "flipped"]}
    first = apus_factory(cache_config(fs_store(cas)))
    with grpc.insecure_channel(first.address) as ch:
        for data in blobs.values():
            upload(ch, data)
    assert first.stop() == 0
    blob_file(cas, blobs["truncated"]).write_bytes(blobs["truncated"][:150_000])
    blob_file(cas, blobs["empty"]).write_bytes(b"")
    flipped = bytearray(blobs["flipped"])
    flipped[123_456] ^= 0x10
    blob_file(cas, blobs["flipped"]).write_bytes(bytes(flipped))
    return blobs


def quarantined(cas):
    return {p.name for p in (cas / "quarantine").iterdir()}


def test_damaged_files_are_not_served_verify_on_start(apus_factory, tmp_path):
    cas = tmp_path / "cas"
    blobs = plant_damage(apus_factory, tmp_path, cas)
    second = apus_factory(cache_config(fs_store(cas, verify_on_start=True)))
    wait_for_log(second, "verified its contents")
    damaged = [blobs["truncated"], blobs["empty"], blobs["flipped"]]
    with grpc.insecure_channel(second.address) as ch:
        assert missing(ch, blobs.values()) == {digest(b).hash for b in damaged}
        for data in damaged:
            assert read_error(ch, data).code() == grpc.StatusCode.NOT_FOUND
        assert download(ch, digest(blobs["good"])) == blobs["good"]
    assert quarantined(cas) == {blob_file(cas, b).name for b in damaged}
    assert "moved damaged files to quarantine" in second.read_log()


def test_damaged_files_are_not_served_verify_reads(apus_factory, tmp_path):
    cas = tmp_path / "cas"
    blobs = plant_damage(apus_factory, tmp_path, cas)
    second = apus_factory(cache_config(fs_store(cas, verify_reads=True)))
    with grpc.insecure_channel(second.address) as ch:
        # Sizes are checked at start; the flipped bit only when the blob is read.
        assert missing(ch, blobs.values()) == {digest(blobs[k]).hash for k in ["truncated", "empty"]}
        error = read_error(ch, blobs["flipped"])
        assert error.code() == grpc.StatusCode.DATA_LOSS
        assert str(cas) not in error.details()
        assert missing(ch, [blobs["flipped"]]) == {digest(blobs["flipped"]).hash}
        assert read_error(ch, blobs["flipped"]).code() == grpc.StatusCode.NOT_FOUND
        assert download(ch, digest(blobs["good"])) == blobs["good"]
    assert quarantined(cas) == {blob_file(cas, blobs[k]).name for k in ["truncated", "empty", "flipped"]}


@pytest.fixture
def small_tmpfs(tmp_path):
    """An 8 MiB tmpfs: a disk that really fills. Needs root, as CI has."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs in CI: {result.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_full_disk_evicts_then_refuses_without_paths(apus_factory, small_tmpfs):
    cas = small_tmpfs / "cas"
    apus = apus_factory(cache_config(fs_store(cas)))
    blobs = [os.urandom(1 << 20) for _ in range(24)]
    with grpc.insecure_channel(apus.address) as ch:
        # Three times what fits: every upload succeeds, the oldest make room.
        for data in blobs:
            upload(ch, data, chunk=256 * 1024)
        gone = missing(ch, blobs)
        assert digest(blobs[0]).hash in gone
        assert len(gone) >= 16
        for data in blobs[-4:]:
            assert download(ch, digest(data)) == data
        # Bigger than the whole filesystem: nothing to evict helps.
        huge = os.urandom(9 << 20)
        with pytest.raises(grpc.RpcError) as info:
            upload(ch, huge, chunk=1 << 20)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        message = info.value.details()
        assert 'filesystem store "cas"' in message
        assert str(small_tmpfs) not in message
        assert not re.search(r"(^|[\s'\"(])/", message), message
        # The store is still usable afterwards.
        after = os.urandom(100_000)
        upload(ch, after)
        assert download(ch, digest(after)) == after
    assert list((cas / "tmp").iterdir()) == []


def upload_until_killed(apus, stop, sizes):
    """Uploads random blobs from many threads until `stop`; returns every digest tried."""
    tried = []
    lock = threading.Lock()

    def loop(seed):
        with grpc.insecure_channel(apus.address) as ch:
            i = 0
            while not stop.is_set():
                data = os.urandom(sizes[(seed + i) % len(sizes)])
                i += 1
                with lock:
                    tried.append(data)
                try:
                    upload(ch, data, chunk=64 * 1024, uuid=f"{seed}-{i}", timeout=10)
                except grpc.RpcError:
                    return

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(loop, seed) for seed in range(16)]
        time.sleep(2.0)
        apus.proc.send_signal(signal.SIGKILL)
        apus.proc.wait()
        stop.set()
        for f in futures:
            f.result()
    return tried


@pytest.mark.parametrize("max_bytes", [None, 2 << 20], ids=["uploads", "eviction"])
def test_kill_9_during_uploads_leaves_only_whole_blobs(apus_factory, tmp_path, max_bytes):
    cas = tmp_path / "cas"
    options = {"max_bytes": max_bytes} if max_bytes else {}
    config = cache_config(fs_store(cas, **options))
    first = apus_factory(config)
    tried = upload_until_killed(first, threading.Event(), [1_000, 40_000, 300_000, 700_000])
    assert len(tried) > 20
    second = apus_factory(config)
    assert list((cas / "tmp").iterdir()) == []
    with grpc.insecure_channel(second.address) as ch:
        present = [b for b in tried if digest(b).hash not in missing(ch, [b])]
        assert present, "nothing survived the kill"
        for data in present:
            got = download(ch, digest(data))
            assert hashlib.sha256(got).hexdigest() == digest(data).hash
    # On disk: only whole files, each named by its own hash and size.
    for path in (cas / "content").rglob("*"):
        if path.is_file():
            name, size = path.name.split("-")
            body = path.read_bytes()
            assert len(body) == int(size) and hashlib.sha256(body).hexdigest() == name, path
    if max_bytes:
        assert sum(p.stat().st_size for p in (cas / "content").rglob("*") if p.is_file()) <= max_bytes
