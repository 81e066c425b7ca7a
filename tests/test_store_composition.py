"""Stores composed by config, through a running apus: a local proxy in front of another."""
import os

import grpc

from conftest import cache_config
from reapi import digest, download, re_grpc, re_pb2, upload


def test_grpc_store_proxy(apus_factory, tmp_path):
    upstream = apus_factory(cache_config({"memory": {}}))
    url = f"grpc://{upstream.address}"
    proxy_config = {
        "stores": {
            "local": {"filesystem": {"path": str(tmp_path / "local")}},
            "remote-cas": {"grpc": {"url": url}},
            "cas": {"fast_slow": {"fast": {"ref": "local"},
                                  "slow": {"existence_cache": {"backend": {"ref": "remote-cas"}}}}},
            "ac": {"grpc": {"url": url, "role": "action_cache"}},
        },
        "servers": [{"listen": "127.0.0.1:PORT", "instances": {"": {"cas": "cas", "action_cache": "ac"}}}],
    }
    proxy = apus_factory(proxy_config)
    small, big = os.urandom(500), os.urandom(3 * 1024 * 1024)
    with grpc.insecure_channel(proxy.address) as p, grpc.insecure_channel(upstream.address) as u:
        upload(p, small)
        upload(p, big, chunk=256 * 1024)
        # Written through: upstream has both, byte for byte.
        assert download(u, digest(small)) == small
        assert download(u, digest(big)) == big
        # Something only upstream has is served by the proxy, and lands in its local tier.
        only_upstream = os.urandom(2 * 1024 * 1024)
        upload(u, only_upstream)
        assert download(p, digest(only_upstream), offset=5, limit=10) == only_upstream[5:15]
        assert any(f.is_file() for f in (tmp_path / "local" / "content").rglob("*"))
        # Action cache results pass through unchanged.
        result = re_pb2.ActionResult(exit_code=4, stdout_digest=digest(small))
        re_grpc.ActionCacheStub(p).UpdateActionResult(
            re_pb2.UpdateActionResultRequest(action_digest=digest(b"act"), action_result=result))
        got = re_grpc.ActionCacheStub(u).GetActionResult(re_pb2.GetActionResultRequest(action_digest=digest(b"act")))
        assert got == result
        missing = re_grpc.ContentAddressableStorageStub(p).FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(blob_digests=[digest(b"nowhere"), digest(big)]))
        assert [d.hash for d in missing.missing_blob_digests] == [digest(b"nowhere").hash]
