"""REAPI stubs from the buildgrid package, and small helpers for tests."""
import hashlib

from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from buildgrid._protos.google.bytestream import bytestream_pb2 as bs_pb2
from buildgrid._protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from buildgrid._protos.google.rpc import status_pb2  # noqa: F401  (re-exported)

EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def digest(data: bytes):
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def upload(channel, data: bytes, instance="", chunk=64 * 1024, uuid="0f0e", **call):
    d = digest(data)
    prefix = f"{instance}/" if instance else ""
    name = f"{prefix}uploads/{uuid}/blobs/{d.hash}/{d.size_bytes}"

    def requests():
        if not data:
            yield bs_pb2.WriteRequest(resource_name=name, finish_write=True)
            return
        for offset in range(0, len(data), chunk):
            piece = data[offset:offset + chunk]
            yield bs_pb2.WriteRequest(
                resource_name=name if offset == 0 else "", write_offset=offset, data=piece,
                finish_write=offset + len(piece) == len(data))

    return bs_grpc.ByteStreamStub(channel).Write(requests(), **call), d


def download(channel, d, instance="", offset=0, limit=0):
    prefix = f"{instance}/" if instance else ""
    name = f"{prefix}blobs/{d.hash}/{d.size_bytes}"
    stream = bs_grpc.ByteStreamStub(channel).Read(
        bs_pb2.ReadRequest(resource_name=name, read_offset=offset, read_limit=limit))
    return b"".join(r.data for r in stream)
