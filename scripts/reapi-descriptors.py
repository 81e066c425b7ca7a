#!/usr/bin/env python3
"""Writes a FileDescriptorSet of the REAPI, ByteStream and google.rpc protos, taken from the
generated stubs in the PyPI package buildgrid, for `protoc --decode/--encode` cross-checks."""
import sys

from google.protobuf import descriptor_pb2
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2
from buildgrid._protos.google.bytestream import bytestream_pb2
from buildgrid._protos.google.rpc import error_details_pb2, status_pb2


def main(out):
    fds = descriptor_pb2.FileDescriptorSet()
    seen = set()

    def add(fd):
        if fd.name in seen:
            return
        for dep in fd.dependencies:
            add(dep)
        seen.add(fd.name)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        fds.file.append(proto)

    for module in (remote_execution_pb2, bytestream_pb2, status_pb2, error_details_pb2):
        add(module.DESCRIPTOR)
    with open(out, "wb") as f:
        f.write(fds.SerializeToString())


if __name__ == "__main__":
    main(sys.argv[1])
