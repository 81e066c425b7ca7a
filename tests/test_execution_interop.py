"""Remote execution through grpcio: Execute, WaitExecution, Operations, and a worker."""
import concurrent.futures
import os
import re
import signal
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from buildgrid._protos.google.longrunning import operations_pb2, operations_pb2_grpc
from conftest import ApusProcess
from execution import (Action, exec_config, precondition_failure, read_blob, response_of, stage_of,
                       worker_config)
from reapi import digest, re_grpc, re_pb2


@pytest.fixture
def executor(apus_factory, tmp_path):
    return apus_factory(exec_config(tmp_path)).wait_for_workers(1)


@pytest.fixture
def ch(executor):
    with grpc.insecure_channel(executor.address) as channel:
        yield channel


def test_capabilities_advertise_execution(ch):
    caps = re_grpc.CapabilitiesStub(ch).GetCapabilities(re_pb2.GetCapabilitiesRequest())
    assert caps.execution_capabilities.exec_enabled
    assert caps.execution_capabilities.digest_function == re_pb2.DigestFunction.SHA256


def test_execute_then_cached_result(ch):
    action = Action(ch, ["/bin/sh", "-c", "echo hello > out.txt; echo to-stdout"], outputs=["out.txt"])
    ops, first = action.execute()
    assert [stage_of(op) for op in ops][-1] == re_pb2.ExecutionStage.COMPLETED
    assert first.status.code == 0 and not first.cached_result
    assert first.result.exit_code == 0
    [out] = first.result.output_files
    assert out.path == "out.txt" and read_blob(ch, out.digest) == b"hello\n"
    assert read_blob(ch, first.result.stdout_digest) == b"to-stdout\n"
    assert first.result.execution_metadata.worker

    _, second = action.execute()
    assert second.cached_result and second.result == first.result
    _, third = action.execute(skip_cache_lookup=True)
    assert not third.cached_result and third.result.exit_code == 0


def test_nonzero_exit_is_reported_and_not_cached(ch):
    action = Action(ch, ["/bin/sh", "-c", "echo failing >&2; exit 3"])
    _, first = action.execute()
    assert first.status.code == 0 and first.result.exit_code == 3
    assert read_blob(ch, first.result.stderr_digest) == b"failing\n"
    with pytest.raises(grpc.RpcError) as e:
        re_grpc.ActionCacheStub(ch).GetActionResult(re_pb2.GetActionResultRequest(action_digest=action.digest))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    _, second = action.execute()
    assert not second.cached_result and second.result.exit_code == 3


def test_inputs_are_materialised_with_executable_bits(ch):
    files = {"bin/tool.sh": (b"#!/bin/sh\necho tool ran\n", True),
             "data/in.txt": (b"payload\n", False),
             "empty": (b"", False)}
    action = Action(ch, ["/bin/sh", "-c",
                         "test -x bin/tool.sh && test ! -x data/in.txt && test -f empty && "
                         "bin/tool.sh > result && cat data/in.txt >> result; echo x >> data/in.txt; true"],
                    files=files, outputs=["result"])
    _, response = action.execute()
    assert response.status.code == 0, response.status
    assert response.result.exit_code == 0, read_blob(ch, response.result.stderr_digest)
    assert read_blob(ch, response.result.output_files[0].digest) == b"tool ran\npayload\n"
    # Whatever the first action did to its inputs, the next one sees the CAS content.
    again = Action(ch, ["/bin/cat", "data/in.txt"], files={"data/in.txt": (b"payload\n", False)}, do_not_cache=True)
    _, response = again.execute()
    assert read_blob(ch, response.result.stdout_digest) == b"payload\n"


def test_missing_input_is_failed_precondition_naming_the_blob(ch):
    content = b"never uploaded input"
    action = Action(ch, ["/bin/cat", "in"], files={"in": (content, False)}, upload_inputs=False)
    _, response = action.execute()
    assert response.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    failure = precondition_failure(response.status)
    d = digest(content)
    assert [(v.type, v.subject) for v in failure.violations] == [("MISSING", f"blobs/{d.hash}/{d.size_bytes}")]


def test_timeout_is_deadline_exceeded(ch):
    # The action would sleep 300 s; its 1 s timeout must end it long before that. The bound
    # is loose on purpose: a loaded 2-core machine is slow, but not 60 s slow.
    action = Action(ch, ["/bin/sh", "-c", "sleep 300"], timeout=1)
    start = time.time()
    _, response = action.execute(timeout=120)
    assert response.status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert time.time() - start < 60


def test_output_directory_becomes_a_tree(ch):
    action = Action(ch, ["/bin/sh", "-c", "mkdir -p d/sub && echo a > d/a && echo b > d/sub/b && ln -s a d/link"],
                    output_dirs=["d"])
    _, response = action.execute()
    assert response.status.code == 0 and response.result.exit_code == 0
    [out] = response.result.output_directories
    assert out.path == "d"
    tree = re_pb2.Tree()
    tree.ParseFromString(read_blob(ch, out.tree_digest))
    assert [f.name for f in tree.root.files] == ["a"]
    assert [(s.name, s.target) for s in tree.root.symlinks] == [("link", "a")]
    [sub] = tree.children
    assert read_blob(ch, sub.files[0].digest) == b"b\n"
    assert tree.root.directories[0].digest == digest(sub.SerializeToString())


def test_identical_concurrent_executes_run_once(ch, tmp_path):
    marker = tmp_path / "runs"
    action = Action(ch, ["/bin/sh", "-c", f"echo run >> {marker}; sleep 1; echo same"])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: action.execute(), range(4)))
    names = {ops[0].name for ops, _ in results}
    assert len(names) == 1
    assert len({r.result.stdout_digest.hash for _, r in results}) == 1
    assert marker.read_text() == "run\n"


def test_wait_execution_after_the_stream_is_dropped(ch):
    action = Action(ch, ["/bin/sh", "-c", "sleep 2; echo waited"], do_not_cache=True)
    stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=action.digest))
    first = next(stream)
    assert not first.done
    stream.cancel()
    ops = list(re_grpc.ExecutionStub(ch).WaitExecution(re_pb2.WaitExecutionRequest(name=first.name)))
    response = response_of(ops[-1])
    assert read_blob(ch, response.result.stdout_digest) == b"waited\n"
    got = operations_pb2_grpc.OperationsStub(ch).GetOperation(operations_pb2.GetOperationRequest(name=first.name))
    assert got.done and got.name == first.name
    with pytest.raises(grpc.RpcError) as e:
        list(re_grpc.ExecutionStub(ch).WaitExecution(re_pb2.WaitExecutionRequest(name="operations/nope")))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def process_gone(pid):
    """True when `pid` no longer runs (gone, or a zombie nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def test_cancel_operation_kills_the_action_and_frees_its_slot(apus_factory, tmp_path):
    config = exec_config(tmp_path)
    config["workers"][0]["max_concurrent_actions"] = 1
    executor = apus_factory(config).wait_for_workers(1)
    pidfile = tmp_path / "action.pid"
    with grpc.insecure_channel(executor.address) as ch:
        action = Action(ch, ["/bin/sh", "-c", f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 300"],
                        do_not_cache=True)
        stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=action.digest), timeout=120)
        first = next(stream)
        deadline = time.time() + 60
        while not pidfile.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert pidfile.exists(), "the action never started"
        pid = int(pidfile.read_text())
        assert not process_gone(pid)
        operations_pb2_grpc.OperationsStub(ch).CancelOperation(operations_pb2.CancelOperationRequest(name=first.name))
        response = response_of(list(stream)[-1])
        assert response.status.code == grpc.StatusCode.CANCELLED.value[0]
        deadline = time.time() + 30
        while not process_gone(pid) and time.time() < deadline:
            time.sleep(0.05)
        assert process_gone(pid), f"the cancelled action's process {pid} still runs"
        # The one slot is free again: the next action runs long before the cancelled one's
        # `sleep 300` would have ended.
        start = time.time()
        _, after = Action(ch, ["/bin/echo", "next"], do_not_cache=True).execute(timeout=120)
        assert after.status.code == 0 and read_blob(ch, after.result.stdout_digest) == b"next\n"
        assert time.time() - start < 60


def test_unsatisfiable_platform_fails_clearly(ch):
    action = Action(ch, ["/bin/true"], platform={"OSFamily": "plan9"})
    start = time.time()
    _, response = action.execute()
    assert response.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "OSFamily=plan9" in response.status.message
    # Failed after the 1 s grace, not after the client's 60 s call timeout.
    assert time.time() - start < 45
    unknown = Action(ch, ["/bin/true"], platform={"gpu-count": "8"})
    with pytest.raises(grpc.RpcError) as e:
        unknown.execute()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gpu-count" in e.value.details()


def test_execute_errors(ch):
    stub = re_grpc.ExecutionStub(ch)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Execute(re_pb2.ExecuteRequest(action_digest=digest(b"no such action"))))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Execute(re_pb2.ExecuteRequest(action_digest=re_pb2.Digest(hash="x", size_bytes=1))))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    escaping = Action(ch, ["/bin/true"], outputs=["../escape"])
    _, response = escaping.execute()
    assert response.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_worker_killed_mid_action_is_retried_elsewhere(apus_factory, tmp_path):
    server_cfg = exec_config(tmp_path, workers=0)
    server = apus_factory(server_cfg)
    url = f"grpc://{server.address}"
    workers = []
    for i in range(2):
        d = tmp_path / f"w{i}"
        d.mkdir()
        # Each worker runs commands under its own APUS_TEST_WORKER, so the output names it.
        cfg = dict(worker_config(tmp_path, i, url=url), entrypoint=["/usr/bin/env", f"APUS_TEST_WORKER=w{i}"])
        workers.append(ApusProcess({"workers": [cfg]}, d).start_worker())
    with grpc.insecure_channel(server.address) as ch:
        # The action holds until the test has killed the worker running it (go file), so a
        # slow machine cannot let it finish on the victim first.
        go = tmp_path / "go"
        action = Action(ch, ["/bin/sh", "-c", f"i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; "
                                              f"i=$((i+1)); done; echo $APUS_TEST_WORKER > out"], outputs=["out"])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(action.execute)
            victim = None
            deadline = time.time() + 20
            while victim is None and time.time() < deadline:
                for i, w in enumerate(workers):
                    work = tmp_path / f"work{i}"
                    if work.exists() and any(work.iterdir()):
                        victim = w
                time.sleep(0.05)
            assert victim is not None, "no worker started the action"
            victim.proc.kill()
            victim.proc.wait()
            go.touch()
            _, response = future.result(timeout=120)
    assert response.status.code == 0 and response.result.exit_code == 0
    survivor = 1 - workers.index(victim)
    with grpc.insecure_channel(server.address) as ch:
        assert read_blob(ch, response.result.output_files[0].digest) == f"w{survivor}\n".encode()
    # The worker id is `host-PID-random`: the metadata names the surviving process too.
    assert f"-{workers[survivor].proc.pid}-" in response.result.execution_metadata.worker
    for w in workers:
        w.stop()


def test_worker_entrypoint_wraps_every_command(apus_factory, tmp_path):
    config = exec_config(tmp_path)
    config["workers"][0]["entrypoint"] = ["/usr/bin/env", "WRAPPED_BY=apus-entrypoint"]
    apus = apus_factory(config).wait_for_workers(1)
    with grpc.insecure_channel(apus.address) as ch:
        action = Action(ch, ["/bin/sh", "-c", "echo $WRAPPED_BY"])
        _, response = action.execute()
        assert response.status.code == 0 and response.result.exit_code == 0
        assert read_blob(ch, response.result.stdout_digest) == b"apus-entrypoint\n"


def execute_with_grpc_timeout(address, action, tmp_path, timeout="1S"):
    """Execute over raw HTTP/2 from nghttp with a `grpc-timeout` header: nghttp has no gRPC
    deadline of its own and waits up to 120 s. Returns what it received, as
    [(seconds since start, line)], and its whole output."""
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        pytest.fail("needs nghttp (Debian's nghttp2-client; scripts/setup.sh --test installs it)")
    request = re_pb2.ExecuteRequest(action_digest=action.digest).SerializeToString()
    body = tmp_path / "execute.grpc"
    body.write_bytes(b"\0" + len(request).to_bytes(4, "big") + request)
    p = subprocess.run(
        [nghttp, "-v", "-n", "--no-content-length", "-t", "120", "-H", ":method: POST",
         "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f"grpc-timeout: {timeout}",
         "-d", str(body), f"http://{address}/build.bazel.remote.execution.v2.Execution/Execute"],
        capture_output=True, text=True, errors="replace", timeout=150)
    # `[  1.002] recv (stream_id=13) grpc-status: 4`, then the trailers' HEADERS frame.
    received = [(float(t), line) for t, line in re.findall(r"^\[\s*([\d.]+)\] recv (.*)$", p.stdout, re.M)]
    return received, p.stdout[-3000:] + p.stderr[-1000:]


def kill_pids(pidfile):
    """Ends the action processes a test started (their PIDs, one a line) by PID."""
    for pid in pidfile.read_text().split() if pidfile.exists() else []:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_server_enforces_grpc_timeout_header(ch, executor, tmp_path):
    """A `grpc-timeout: 1S` header on an Execute that the server would hold for 10 s: apus
    itself must end the call with DEADLINE_EXCEEDED (ignoring the header, it would answer OK
    after 10 s; the client, nghttp, would wait 120 s)."""
    pidfile = tmp_path / "pids"
    action = Action(ch, ["/bin/sh", "-c", f"echo $$ >> {pidfile}; exec sleep 10"], do_not_cache=True)
    try:
        received, output = execute_with_grpc_timeout(executor.address, action, tmp_path)
        status = [(t, line.rsplit(":", 1)[1].strip()) for t, line in received if "grpc-status:" in line]
        assert [code for _, code in status] == ["4"], output
        # ...in trailers that end the stream (flags END_STREAM | END_HEADERS)...
        assert any("HEADERS frame" in line and "flags=0x05" in line for _, line in received), output
        # ...and not before the deadline.
        assert status[0][0] >= 0.9, output
    finally:
        kill_pids(pidfile)  # the operation outlives the call (see the next test)


def test_operation_outlives_the_execute_deadline(ch, executor, tmp_path):
    """A deadline ends the Execute call, not the operation (as when a client drops the
    stream): it goes on, reachable by name through WaitExecution and CancelOperation, and
    cancelling it kills the process. (An identical Execute of a do_not_cache action runs it
    again: REAPI forbids merging those.)"""
    pidfile = tmp_path / "pids"
    action = Action(ch, ["/bin/sh", "-c", f"echo $$ >> {pidfile}; exec sleep 300"], do_not_cache=True)
    try:
        stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=action.digest), timeout=2)
        name = next(stream).name
        with pytest.raises(grpc.RpcError) as e:
            list(stream)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.time() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.time() < deadline:
            time.sleep(0.05)
        [pid] = pidfile.read_text().split()
        waiting = re_grpc.ExecutionStub(ch).WaitExecution(re_pb2.WaitExecutionRequest(name=name), timeout=120)
        op = next(waiting)
        assert op.name == name and not op.done
        assert not process_gone(int(pid))
        operations_pb2_grpc.OperationsStub(ch).CancelOperation(operations_pb2.CancelOperationRequest(name=name))
        assert response_of(list(waiting)[-1]).status.code == grpc.StatusCode.CANCELLED.value[0]
        deadline = time.time() + 30
        while not process_gone(int(pid)) and time.time() < deadline:
            time.sleep(0.05)
        assert process_gone(int(pid)), f"the cancelled action's process {pid} still runs"
    finally:
        kill_pids(pidfile)
