"""The s3 store against a real S3-compatible server (moto) on loopback, through apus."""
import os
import time

import grpc
import pytest

from conftest import cache_config
from reapi import bs_grpc, bs_pb2, digest, download, re_grpc, re_pb2, upload
from s3server import MotoServer, moto, s3_spec  # noqa: F401


def missing(ch, *ds):
    return list(re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=list(ds))).missing_blob_digests)


def keys(moto, bucket, prefix=""):
    r = moto.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in r.get("Contents", []))


def test_put_get_has_range_and_multipart(apus_factory, moto):
    moto.make_bucket("cas")
    apus = apus_factory(cache_config(s3_spec(moto, "cas", "blobs/"), s3_spec(moto, "cas", "ac/")))
    with grpc.insecure_channel(apus.address) as ch:
        small = os.urandom(1000)
        assert len(missing(ch, digest(small))) == 1
        upload(ch, small)
        assert missing(ch, digest(small)) == []
        assert download(ch, digest(small)) == small
        assert download(ch, digest(small), offset=100, limit=50) == small[100:150]
        assert keys(moto, "cas", "blobs/") == [f"blobs/{digest(small).hash}-1000"]

        big = os.urandom(40 * 1024 * 1024)  # 8 parts of 5 MiB
        resp, d = upload(ch, big, chunk=1 << 20)
        assert resp.committed_size == len(big)
        assert download(ch, d) == big
        assert download(ch, d, offset=12_345_678, limit=1000) == big[12_345_678:12_346_678]
        head = moto.client().head_object(Bucket="cas", Key=f"blobs/{d.hash}-{d.size_bytes}")
        assert head["ContentLength"] == len(big)

        ac = re_grpc.ActionCacheStub(ch)
        result = re_pb2.ActionResult(exit_code=5)
        ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=digest(b"a"), action_result=result))
        assert ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=digest(b"a"))) == result


def test_expiry_sweep_deletes_old_objects_and_keeps_young_ones(apus_factory, moto):
    moto.make_bucket("exp")
    cfg = cache_config(s3_spec(moto, "exp", "c/", max_seconds=8, sweep_interval_seconds=1))
    apus = apus_factory(cfg)
    with grpc.insecure_channel(apus.address) as ch:
        old, young = os.urandom(100), os.urandom(101)
        old_key, young_key = (f"c/{digest(b).hash}-{len(b)}" for b in (old, young))
        upload(ch, old)
        assert keys(moto, "exp", "c/") == [old_key]
        # Half the expiry later the old object is still there (a sweep ignoring age would have
        # taken it), and the young one is written: when the sweep takes the old one, the
        # young one is ~4-5 s old and must still be there.
        time.sleep(4)
        assert keys(moto, "exp", "c/") == [old_key], "the sweep deleted an object younger than max_seconds"
        upload(ch, young)
        young_at = time.time()
        deadline = time.time() + 30
        listing = keys(moto, "exp", "c/")
        while old_key in listing and time.time() < deadline:
            time.sleep(0.25)
            listing = keys(moto, "exp", "c/")
        assert old_key not in listing, "the sweep never deleted the expired object"
        assert listing == [young_key], "the sweep deleted an object younger than max_seconds"
        # A sweep or two later it is still younger than max_seconds, and still there.
        time.sleep(max(0.0, min(1.5, young_at + 6 - time.time())))
        assert time.time() - young_at > 7 or keys(moto, "exp", "c/") == [young_key]
        assert missing(ch, digest(old), digest(young)) == [digest(old)]


def test_server_stopped_mid_upload_then_retry(apus_factory, tmp_path):
    moto = MotoServer(tmp_path).start()
    try:
        moto.make_bucket("flaky")
        apus = apus_factory(cache_config(s3_spec(moto, "flaky", "x/", max_attempts=2, request_timeout_seconds=5)))
        big = os.urandom(30 * 1024 * 1024)
        d = digest(big)
        with grpc.insecure_channel(apus.address) as ch:
            name = f"uploads/f1/blobs/{d.hash}/{d.size_bytes}"
            stopped = []

            def requests():
                for offset in range(0, len(big), 1 << 20):
                    if offset == 12 << 20:
                        moto.stop()
                        stopped.append(True)
                    piece = big[offset:offset + (1 << 20)]
                    yield bs_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset,
                                              data=piece, finish_write=offset + len(piece) == len(big))

            with pytest.raises(grpc.RpcError) as e:
                bs_grpc.ByteStreamStub(ch).Write(requests(), timeout=120)
            assert stopped
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "s3" in e.value.details() and "attempts" in e.value.details()

            moto2 = MotoServer(tmp_path)
            moto2.port = moto.port
            moto2.start()
            try:
                moto2.make_bucket("flaky")  # moto keeps nothing across restarts
                resp, _ = upload(ch, big, uuid="f2", chunk=1 << 20)
                assert resp.committed_size == len(big)
                assert download(ch, d) == big
                assert moto2.client().list_multipart_uploads(Bucket="flaky").get("Uploads", []) == []
            finally:
                moto2.stop()
    finally:
        moto.stop()


def test_partial_upload_never_visible(apus_factory, moto):
    moto.make_bucket("partial")
    apus = apus_factory(cache_config(s3_spec(moto, "partial", "k/")))
    big = os.urandom(12 * 1024 * 1024)
    wrong = re_pb2.Digest(hash=digest(b"other").hash, size_bytes=len(big))
    with grpc.insecure_channel(apus.address) as ch:
        name = f"uploads/u/blobs/{wrong.hash}/{wrong.size_bytes}"

        def requests():
            for offset in range(0, len(big), 1 << 20):
                piece = big[offset:offset + (1 << 20)]
                yield bs_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset,
                                          data=piece, finish_write=offset + len(piece) == len(big))

        with pytest.raises(grpc.RpcError) as e:
            bs_grpc.ByteStreamStub(ch).Write(requests())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert keys(moto, "partial") == []
    assert moto.client().list_multipart_uploads(Bucket="partial").get("Uploads", []) == []
