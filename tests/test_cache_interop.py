"""The REAPI cache surface, exercised with grpcio and the buildgrid stubs: a client stack
nobody on this project wrote."""
import concurrent.futures
import os

import grpc
import pytest

from conftest import cache_config
from reapi import EMPTY_HASH, bs_grpc, bs_pb2, digest, download, re_grpc, re_pb2, upload


def code_of(excinfo):
    return excinfo.value.code()


# --- Capabilities -----------------------------------------------------------------------

def test_capabilities_advertise_cache_only(channel):
    caps = re_grpc.CapabilitiesStub(channel).GetCapabilities(re_pb2.GetCapabilitiesRequest())
    cache = caps.cache_capabilities
    assert list(cache.digest_functions) == [re_pb2.DigestFunction.SHA256]
    assert cache.action_cache_update_capabilities.update_enabled is True
    assert cache.max_batch_total_size_bytes == 4 * 1024 * 1024 - 64 * 1024
    assert (caps.low_api_version.major, caps.low_api_version.minor) == (2, 0)
    assert (caps.high_api_version.major, caps.high_api_version.minor) == (2, 3)
    assert not caps.HasField("execution_capabilities")


def test_capabilities_unknown_instance(channel):
    with pytest.raises(grpc.RpcError) as e:
        re_grpc.CapabilitiesStub(channel).GetCapabilities(
            re_pb2.GetCapabilitiesRequest(instance_name="nope"))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "nope" in e.value.details()


# --- FindMissingBlobs / BatchUpdateBlobs / BatchReadBlobs -------------------------------

def test_find_missing_then_batch_update_and_read(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    blobs = [os.urandom(n) for n in (1, 100, 4096)]
    ds = [digest(b) for b in blobs]
    missing = cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=ds))
    assert [d.hash for d in missing.missing_blob_digests] == [d.hash for d in ds]

    resp = cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
        re_pb2.BatchUpdateBlobsRequest.Request(digest=d, data=b) for d, b in zip(ds, blobs)]))
    assert [r.status.code for r in resp.responses] == [0, 0, 0]
    assert [r.digest.hash for r in resp.responses] == [d.hash for d in ds]

    missing = cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=ds))
    assert list(missing.missing_blob_digests) == []

    read = cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=ds))
    assert [r.data for r in read.responses] == blobs
    assert [r.status.code for r in read.responses] == [0, 0, 0]


def test_empty_blob_is_always_present(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    empty = re_pb2.Digest(hash=EMPTY_HASH, size_bytes=0)
    assert list(cas.FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[empty])).missing_blob_digests) == []
    read = cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[empty]))
    assert read.responses[0].status.code == 0 and read.responses[0].data == b""
    assert download(channel, empty) == b""


@pytest.mark.parametrize("hash_, size, fragment", [
    ("xyz", 3, "64 lowercase hex"),
    ("A" * 64, 3, "64 lowercase hex"),
    ("a" * 63, 3, "64 lowercase hex"),
    ("g" * 64, 3, "64 lowercase hex"),
    ("a" * 64, -1, "negative size"),
])
def test_find_missing_rejects_bad_digests(channel, hash_, size, fragment):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(
            blob_digests=[re_pb2.Digest(hash=hash_, size_bytes=size)]))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in e.value.details()
    assert "blob_digests[0]" in e.value.details()


def test_batch_update_wrong_digest_is_per_blob_and_stores_nothing(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    good = b"good content"
    bad_digest = digest(b"other content")
    resp = cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
        re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(good), data=good),
        re_pb2.BatchUpdateBlobsRequest.Request(
            digest=re_pb2.Digest(hash=bad_digest.hash, size_bytes=len(good)), data=good),
        re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(good), data=good + b"x"),
    ]))
    assert [r.status.code for r in resp.responses] == [
        0, grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert "hashes to" in resp.responses[1].status.message
    missing = cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(
        blob_digests=[re_pb2.Digest(hash=bad_digest.hash, size_bytes=len(good))]))
    assert len(missing.missing_blob_digests) == 1


def test_batch_over_limit_is_whole_call_invalid_argument(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    blobs = [os.urandom(2_070_000), os.urandom(2_070_000)]  # 4.14 MB: over the batch limit, under 4 MiB
    with pytest.raises(grpc.RpcError) as e:
        cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs]))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    big = [re_pb2.Digest(hash="a" * 64, size_bytes=3_000_000)] * 2
    with pytest.raises(grpc.RpcError) as e:
        cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=big))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT


def test_batch_read_missing_is_per_blob_not_found(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    present = b"present"
    upload(channel, present)
    absent = digest(b"absent")
    resp = cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[digest(present), absent]))
    assert [r.status.code for r in resp.responses] == [0, grpc.StatusCode.NOT_FOUND.value[0]]
    assert resp.responses[0].data == present


def test_oversized_message_is_resource_exhausted(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    blob = os.urandom(5 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as e:
        cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob)]))
    assert code_of(e) == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- GetTree ------------------------------------------------------------------------------

def put_directory(channel, directory):
    data = directory.SerializeToString()
    upload(channel, data)
    return digest(data)


def test_get_tree_pages_through_every_directory(channel):
    leaves = [re_pb2.Directory(files=[re_pb2.FileNode(name=f"f{i}", digest=digest(b"x"))])
              for i in range(5)]
    leaf_digests = [put_directory(channel, d) for d in leaves]
    root = re_pb2.Directory(directories=[
        re_pb2.DirectoryNode(name=f"d{i}", digest=d) for i, d in enumerate(leaf_digests)])
    root_digest = put_directory(channel, root)
    cas = re_grpc.ContentAddressableStorageStub(channel)

    everything = [d for r in cas.GetTree(re_pb2.GetTreeRequest(root_digest=root_digest))
                  for d in r.directories]
    assert everything == [root] + leaves

    pages, token = [], ""
    while True:
        responses = list(cas.GetTree(
            re_pb2.GetTreeRequest(root_digest=root_digest, page_size=2, page_token=token)))
        assert len(responses) == 1
        pages.append(list(responses[0].directories))
        token = responses[0].next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [d for p in pages for d in p] == [root] + leaves


def test_get_tree_missing_root_and_partial_tree(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        list(cas.GetTree(re_pb2.GetTreeRequest(root_digest=digest(b"no such directory"))))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    present = re_pb2.Directory(files=[re_pb2.FileNode(name="a", digest=digest(b"a"))])
    root = re_pb2.Directory(directories=[
        re_pb2.DirectoryNode(name="gone", digest=digest(b"never uploaded")),
        re_pb2.DirectoryNode(name="here", digest=put_directory(channel, present))])
    tree = [d for r in cas.GetTree(re_pb2.GetTreeRequest(root_digest=put_directory(channel, root)))
            for d in r.directories]
    assert tree == [root, present]


# --- ByteStream ---------------------------------------------------------------------------

def test_bytestream_roundtrip_with_offsets_and_instance(channel):
    data = os.urandom(3 * 1024 * 1024 + 7)
    resp, d = upload(channel, data, instance="team/a", chunk=100_000)
    assert resp.committed_size == len(data)
    assert download(channel, d, instance="team/a") == data
    assert download(channel, d, instance="team/a", offset=1000) == data[1000:]
    assert download(channel, d, instance="team/a", offset=10, limit=5) == data[10:15]
    assert download(channel, d, instance="team/a", offset=len(data)) == b""


def test_bytestream_large_blob_is_streamed(channel):
    data = os.urandom(40 * 1024 * 1024)
    resp, d = upload(channel, data, chunk=1024 * 1024)
    assert resp.committed_size == len(data)
    assert download(channel, d) == data


@pytest.mark.parametrize("offset, limit, code", [
    (-1, 0, grpc.StatusCode.OUT_OF_RANGE),
    (12, 0, grpc.StatusCode.OUT_OF_RANGE),
    (0, -1, grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bytestream_read_bad_ranges(channel, offset, limit, code):
    data = b"eleven byte"
    _, d = upload(channel, data)
    with pytest.raises(grpc.RpcError) as e:
        download(channel, d, offset=offset, limit=limit)
    assert code_of(e) == code


def test_bytestream_read_missing_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as e:
        download(channel, digest(b"never written"))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", [
    "blobs/xyz/3",
    "blobs/" + "a" * 64,
    "blobs/" + "a" * 64 + "/-5",
    "blobs/" + "a" * 64 + "/ten",
    "things/" + "a" * 64 + "/3",
    "/blobs/" + "a" * 64 + "/3",
    "blobs/" + "a" * 64 + "/3/extra",
    "compressed-blobs/lz4/" + "a" * 64 + "/3",
])
def test_bytestream_read_bad_resource_names(channel, name):
    with pytest.raises(grpc.RpcError) as e:
        list(bs_grpc.ByteStreamStub(channel).Read(bs_pb2.ReadRequest(resource_name=name)))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource name" in e.value.details() or "compressed" in e.value.details()


@pytest.mark.parametrize("name", [
    "blobs/{h}/3", "uploads/blobs/{h}/3", "uploads/u1/blobs/{h}", "uploads/u1/{h}/3",
    "uploads/u1/blobs/{h}/-3", "uploads/u1/blobs/XYZ/3",
])
def test_bytestream_write_bad_resource_names(channel, name):
    h = digest(b"abc").hash
    req = bs_pb2.WriteRequest(resource_name=name.format(h=h), data=b"abc", finish_write=True)
    with pytest.raises(grpc.RpcError) as e:
        bs_grpc.ByteStreamStub(channel).Write(iter([req]))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT


def test_bytestream_write_wrong_content_stores_nothing(channel):
    claimed = digest(b"what the client claims")
    name = f"uploads/u2/blobs/{claimed.hash}/{claimed.size_bytes}"
    payload = b"x" * claimed.size_bytes
    with pytest.raises(grpc.RpcError) as e:
        bs_grpc.ByteStreamStub(channel).Write(iter([
            bs_pb2.WriteRequest(resource_name=name, data=payload, finish_write=True)]))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "hashes to" in e.value.details()
    cas = re_grpc.ContentAddressableStorageStub(channel)
    assert len(cas.FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[claimed])).missing_blob_digests) == 1
    status = bs_grpc.ByteStreamStub(channel).QueryWriteStatus(
        bs_pb2.QueryWriteStatusRequest(resource_name=name))
    assert (status.committed_size, status.complete) == (0, False)


def test_bytestream_write_offset_gap_and_missing_finish(channel):
    data = b"0123456789" * 10
    d = digest(data)
    name = f"uploads/u3/blobs/{d.hash}/{d.size_bytes}"
    stub = bs_grpc.ByteStreamStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Write(iter([bs_pb2.WriteRequest(resource_name=name, data=data[:50]),
                         bs_pb2.WriteRequest(write_offset=60, data=data[60:], finish_write=True)]))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        stub.Write(iter([bs_pb2.WriteRequest(resource_name=name, data=data)]))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "finish_write" in e.value.details()


def test_query_write_status(channel):
    stub = bs_grpc.ByteStreamStub(channel)
    data = b"query me"
    _, d = upload(channel, data, uuid="q1")
    done = stub.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(
        resource_name=f"uploads/q1/blobs/{d.hash}/{d.size_bytes}"))
    assert (done.committed_size, done.complete) == (len(data), True)
    other = digest(b"unknown upload")
    with pytest.raises(grpc.RpcError) as e:
        stub.QueryWriteStatus(bs_pb2.QueryWriteStatusRequest(
            resource_name=f"uploads/nobody/blobs/{other.hash}/{other.size_bytes}"))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


def test_write_of_existing_blob_returns_full_size(channel):
    data = os.urandom(200_000)
    upload(channel, data)
    resp, _ = upload(channel, data, uuid="again", chunk=10_000)
    assert resp.committed_size == len(data)


def test_concurrent_writers_of_one_blob(channel):
    data = os.urandom(2 * 1024 * 1024 + 3)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(
            lambda i: upload(channel, data, uuid=f"w{i}", chunk=32 * 1024)[0].committed_size,
            range(32)))
    assert results == [len(data)] * 32
    assert download(channel, digest(data)) == data


# --- ActionCache --------------------------------------------------------------------------

def test_action_cache_miss_update_get(channel):
    ac = re_grpc.ActionCacheStub(channel)
    action = digest(b"an action")
    with pytest.raises(grpc.RpcError) as e:
        ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    result = re_pb2.ActionResult(
        exit_code=0, stdout_digest=digest(b"out"),
        output_files=[re_pb2.OutputFile(path="a/b", digest=digest(b"b"), is_executable=True)])
    stored = ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(
        action_digest=action, action_result=result))
    assert stored == result
    assert ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action)) == result
    with pytest.raises(grpc.RpcError) as e:
        ac.GetActionResult(re_pb2.GetActionResultRequest(
            instance_name="team/a", action_digest=digest(b"other action")))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


def test_action_cache_keeps_unknown_fields(channel):
    result = re_pb2.ActionResult(exit_code=3)
    raw = result.SerializeToString() + bytes([0xA8, 0x06, 0x2A])  # field 101 varint 42
    request = (re_pb2.UpdateActionResultRequest(action_digest=digest(b"unknown fields"))
               .SerializeToString() + bytes([0x1A, len(raw)]) + raw)
    update = channel.unary_unary(
        "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult")
    update(request)
    get = channel.unary_unary("/build.bazel.remote.execution.v2.ActionCache/GetActionResult")
    back = get(re_pb2.GetActionResultRequest(action_digest=digest(b"unknown fields")).SerializeToString())
    assert back == raw


def test_action_cache_rejects_bad_output_digest(channel):
    ac = re_grpc.ActionCacheStub(channel)
    bad = re_pb2.ActionResult(output_files=[re_pb2.OutputFile(
        path="x", digest=re_pb2.Digest(hash="nothex", size_bytes=1))])
    with pytest.raises(grpc.RpcError) as e:
        ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(
            action_digest=digest(b"a"), action_result=bad))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_files[0]" in e.value.details()


# --- gRPC layer ---------------------------------------------------------------------------

def test_unknown_method_is_unimplemented(channel):
    call = channel.unary_unary("/build.bazel.remote.execution.v2.Nothing/Here")
    with pytest.raises(grpc.RpcError) as e:
        call(b"")
    assert code_of(e) == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"])
def test_garbage_request_bytes(channel, garbage):
    call = channel.unary_unary(
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs")
    with pytest.raises(grpc.RpcError) as e:
        call(garbage)
    assert code_of(e) == grpc.StatusCode.INTERNAL
    assert "invalid request message" in e.value.details()


def test_gzip_compressed_requests(apus):
    with grpc.insecure_channel(apus.address, compression=grpc.Compression.Gzip) as ch:
        data = os.urandom(1000) + b"\0" * 500_000
        resp, d = upload(ch, data, chunk=100_000)
        assert resp.committed_size == len(data)
        cas = re_grpc.ContentAddressableStorageStub(ch)
        small = b"zipped" * 1000
        r = cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(small), data=small)]))
        assert r.responses[0].status.code == 0
        assert download(ch, d) == data


def test_deadline_is_honoured(channel):
    # A call carrying a grpc-timeout header is served (30 s: ample on a loaded machine; the
    # server enforcing it is test_server_enforces_grpc_timeout_header).
    cas = re_grpc.ContentAddressableStorageStub(channel)
    resp = cas.FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=[digest(b"t")]), timeout=30)
    assert len(resp.missing_blob_digests) == 1


def test_many_concurrent_calls_on_one_connection(channel):
    cas = re_grpc.ContentAddressableStorageStub(channel)
    blobs = [os.urandom(1000) for _ in range(200)]

    def roundtrip(b):
        cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b)]))
        return cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=[digest(b)])).responses[0].data

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        assert list(pool.map(roundtrip, blobs)) == blobs


def test_filesystem_store_survives_restart(apus_factory, tmp_path):
    config = cache_config({"filesystem": {"path": str(tmp_path / "cas"), "max_bytes": 1 << 30}},
                          {"filesystem": {"path": str(tmp_path / "ac")}})
    first = apus_factory(config)
    data = os.urandom(1_500_000)
    with grpc.insecure_channel(first.address) as ch:
        upload(ch, data)
        re_grpc.ActionCacheStub(ch).UpdateActionResult(re_pb2.UpdateActionResultRequest(
            action_digest=digest(b"act"), action_result=re_pb2.ActionResult(exit_code=7)))
    assert first.stop() == 0
    second = apus_factory(config)
    with grpc.insecure_channel(second.address) as ch:
        assert download(ch, digest(data)) == data
        got = re_grpc.ActionCacheStub(ch).GetActionResult(
            re_pb2.GetActionResultRequest(action_digest=digest(b"act")))
        assert got.exit_code == 7
    assert list((tmp_path / "cas" / "tmp").iterdir()) == []
