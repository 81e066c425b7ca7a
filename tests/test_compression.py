"""REAPI zstd compression against a real apus process, with grpcio and PyPI `zstandard`:
ByteStream `compressed-blobs/zstd` reads and writes, compressed batch calls, and the
refusals (corrupt stream, wrong digest, decompression bomb) with nothing stored.

Real Bazel is not used here: the test machine's Bazel 4 predates
`--experimental_remote_cache_compression` (Bazel 5.1+).
"""
import re

import grpc
import pytest
import zstandard

from admin import http_get
from conftest import cache_config, free_port
from reapi import bs_grpc, bs_pb2, digest, download, re_grpc, re_pb2, upload

ZSTD = re_pb2.Compressor.ZSTD
EMPTY = digest(b"")


def code_of(excinfo):
    return excinfo.value.code()


def text_blob(size):
    """Compressible, not trivial: numbered lines of a build log."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += b"%09d compiling src/module_%d/file_%d.cc with -O2 -g\n" % (i, i % 97, i % 1013)
        i += 1
    return bytes(out[:size])


def compressed_write(channel, d, frames, uuid="c0ffee", offsets=None, instance=""):
    """Sends `frames` (compressed chunks) as one compressed Write; the WriteResponse."""
    prefix = f"{instance}/" if instance else ""
    name = f"{prefix}uploads/{uuid}/compressed-blobs/zstd/{d.hash}/{d.size_bytes}"

    def requests():
        sent = 0
        for i, chunk in enumerate(frames):
            offset = offsets[i] if offsets else sent
            yield bs_pb2.WriteRequest(
                resource_name=name if i == 0 else "", write_offset=offset, data=chunk,
                finish_write=i == len(frames) - 1)
            sent += len(chunk)

    return bs_grpc.ByteStreamStub(channel).Write(requests())


def chunks_of(data, size=64 * 1024):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def compressed_read(channel, d, offset=0, limit=0, instance=""):
    prefix = f"{instance}/" if instance else ""
    name = f"{prefix}compressed-blobs/zstd/{d.hash}/{d.size_bytes}"
    stream = bs_grpc.ByteStreamStub(channel).Read(
        bs_pb2.ReadRequest(resource_name=name, read_offset=offset, read_limit=limit))
    return b"".join(r.data for r in stream)


def inflate(data):
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def missing(channel, d):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    return list(cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=[d])).missing_blob_digests) == [d]


def test_capabilities_advertise_zstd_and_sha256_only(channel):
    caps = re_grpc.CapabilitiesStub(channel).GetCapabilities(re_pb2.GetCapabilitiesRequest())
    cache = caps.cache_capabilities
    assert list(cache.supported_compressors) == [ZSTD]
    assert list(cache.supported_batch_update_compressors) == [ZSTD]
    assert list(cache.digest_functions) == [re_pb2.DigestFunction.SHA256]


def test_written_compressed_reads_back_uncompressed_and_at_offsets(channel):
    data = text_blob(3 << 20)
    d = digest(data)
    frame = zstandard.ZstdCompressor(level=3).compress(data)
    assert len(frame) < len(data) // 4
    response = compressed_write(channel, d, chunks_of(frame))
    # committed_size counts what the client's offsets count: the compressed bytes sent.
    assert response.committed_size == len(frame)
    assert download(channel, d) == data
    for offset in [0, 1, 1 << 20, len(data) - 1, len(data)]:
        wire = compressed_read(channel, d, offset=offset)
        assert inflate(wire) == data[offset:]
    assert len(compressed_read(channel, d)) < len(data) // 4


def test_written_uncompressed_reads_back_compressed(channel):
    data = text_blob(500_000)
    upload(channel, data)
    assert inflate(compressed_read(channel, digest(data))) == data


def test_instance_and_multi_frame_stream(channel):
    a, b = text_blob(200_000), text_blob(300_000)[::-1]
    data = a + b
    c = zstandard.ZstdCompressor(level=1)
    stream = c.compress(a) + c.compress(b)  # two frames, one after the other
    compressed_write(channel, digest(data), chunks_of(stream, 10_000), instance="team/a")
    assert download(channel, digest(data), instance="team/a") == data


def test_100_mib_blob_both_ways_streamed(channel):
    data = text_blob(100 << 20)
    d = digest(data)
    chunker = zstandard.ZstdCompressor(level=1).chunker(size=len(data), chunk_size=1 << 20)
    frames = []
    for i in range(0, len(data), 4 << 20):
        frames.extend(chunker.compress(data[i:i + (4 << 20)]))
    frames.extend(chunker.finish())
    total = sum(map(len, frames))
    assert compressed_write(channel, d, frames).committed_size == total
    wire = compressed_read(channel, d)
    assert len(wire) < len(data) // 4
    assert zstandard.ZstdDecompressor().decompress(wire) == data
    assert inflate(compressed_read(channel, d, offset=77 << 20)) == data[77 << 20:]


def test_empty_blob_and_read_from_the_end_are_empty_frames(channel):
    assert inflate(compressed_read(channel, EMPTY)) == b""
    data = text_blob(1000)
    upload(channel, data)
    assert inflate(compressed_read(channel, digest(data), offset=1000)) == b""


def test_compressed_read_limit_and_ranges(channel):
    data = text_blob(10_000)
    upload(channel, data)
    with pytest.raises(grpc.RpcError) as e:
        compressed_read(channel, digest(data), limit=10)
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "read_limit must be 0" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        compressed_read(channel, digest(data), offset=10_001)
    assert code_of(e) == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.RpcError) as e:
        compressed_read(channel, digest(b"not stored"))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


def test_existing_blob_compressed_upload_ends_with_minus_one(channel):
    data = text_blob(100_000)
    upload(channel, data)
    frame = zstandard.ZstdCompressor().compress(data)
    assert compressed_write(channel, digest(data), chunks_of(frame)).committed_size == -1


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "garbage", "trailing"])
def test_bad_compressed_stream_is_invalid_argument_and_stores_nothing(channel, damage):
    data = text_blob(400_000)
    d = digest(data)
    frame = bytearray(zstandard.ZstdCompressor(level=3).compress(data))
    if damage == "corrupt":
        for i in range(100, len(frame) - 100, 50):
            frame[i] ^= 0xA5
    elif damage == "truncated":
        frame = frame[:-20]
    elif damage == "garbage":
        frame = bytearray(b"definitely not zstd" * 100)
    else:  # a second frame: more output than the digest's size
        frame += zstandard.ZstdCompressor().compress(b"extra")
    with pytest.raises(grpc.RpcError) as e:
        compressed_write(channel, d, chunks_of(bytes(frame), 16_384))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "zstd" in e.value.details() or "decompresses" in e.value.details()
    assert missing(channel, d)


def test_wrong_digest_is_invalid_argument_and_stores_nothing(channel):
    data = text_blob(200_000)
    other = data[:-1] + b"!"  # same size, different content
    frame = zstandard.ZstdCompressor().compress(other)
    with pytest.raises(grpc.RpcError) as e:
        compressed_write(channel, digest(data), chunks_of(frame))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert missing(channel, digest(data)) and missing(channel, digest(other))
    short = zstandard.ZstdCompressor().compress(data[:-1])
    with pytest.raises(grpc.RpcError) as e:
        compressed_write(channel, digest(data), chunks_of(short))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "decompresses to 199999 bytes, the digest says 200000" in e.value.details()
    assert missing(channel, digest(data))


def test_compressed_write_offsets_count_compressed_bytes(channel):
    data = text_blob(300_000)
    frame = zstandard.ZstdCompressor().compress(data)
    chunks = chunks_of(frame, 5000)
    # An uncompressed-style offset (counting inflated bytes) is refused.
    wrong = [0] + [i * 100_000 for i in range(1, len(chunks))]
    with pytest.raises(grpc.RpcError) as e:
        compressed_write(channel, digest(data), chunks, offsets=wrong)
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not continue at 5000" in e.value.details()
    assert missing(channel, digest(data))


def test_unknown_compressor_and_digest_function_in_names(channel):
    h = digest(b"abc").hash
    for name in [f"compressed-blobs/lz4/{h}/3", f"blobs/blake3/{h}/3"]:
        with pytest.raises(grpc.RpcError) as e:
            list(bs_grpc.ByteStreamStub(channel).Read(bs_pb2.ReadRequest(resource_name=name)))
        assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
        assert "lz4" in e.value.details() or "blake3" in e.value.details()
    upload(channel, b"abc")
    assert download_named(channel, f"blobs/sha256/{h}/3") == b"abc"


def download_named(channel, name):
    return b"".join(r.data for r in bs_grpc.ByteStreamStub(channel).Read(bs_pb2.ReadRequest(resource_name=name)))


def test_digest_function_other_than_sha256_is_refused(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    for fn, name in [(re_pb2.DigestFunction.BLAKE3, "BLAKE3"), (re_pb2.DigestFunction.SHA1, "SHA1")]:
        with pytest.raises(grpc.RpcError) as e:
            cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=[EMPTY], digest_function=fn))
        assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
        assert name in e.value.details() and "only SHA256" in e.value.details()
    ac = re_grpc.ActionCacheStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        ac.GetActionResult(re_pb2.GetActionResultRequest(
            action_digest=digest(b"x"), digest_function=re_pb2.DigestFunction.BLAKE3))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    ok = cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(
        blob_digests=[digest(b"q")], digest_function=re_pb2.DigestFunction.SHA256))
    assert list(ok.missing_blob_digests) == [digest(b"q")]


def test_compressed_batch_update_and_read(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    blobs = [text_blob(50_000), text_blob(3000)[::-1], b"tiny"]
    requests = [re_pb2.BatchUpdateBlobsRequest.Request(
        digest=digest(b), data=zstandard.ZstdCompressor().compress(b), compressor=ZSTD) for b in blobs]
    # One bad blob fails alone.
    bad = text_blob(1000)
    requests.append(re_pb2.BatchUpdateBlobsRequest.Request(
        digest=digest(bad), data=b"\x28\xb5\x2f\xfd garbage", compressor=ZSTD))
    response = cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=requests))
    codes = [r.status.code for r in response.responses]
    assert codes == [0, 0, 0, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert missing(channel, digest(bad))

    plain = cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[digest(b) for b in blobs]))
    assert [r.data for r in plain.responses] == blobs
    assert [r.compressor for r in plain.responses] == [0, 0, 0]

    zipped = cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(
        digests=[digest(b) for b in blobs], acceptable_compressors=[ZSTD]))
    # Blobs big enough to gain come back compressed; "tiny" does not.
    assert [r.compressor for r in zipped.responses] == [ZSTD, ZSTD, 0]
    got = [inflate(r.data) if r.compressor == ZSTD else r.data for r in zipped.responses]
    assert got == blobs
    assert len(zipped.responses[0].data) < 50_000 // 4


def test_compressed_batch_wrong_digest_stores_nothing(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    data = text_blob(20_000)
    wrong = re_pb2.Digest(hash=digest(b"other").hash, size_bytes=len(data))
    response = cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
        re_pb2.BatchUpdateBlobsRequest.Request(
            digest=wrong, data=zstandard.ZstdCompressor().compress(data), compressor=ZSTD)]))
    assert response.responses[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert missing(channel, wrong) and missing(channel, digest(data))


def metric(admin_port, name, **labels):
    _, _, body = http_get(f"http://127.0.0.1:{admin_port}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def bomb():
    """A zstd stream of 1 GiB of zeros: a few tens of KiB on the wire."""
    c = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 20)
    out = [c.compress(zeros) for _ in range(1024)]
    out.append(c.flush())
    return b"".join(out)


def test_decompression_bomb_is_refused_after_the_digest_size(apus_factory):
    admin_port = free_port()
    config = cache_config({"memory": {"max_bytes": 1 << 30}})
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    server = apus_factory(config)
    stream = bomb()
    assert len(stream) <= 64 * 1024
    claimed = digest(bytes(1 << 20))  # the digest of 1 MiB of zeros
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as e:
            compressed_write(channel, claimed, chunks_of(stream, 4096))
        assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than the digest's 1048576 bytes" in e.value.details()
        assert missing(channel, claimed)
        # The same bomb in a batch: refused per blob, nothing stored.
        cas = re_grpc.ContentAddressableStorageStub(channel)
        response = cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=claimed, data=stream, compressor=ZSTD)]))
        assert response.responses[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert missing(channel, claimed)
    # Decoding stopped at the digest's size in both: 1 MiB each, far from 1 GiB.
    decoded = metric(admin_port, "apus_compression_bytes_total", direction="upload", form="uncompressed")
    assert 0 < decoded <= 2 * 1.2 * (1 << 20), decoded
    received = metric(admin_port, "apus_compression_bytes_total", direction="upload", form="compressed")
    assert received <= 2 * len(stream)
    rss_kib = int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{server.proc.pid}/status").read()).group(1))
    assert rss_kib < 512 * 1024, f"peak RSS {rss_kib} KiB"
