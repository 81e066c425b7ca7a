"""Helpers to build REAPI actions and run them through Execute with grpcio."""
import json
import os

import grpc

from buildgrid._protos.google.longrunning import operations_pb2, operations_pb2_grpc  # noqa: F401
from buildgrid._protos.google.rpc import error_details_pb2
from reapi import digest, re_grpc, re_pb2, upload


# APUS_TEST_SCHEDULER_STATE (JSON, e.g. {"postgres": {"url": ...}}): the scheduler's `state`,
# so scripts/test.sh runs the execution tests again on the PostgreSQL backend.
STATE = json.loads(os.environ.get("APUS_TEST_SCHEDULER_STATE", '"memory"'))


def exec_config(tmp_path, workers=1, scheduler=None, worker_properties=None):
    """Cache + scheduler + `workers` local workers in one process."""
    return {
        "stores": {"cas": {"memory": {"max_bytes": 1 << 30}}, "ac": {"memory": {}}},
        "schedulers": {"main": dict({"unsatisfiable_grace_seconds": 1, "state": STATE}, **(scheduler or {}))},
        "servers": [{"listen": "127.0.0.1:PORT", "worker_api": "main",
                     "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
        "workers": [worker_config(tmp_path, i, worker_properties) for i in range(workers)],
        "global": {"shutdown_grace_seconds": 5},
    }


def worker_config(tmp_path, i, properties=None, url="grpc://127.0.0.1:PORT"):
    cfg = {"scheduler": url, "cas": url, "work_directory": str(tmp_path / f"work{i}"),
           "cache_directory": str(tmp_path / f"cache{i}"), "max_concurrent_actions": 2}
    if properties:
        cfg["platform"] = properties
    return cfg


class Action:
    def __init__(self, channel, args, files=None, outputs=(), output_dirs=(), env=None, timeout=0,
                 do_not_cache=False, platform=None, upload_inputs=True):
        self.channel = channel
        files = files or {}
        root = self._directory(files, upload_inputs)
        command = re_pb2.Command(
            arguments=args, output_files=sorted(outputs), output_directories=sorted(output_dirs),
            environment_variables=[re_pb2.Command.EnvironmentVariable(name=k, value=v)
                                   for k, v in sorted((env or {"PATH": "/usr/bin:/bin"}).items())])
        if platform:
            command.platform.properties.extend(
                [re_pb2.Platform.Property(name=k, value=v) for k, v in sorted(platform.items())])
        cmd_bytes = command.SerializeToString()
        upload(channel, cmd_bytes)
        action = re_pb2.Action(command_digest=digest(cmd_bytes), input_root_digest=root,
                               do_not_cache=do_not_cache)
        if timeout:
            action.timeout.seconds = timeout
        self.bytes = action.SerializeToString()
        upload(channel, self.bytes)
        self.digest = digest(self.bytes)

    def _directory(self, files, upload_inputs):
        """files: {"a/b.sh": (b"content", executable)}"""
        tree = {}
        for path, (content, executable) in files.items():
            parts = path.split("/")
            node = tree
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = (content, executable)

        def build(node):
            d = re_pb2.Directory()
            for name in sorted(node):
                value = node[name]
                if isinstance(value, dict):
                    d.directories.add(name=name, digest=build(value))
                else:
                    content, executable = value
                    if upload_inputs:
                        upload(self.channel, content)
                    d.files.add(name=name, digest=digest(content), is_executable=executable)
            data = d.SerializeToString()
            upload(self.channel, data)
            return digest(data)

        return build(tree)

    def execute(self, skip_cache_lookup=False, timeout=60):
        ops = list(re_grpc.ExecutionStub(self.channel).Execute(
            re_pb2.ExecuteRequest(action_digest=self.digest, skip_cache_lookup=skip_cache_lookup),
            timeout=timeout))
        return ops, response_of(ops[-1])


def response_of(op):
    assert op.done, op
    response = re_pb2.ExecuteResponse()
    op.response.Unpack(response)
    return response


def stage_of(op):
    meta = re_pb2.ExecuteOperationMetadata()
    op.metadata.Unpack(meta)
    return meta.stage


def read_blob(channel, d):
    if d.size_bytes == 0:
        return b""
    r = re_grpc.ContentAddressableStorageStub(channel).BatchReadBlobs(
        re_pb2.BatchReadBlobsRequest(digests=[d]))
    assert r.responses[0].status.code == 0, r
    return r.responses[0].data


def precondition_failure(status):
    for detail in status.details:
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(failure):
            return failure
    return None
