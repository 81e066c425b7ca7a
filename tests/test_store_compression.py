"""`compression: zstd` on the filesystem and s3 stores, through a real apus process: blobs
are kept compressed (files, objects), read back whole and by range, survive a kill and a
restart, and what was stored before the switch stays readable."""
import os
import signal

import grpc

from conftest import ApusProcess, cache_config
from reapi import digest, download, re_grpc, re_pb2, upload
from s3server import moto, s3_spec  # noqa: F401


def compressible(n, seed=b""):
    """Text-like bytes that zstd shrinks several times over (like build logs and sources)."""
    out, i = bytearray(seed), 0
    while len(out) < n:
        out += b"src/module_%d/file_%d.cc:%d: note: compiling target //pkg:%d\n" % (i % 53, i % 977, i, i % 31)
        i += 1
    return bytes(out[:n])


def missing(ch, *ds):
    return list(re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=list(ds))).missing_blob_digests)


def stored_files(root):
    out = {}
    for dirpath, _, names in os.walk(root / "content"):
        for name in names:
            out[name] = os.path.getsize(os.path.join(dirpath, name))
    return out


def test_filesystem_zstd_survives_kill_and_restart(tmp_path):
    root = tmp_path / "cas"
    cfg = cache_config({"filesystem": {"path": str(root), "compression": "zstd", "compression_level": 3}})
    apus = ApusProcess(cfg, tmp_path).start()
    try:
        text, noise = compressible(6 << 20), os.urandom(300_000)
        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, text, chunk=1 << 20)
            upload(ch, noise)
            assert download(ch, digest(text), offset=5_000_000, limit=1000) == text[5_000_000:5_001_000]
        files = stored_files(root)
        t = f"{digest(text).hash}-{len(text)}.zst"
        assert sorted(files) == sorted([t, f"{digest(noise).hash}-{len(noise)}.zst"])
        assert files[t] < len(text) // 4, f"{files[t]} bytes on disk for {len(text)}"
        # Killed, not stopped: the files renamed into place are all there is.
        apus.proc.send_signal(signal.SIGKILL)
        apus.proc.wait()
        apus.start()
        with grpc.insecure_channel(apus.address) as ch:
            assert missing(ch, digest(text), digest(noise)) == []
            assert download(ch, digest(text)) == text
            assert download(ch, digest(noise)) == noise
            assert download(ch, digest(text), offset=3_333_333, limit=77) == text[3_333_333:3_333_410]
            upload(ch, compressible(100_000, b"after restart"))
        # Switched back to none: new blobs are plain files, the .zst ones still read.
        apus.stop()
        apus.config = cache_config({"filesystem": {"path": str(root)}})
        apus.start()
        with grpc.insecure_channel(apus.address) as ch:
            assert download(ch, digest(text)) == text
            later = compressible(50_000, b"plain again")
            upload(ch, later)
            assert download(ch, digest(later)) == later
        assert f"{digest(later).hash}-{len(later)}" in stored_files(root)
    finally:
        apus.stop()


def test_s3_zstd_objects_are_smaller_and_read_back(apus_factory, moto):  # noqa: F811
    moto.make_bucket("zbucket")
    plain = apus_factory(cache_config(s3_spec(moto, "zbucket", "c/")))
    before = compressible(200_000, b"written before compression")
    with grpc.insecure_channel(plain.address) as ch:
        upload(ch, before)
    plain.stop()

    apus = apus_factory(cache_config(s3_spec(moto, "zbucket", "c/", compression="zstd", compression_level=3),
                                     s3_spec(moto, "zbucket", "ac/", compression="zstd")))
    s3 = moto.client()
    with grpc.insecure_channel(apus.address, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        small = compressible(1_000_000)
        # Hex of random bytes halves under zstd: over the multipart threshold even compressed.
        big = os.urandom(9 << 20).hex().encode()
        for blob in (small, big):
            upload(ch, blob, chunk=1 << 20)
            d = digest(blob)
            head = s3.head_object(Bucket="zbucket", Key=f"c/{d.hash}-{d.size_bytes}")
            assert head["Metadata"].get("apus-encoding") == "zstd"
            assert head["ContentLength"] < len(blob) * 0.6, (head["ContentLength"], len(blob))
            assert download(ch, d) == blob
            assert download(ch, d, offset=len(blob) - 5000, limit=1234) == blob[-5000:-3766]
            assert download(ch, d, offset=len(blob)) == b""
        assert missing(ch, digest(small), digest(big), digest(b"absent")) == [digest(b"absent")]
        # The object written before the switch: no metadata, read as it is, by range too.
        assert download(ch, digest(before)) == before
        assert download(ch, digest(before), offset=100_000, limit=10) == before[100_000:100_010]
        ac = re_grpc.ActionCacheStub(ch)
        result = re_pb2.ActionResult(exit_code=3, stdout_raw=compressible(5000))
        ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(action_digest=digest(b"act"), action_result=result))
        assert ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=digest(b"act"))) == result
        # compressed-blobs reads: a zstd object is sent as stored, the older one compressed anew.
        import zstandard
        from reapi import bs_grpc, bs_pb2

        def read_compressed(blob):
            d = digest(blob)
            return b"".join(r.data for r in bs_grpc.ByteStreamStub(ch).Read(bs_pb2.ReadRequest(
                resource_name=f"compressed-blobs/zstd/{d.hash}/{d.size_bytes}")))
        obj = s3.get_object(Bucket="zbucket", Key=f"c/{digest(small).hash}-{len(small)}")["Body"].read()
        assert read_compressed(small) == obj
        assert zstandard.ZstdDecompressor().decompressobj().decompress(read_compressed(before)) == before
    apus.stop()
    # Back to `none`: ranged reads of zstd objects decode from the start.
    again = apus_factory(cache_config(s3_spec(moto, "zbucket", "c/")))
    with grpc.insecure_channel(again.address) as ch:
        assert download(ch, digest(small), offset=500_000, limit=100) == small[500_000:500_100]
        assert download(ch, digest(small)) == small
        assert download(ch, digest(before), offset=10, limit=5) == before[10:15]


def test_compressed_read_serves_the_stored_frame(tmp_path):
    """A compressed-blobs read at offset 0 from a zstd store sends the file's frame as it is
    (byte for byte: nothing is compressed again); other offsets and blobs stored before the
    switch are compressed as they are read."""
    import zstandard
    from reapi import bs_grpc, bs_pb2

    root = tmp_path / "cas"
    apus = ApusProcess(cache_config({"filesystem": {"path": str(root)}}), tmp_path).start()
    old = compressible(400_000, b"stored uncompressed")
    try:
        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, old)
        apus.stop()
        apus.config = cache_config({"filesystem": {"path": str(root), "compression": "zstd"}})
        apus.start()
        text = compressible(3 << 20)

        def read_compressed(ch, blob, offset=0):
            d = digest(blob)
            stream = bs_grpc.ByteStreamStub(ch).Read(bs_pb2.ReadRequest(
                resource_name=f"compressed-blobs/zstd/{d.hash}/{d.size_bytes}", read_offset=offset))
            return b"".join(r.data for r in stream)

        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, text, chunk=1 << 20)
            frame = read_compressed(ch, text)
            path = root / "content" / digest(text).hash[:2] / f"{digest(text).hash}-{len(text)}.zst"
            assert frame == path.read_bytes()[:-56]
            assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == text
            tail = read_compressed(ch, text, offset=1_000_000)
            assert zstandard.ZstdDecompressor().decompressobj().decompress(tail) == text[1_000_000:]
            assert zstandard.ZstdDecompressor().decompressobj().decompress(read_compressed(ch, old)) == old
            # The window a reader must allocate follows the blob's size, up to the level's.
            assert zstandard.get_frame_parameters(frame).window_size == 2 << 20
            small = compressible(5000, b"small")
            upload(ch, small)
            assert zstandard.get_frame_parameters(read_compressed(ch, small)).window_size == 8192
    finally:
        apus.stop()


def test_batch_read_serves_stored_frames(tmp_path):
    """BatchReadBlobs accepting zstd gets a zstd store's frames as they are; an
    incompressible blob, whose frame is no smaller, comes back uncompressed."""
    import zstandard
    root = tmp_path / "cas"
    apus = ApusProcess(cache_config({"filesystem": {"path": str(root), "compression": "zstd"}}), tmp_path).start()
    try:
        text, noise = compressible(200_000, b"batch"), os.urandom(100_000)
        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, text)
            upload(ch, noise)
            cas = re_grpc.ContentAddressableStorageStub(ch)
            r = cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(
                digests=[digest(text), digest(noise)], acceptable_compressors=[re_pb2.Compressor.ZSTD]))
        packed, plain = r.responses
        path = root / "content" / digest(text).hash[:2] / f"{digest(text).hash}-{len(text)}.zst"
        assert packed.compressor == re_pb2.Compressor.ZSTD and packed.data == path.read_bytes()[:-56]
        assert zstandard.ZstdDecompressor().decompress(packed.data, max_output_size=len(text)) == text
        assert plain.compressor == re_pb2.Compressor.IDENTITY and plain.data == noise
    finally:
        apus.stop()
