"""google.longrunning ListOperations / DeleteOperation and the scheduler's queue cap, through
grpcio (buildgrid's longrunning stubs) against a real apus with a worker."""
import grpc
import pytest

from buildgrid._protos.google.longrunning import operations_pb2, operations_pb2_grpc
from execution import Action, exec_config
from reapi import re_grpc, re_pb2


@pytest.fixture
def ch(apus_factory, tmp_path):
    executor = apus_factory(exec_config(tmp_path)).wait_for_workers(1)
    with grpc.insecure_channel(executor.address) as channel:
        yield channel


def list_all(ops, page_size):
    names, token, pages = [], "", 0
    while True:
        page = ops.ListOperations(operations_pb2.ListOperationsRequest(name="", page_size=page_size,
                                                                       page_token=token))
        names += [op.name for op in page.operations]
        pages += 1
        token = page.next_page_token
        if not token:
            return names, pages


def test_list_pages_in_creation_order_and_delete_forgets_finished(ch):
    ops = operations_pb2_grpc.OperationsStub(ch)
    created = []
    for i in range(5):
        stream, response = Action(ch, ["/bin/echo", str(i)]).execute(skip_cache_lookup=True)
        assert response.status.code == 0
        created.append(stream[-1].name)
    names, pages = list_all(ops, 2)
    assert [n for n in names if n in created] == created
    assert pages >= 3
    assert all(o.done for o in ops.ListOperations(operations_pb2.ListOperationsRequest(name="")).operations)

    ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=created[0]))
    with pytest.raises(grpc.RpcError) as e:
        ops.GetOperation(operations_pb2.GetOperationRequest(name=created[0]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert created[0] not in list_all(ops, 100)[0]
    with pytest.raises(grpc.RpcError) as e:
        ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=created[0]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_refuses_filters_and_foreign_tokens(ch):
    ops = operations_pb2_grpc.OperationsStub(ch)
    for request, words in [(operations_pb2.ListOperationsRequest(name="", filter="done=true"), "filter"),
                           (operations_pb2.ListOperationsRequest(name="", page_token="xyz"), "page_token")]:
        with pytest.raises(grpc.RpcError) as e:
            ops.ListOperations(request)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in e.value.details()


def test_a_running_operation_is_not_deleted_until_cancelled(ch):
    ops = operations_pb2_grpc.OperationsStub(ch)
    action = Action(ch, ["/bin/sleep", "300"], do_not_cache=True)
    stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=action.digest), timeout=120)
    first = next(stream)
    with pytest.raises(grpc.RpcError) as e:
        ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=first.name))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cancel" in e.value.details()
    ops.CancelOperation(operations_pb2.CancelOperationRequest(name=first.name))
    list(stream)
    ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=first.name))


def test_execute_beyond_the_queue_cap_is_resource_exhausted(apus_factory, tmp_path):
    executor = apus_factory(exec_config(tmp_path, workers=0, scheduler={"max_queued_actions": 2}))
    with grpc.insecure_channel(executor.address) as ch:
        stub = re_grpc.ExecutionStub(ch)
        streams = []
        for i in range(2):
            action = Action(ch, ["/bin/echo", str(i)])
            streams.append(stub.Execute(re_pb2.ExecuteRequest(action_digest=action.digest), timeout=60))
            assert not next(streams[-1]).done
        third = Action(ch, ["/bin/echo", "3"])
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Execute(re_pb2.ExecuteRequest(action_digest=third.digest), timeout=60))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 actions are queued" in e.value.details() and "max_queued_actions" in e.value.details()
        for s in streams:
            s.cancel()
