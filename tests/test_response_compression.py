"""`servers[].response_compression`: responses are compressed in the encoding the client
offers, only when large and only when that shrinks them; requests may be gzip or zstd.

grpcio reads gzip responses on its own; the headers and raw message bytes are checked with
curl over h2c (HTTP/2 with prior knowledge), whose HPACK decoder shows `grpc-encoding`."""
import gzip
import os
import struct
import subprocess

import grpc
import zstandard

from conftest import cache_config
from reapi import bs_grpc, bs_pb2, digest, download, re_pb2, upload

BATCH_READ = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs"
FIND_MISSING = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"
COMPRESSION = {"min_bytes": 1024, "encodings": ["zstd", "gzip"]}


def compressible(n, seed=b""):
    out, i = bytearray(seed), 0
    while len(out) < n:
        out += b"bazel-out/k8-fastbuild/bin/pkg/lib_%d.o: linking %d symbols\n" % (i % 211, i)
        i += 1
    return bytes(out[:n])


def call(tmp_path, port, path, message, accept, encoding=None, compressed=False):
    """One unary gRPC call through curl: (headers and trailers as a dict, [(flag, payload)])."""
    request = tmp_path / "request.bin"
    request.write_bytes(struct.pack(">BI", 1 if compressed else 0, len(message)) + message)
    headers, body = tmp_path / "headers.txt", tmp_path / "body.bin"
    args = ["curl", "-sS", "--http2-prior-knowledge", "-X", "POST", "--data-binary", f"@{request}",
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-D", str(headers), "-o", str(body)]
    if accept is not None:
        args += ["-H", f"grpc-accept-encoding: {accept}"]
    if encoding:
        args += ["-H", f"grpc-encoding: {encoding}"]
    subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], check=True, timeout=60)
    fields = {}
    for line in headers.read_text().splitlines():
        name, sep, value = line.partition(":")
        if sep and not name.startswith("HTTP"):
            fields[name.strip().lower()] = value.strip()
    data, messages = body.read_bytes(), []
    while data:
        flag, length = struct.unpack(">BI", data[:5])
        messages.append((flag, data[5:5 + length]))
        data = data[5 + length:]
    return fields, messages


def batch_read(*blobs):
    return re_pb2.BatchReadBlobsRequest(digests=[digest(b) for b in blobs]).SerializeToString()


def test_batch_read_is_compressed_in_the_offered_encoding(apus_factory, tmp_path):
    apus = apus_factory(cache_config({"memory": {"max_bytes": 1 << 30}}, response_compression=COMPRESSION))
    text, noise = compressible(300_000), os.urandom(300_000)
    with grpc.insecure_channel(apus.address) as ch:
        upload(ch, text)
        upload(ch, noise)

    for accept, name, inflate in [("identity,zstd", "zstd", zstandard.ZstdDecompressor().decompress),
                                  ("identity, gzip", "gzip", gzip.decompress),
                                  ("gzip,zstd", "zstd", zstandard.ZstdDecompressor().decompress)]:
        fields, messages = call(tmp_path, apus.port, BATCH_READ, batch_read(text), accept)
        assert fields.get("grpc-status") == "0", fields
        assert fields.get("grpc-encoding") == name
        [(flag, payload)] = messages
        assert flag == 1 and len(payload) < len(text) // 5, (flag, len(payload))
        response = re_pb2.BatchReadBlobsResponse.FromString(inflate(payload))
        assert response.responses[0].data == text

    # Incompressible: the message goes out as it is, flagged so, in the same call encoding.
    fields, [(flag, payload)] = call(tmp_path, apus.port, BATCH_READ, batch_read(noise), "zstd")
    assert fields.get("grpc-encoding") == "zstd" and flag == 0
    assert re_pb2.BatchReadBlobsResponse.FromString(payload).responses[0].data == noise
    # Small: under min_bytes.
    small = re_pb2.FindMissingBlobsRequest(blob_digests=[digest(text)]).SerializeToString()
    fields, [(flag, payload)] = call(tmp_path, apus.port, FIND_MISSING, small, "zstd")
    assert flag == 0 and re_pb2.FindMissingBlobsResponse.FromString(payload).missing_blob_digests == []
    # Nothing offered (or nothing the server has): no encoding.
    for accept in (None, "identity", "deflate"):
        fields, [(flag, payload)] = call(tmp_path, apus.port, BATCH_READ, batch_read(text), accept)
        assert "grpc-encoding" not in fields and flag == 0
        assert "zstd" in fields["grpc-accept-encoding"] and "gzip" in fields["grpc-accept-encoding"]


def test_off_by_default_and_zstd_requests_are_read(apus_factory, tmp_path):
    apus = apus_factory(cache_config({"memory": {"max_bytes": 1 << 30}}))
    text = compressible(200_000)
    with grpc.insecure_channel(apus.address) as ch:
        upload(ch, text)
    fields, [(flag, _)] = call(tmp_path, apus.port, BATCH_READ, batch_read(text), "zstd,gzip")
    assert "grpc-encoding" not in fields and flag == 0
    # A zstd-compressed request message.
    request = re_pb2.BatchUpdateBlobsRequest(requests=[
        re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(b"z" * 5000), data=b"z" * 5000)]).SerializeToString()
    packed = zstandard.ZstdCompressor().compress(request)
    fields, [(flag, payload)] = call(
        tmp_path, apus.port, "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
        packed, None, encoding="zstd", compressed=True)
    assert fields.get("grpc-status") == "0", fields
    assert re_pb2.BatchUpdateBlobsResponse.FromString(payload).responses[0].status.code == 0
    with grpc.insecure_channel(apus.address) as ch:
        assert download(ch, digest(b"z" * 5000)) == b"z" * 5000
    # An encoding the server cannot read is UNIMPLEMENTED, naming what it reads.
    fields, _ = call(tmp_path, apus.port, FIND_MISSING, b"", None, encoding="br")
    assert fields.get("grpc-status") == "12" and "zstd" in fields.get("grpc-message", "")


def test_grpcio_gzip_both_ways(apus_factory):
    """grpcio offers gzip on every call: a large download comes back gzip-compressed and is
    read transparently; an upload compressed with gzip is stored."""
    apus = apus_factory(cache_config({"memory": {"max_bytes": 1 << 30}},
                                     response_compression={"min_bytes": 1024, "encodings": ["gzip"]}))
    text = compressible(3 << 20)
    with grpc.insecure_channel(apus.address, compression=grpc.Compression.Gzip) as ch:
        upload(ch, text, chunk=256 * 1024)
        assert download(ch, digest(text)) == text
        assert download(ch, digest(text), offset=1_000_000, limit=100) == text[1_000_000:1_000_100]
        read = bs_grpc.ByteStreamStub(ch).Read(
            bs_pb2.ReadRequest(resource_name=f"blobs/{digest(text).hash}/{len(text)}"))
        assert sum(len(r.data) for r in read) == len(text)


def test_compressed_blobs_reads_are_never_compressed_again(apus_factory, tmp_path):
    from reapi import bs_pb2
    apus = apus_factory(cache_config({"memory": {"max_bytes": 1 << 30}}, response_compression=COMPRESSION))
    text = compressible(2 << 20)
    with grpc.insecure_channel(apus.address) as ch:
        upload(ch, text)
    d = digest(text)
    read = "/google.bytestream.ByteStream/Read"
    plain = bs_pb2.ReadRequest(resource_name=f"blobs/{d.hash}/{d.size_bytes}").SerializeToString()
    fields, messages = call(tmp_path, apus.port, read, plain, "zstd")
    assert fields.get("grpc-encoding") == "zstd" and messages and all(flag == 1 for flag, _ in messages)
    inflate = zstandard.ZstdDecompressor()
    assert b"".join(bs_pb2.ReadResponse.FromString(inflate.decompress(p)).data for _, p in messages) == text
    packed = bs_pb2.ReadRequest(resource_name=f"compressed-blobs/zstd/{d.hash}/{d.size_bytes}").SerializeToString()
    fields, messages = call(tmp_path, apus.port, read, packed, "zstd")
    assert fields.get("grpc-status") == "0", fields
    assert messages and all(flag == 0 for flag, _ in messages)
    frame = b"".join(bs_pb2.ReadResponse.FromString(p).data for _, p in messages)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == text
