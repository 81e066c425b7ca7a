"""TLS on listeners and on the connections apus makes: grpcio, openssl s_client and real Bazel
against certificates made by openssl in the test."""
import os
import shutil
import signal
import subprocess
import time

import grpc
import pytest

from conftest import ApusProcess, cache_config
from execution import Action, exec_config
from reapi import digest, re_grpc, re_pb2
from test_bazel_remote_cache import Bazel, assert_all_remote_hits, summary
from test_bazel_remote_execution import assert_all_remote
from test_bazel_secure import build_twice, start_workers
from s3server import MotoServer, s3_spec
from tlscerts import CertificateAuthority


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    client = ca.issue("client", "ci", client=True)
    return ca, server, client


def tls_block(server, ca=None, client_auth="none"):
    block = {"certificate": str(server[0]), "private_key": str(server[1])}
    if ca:
        block.update({"client_ca": str(ca.cert), "client_auth": client_auth})
    return block


def tls_config(pki, client_auth="none", plaintext_too=False):
    ca, server, _ = pki
    config = cache_config({"memory": {}})
    config["servers"][0]["tls"] = tls_block(server, ca if client_auth != "none" else None, client_auth)
    if plaintext_too:
        # The second listener needs its own port: the test picks it.
        config["servers"].append({"listen": "127.0.0.1:0", "instances": {"": {"cas": "cas", "action_cache": "ac"}}})
    return config


def credentials(ca, client=None):
    read = lambda p: open(p, "rb").read()  # noqa: E731
    if client:
        return grpc.ssl_channel_credentials(read(ca.cert), read(client[1]), read(client[0]))
    return grpc.ssl_channel_credentials(read(ca.cert))


def capabilities(channel):
    return re_grpc.CapabilitiesStub(channel).GetCapabilities(re_pb2.GetCapabilitiesRequest(), timeout=10)


def s_client(port, *args):
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                       input=b"", capture_output=True, timeout=20)
    return (p.stdout + p.stderr).decode(errors="replace")


def test_tls_listener_beside_a_plaintext_one(apus_factory, pki):
    ca, _, _ = pki
    apus = apus_factory(tls_config(pki, plaintext_too=True))
    with grpc.secure_channel(f"localhost:{apus.port}", credentials(ca)) as ch:
        assert capabilities(ch).cache_capabilities.max_batch_total_size_bytes > 0
        blob = os.urandom(5000)
        resp = re_grpc.ContentAddressableStorageStub(ch).BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
            requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob)]), timeout=10)
        assert resp.responses[0].status.code == 0
    # The plaintext listener serves the same stores.
    import re as regex
    ports = [int(m) for m in regex.findall(r"127\.0\.0\.1:(\d+) instances", apus.read_log())]
    plain = [p for p in ports if p != apus.port]
    assert plain, apus.read_log()
    with grpc.insecure_channel(f"127.0.0.1:{plain[0]}") as ch:
        missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(blob_digests=[digest(blob)]), timeout=10)
        assert list(missing.missing_blob_digests) == []
    # A plaintext client on the TLS port gets nowhere.
    with grpc.insecure_channel(f"127.0.0.1:{apus.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            capabilities(ch)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_accepts_a_good_certificate_and_refuses_others(apus_factory, pki, tmp_path):
    ca, _, client = pki
    stranger = CertificateAuthority(tmp_path / "other", name="Someone Else")
    untrusted = stranger.issue("untrusted", "ci", client=True)
    expired = ca.issue("expired", "ci", client=True, expired=True)
    apus = apus_factory(tls_config(pki, client_auth="require"))
    with grpc.secure_channel(f"localhost:{apus.port}", credentials(ca, client)) as ch:
        assert capabilities(ch).cache_capabilities.max_batch_total_size_bytes > 0
    for name, cert in [("no certificate", None), ("untrusted", untrusted), ("expired", expired)]:
        with grpc.secure_channel(f"localhost:{apus.port}", credentials(ca, cert)) as ch:
            with pytest.raises(grpc.RpcError) as e:
                capabilities(ch)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, name
    deadline = time.time() + 10
    while apus.read_log().count("TLS handshake failed") < 3:
        assert time.time() < deadline, apus.read_log()
        time.sleep(0.1)
    assert_no_key_material(apus.read_log(), [pki[1][1], client[1], untrusted[1], expired[1]])


def assert_no_key_material(log, key_files):
    """No private key, nor any line of one, is in the log."""
    assert "PRIVATE KEY" not in log
    for path in key_files:
        for line in open(path).read().splitlines():
            if not line.startswith("-----"):
                assert line not in log, f"a line of {path} is in the log"


def test_a_client_without_alpn_h2_is_refused(apus_factory, pki):
    ca, _, _ = pki
    apus = apus_factory(tls_config(pki))
    out = s_client(apus.port, "-alpn", "http/1.1", "-CAfile", str(ca.cert))
    assert "Verify return code: 0 (ok)" in out, out
    assert "No ALPN negotiated" in out, out
    deadline = time.time() + 5
    while "did not offer ALPN h2" not in apus.read_log():
        assert time.time() < deadline, apus.read_log()
        time.sleep(0.1)
    # Offering h2 gets it.
    assert "ALPN protocol: h2" in s_client(apus.port, "-alpn", "h2", "-CAfile", str(ca.cert))


def test_a_rotated_certificate_reaches_new_connections_and_open_ones_keep_working(apus_factory, pki, tmp_path):
    ca, server, _ = pki
    live = (tmp_path / "live.pem", tmp_path / "live.key")
    shutil.copy(server[0], live[0])
    shutil.copy(server[1], live[1])
    config = cache_config({"memory": {}})
    config["servers"][0]["tls"] = tls_block(live)
    apus = apus_factory(config)
    assert "CN = localhost" in s_client(apus.port, "-CAfile", str(ca.cert))
    with grpc.secure_channel(f"localhost:{apus.port}", credentials(ca)) as open_channel:
        capabilities(open_channel)
        rotated = ca.issue("rotated", "rotated.example", dns=["localhost"], ips=["127.0.0.1"])
        # As certbot and cert-manager do: new files renamed into place.
        for new, path in zip(rotated, live):
            shutil.copy(new, str(path) + ".tmp")
            os.rename(str(path) + ".tmp", path)
        deadline = time.time() + 10
        while "CN = rotated.example" not in s_client(apus.port, "-CAfile", str(ca.cert)):
            assert time.time() < deadline, apus.read_log()
            time.sleep(0.5)
        assert "TLS certificate loaded again" in apus.read_log()
        capabilities(open_channel)  # the open connection keeps its session
        # SIGHUP reloads too (here: the same files, so just no harm done).
        os.kill(apus.proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        capabilities(open_channel)
        with grpc.secure_channel(f"localhost:{apus.port}", credentials(ca)) as ch:
            capabilities(ch)


def test_workers_and_a_grpc_store_dial_grpcs(apus_factory, pki, tmp_path):
    ca, server, client = pki
    # Cache, scheduler and a worker in one process; the worker dials its own TLS listener
    # with mTLS, as a split deployment's workers would.
    config = exec_config(tmp_path, workers=1)
    config["servers"][0]["tls"] = tls_block(server, ca, "require")
    for w in config["workers"]:
        w["scheduler"] = w["cas"] = "grpcs://localhost:PORT"
        w["tls"] = {"ca": str(ca.cert), "certificate": str(client[0]), "private_key": str(client[1])}
    apus = apus_factory(config).wait_for_workers(1)
    with grpc.secure_channel(f"localhost:{apus.port}", credentials(ca, client)) as ch:
        action = Action(ch, ["/bin/sh", "-c", "echo over-tls > out.txt"], outputs=["out.txt"])
        _, response = action.execute()
        assert response.status.code == 0 and response.result.exit_code == 0, response

    # Another apus whose CAS is a grpc store on the first one, over grpcs with mTLS.
    proxy_dir = tmp_path / "proxy"
    proxy_dir.mkdir()
    proxy = ApusProcess(cache_config({"grpc": {
        "url": f"grpcs://localhost:{apus.port}",
        "tls": {"ca": str(ca.cert), "certificate": str(client[0]), "private_key": str(client[1])}}}),
        proxy_dir).start()
    try:
        blob = os.urandom(3000)
        with grpc.insecure_channel(proxy.address) as ch:
            resp = re_grpc.ContentAddressableStorageStub(ch).BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
                requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob)]), timeout=10)
            assert resp.responses[0].status.code == 0
        with grpc.secure_channel(f"localhost:{apus.port}", credentials(ca, client)) as ch:
            missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
                re_pb2.FindMissingBlobsRequest(blob_digests=[digest(blob)]), timeout=10)
            assert list(missing.missing_blob_digests) == []
    finally:
        proxy.stop()


@pytest.mark.usefixtures("require_bazel")
@pytest.mark.timeout(1800)
def test_bazel_over_grpcs_and_mtls(apus_factory, pki, tmp_path):
    ca, server, client = pki
    bazel = Bazel(tmp_path)
    try:
        apus = apus_factory(tls_config(pki, client_auth="optional"))
        tls = [f"--tls_certificate={ca.cert}"]
        mtls = tls + [f"--tls_client_certificate={client[0]}", f"--tls_client_key={client[1]}"]
        for flags in (tls, mtls):
            code, out = bazel.run("test", "//...", f"--remote_cache=grpcs://localhost:{apus.port}",
                                  "--noremote_local_fallback", "--remote_timeout=60", *flags)
            assert code == 0, out[-4000:]
            bazel.clean()
        code, out = bazel.run("test", "//...", f"--remote_cache=grpcs://localhost:{apus.port}",
                              "--noremote_local_fallback", "--remote_timeout=60", *mtls)
        assert code == 0, out[-4000:]
        assert_all_remote_hits(summary(out))
    finally:
        bazel.shutdown()


@pytest.mark.usefixtures("require_bazel")
@pytest.mark.timeout(1800)
def test_bazel_remote_execution_split_deployment_over_mtls(apus_factory, pki, tmp_path):
    """Scheduler + cache in one process, two worker processes: Bazel → server, workers →
    scheduler and CAS, all over TLS with client certificates."""
    ca, server, client = pki
    worker_cert = ca.issue("worker", "worker", client=True)
    config = exec_config(tmp_path, workers=0)
    config["servers"][0]["tls"] = tls_block(server, ca, "require")
    apus = apus_factory(config)
    url = f"grpcs://localhost:{apus.port}"
    workers = start_workers(tmp_path, url, {"tls": {
        "ca": str(ca.cert), "certificate": str(worker_cert[0]), "private_key": str(worker_cert[1])}})
    build_twice(tmp_path, [
        f"--remote_executor={url}", "--noremote_local_fallback", "--remote_timeout=120",
        f"--tls_certificate={ca.cert}", f"--tls_client_certificate={client[0]}", f"--tls_client_key={client[1]}"],
        first=assert_all_remote, workers=workers)


def test_s3_store_with_a_private_ca(apus_factory, pki, tmp_path):
    """An https S3 endpoint whose certificate comes from a private CA: trusted through
    `ca_file`, refused without it."""
    ca, server, _ = pki
    moto = MotoServer(tmp_path, tls=server)
    moto.ca = ca.cert
    moto.start()
    try:
        moto.make_bucket("private")
        blob = os.urandom(4000)
        request = re_pb2.BatchUpdateBlobsRequest(
            requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob)])
        for trusted in (True, False):
            spec = s3_spec(moto, "private", "cas/" if trusted else "untrusted/", max_attempts=1,
                           circuit_breaker={"failure_threshold": 100})
            if trusted:
                spec["s3"]["ca_file"] = str(ca.cert)
            d = tmp_path / ("trusted" if trusted else "untrusted")
            d.mkdir()
            apus = ApusProcess(cache_config(spec), d).start()
            try:
                with grpc.insecure_channel(apus.address) as ch:
                    resp = re_grpc.ContentAddressableStorageStub(ch).BatchUpdateBlobs(request, timeout=30)
                code = resp.responses[0].status.code
                if trusted:
                    assert code == 0, resp
                    moto.client().head_object(Bucket="private", Key=f"cas/{digest(blob).hash}-{len(blob)}")
                else:
                    assert code == grpc.StatusCode.UNAVAILABLE.value[0], resp
            finally:
                apus.stop()
    finally:
        moto.stop()
