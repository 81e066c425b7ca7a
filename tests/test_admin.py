"""The admin listener: metrics that count what clients did, the per-call log with Bazel's
RequestMetadata, HTTPS with client certificates, bearer tokens and the admin permission."""
import json
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import grpc

from conftest import APUS, cache_config, free_port
from reapi import bs_grpc, bs_pb2, digest, re_pb2
from test_auth import new_token
from tlscerts import CertificateAuthority

AC = "/build.bazel.remote.execution.v2.ActionCache/"


def fetch(url, token=None, method="GET", context=None):
    """(status, body bytes); HTTP errors are answers too."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sample(text, name, **labels):
    """The value of one series in Prometheus text, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{{{re.escape(want)}}} (\S+)$", text, re.M) if labels else \
        re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_metrics_count_calls_and_lookups(apus_factory):
    admin = free_port()
    config = cache_config({"memory": {}})
    config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    config["global"]["log_level"] = "debug"
    apus = apus_factory(config)
    metadata = re_pb2.RequestMetadata(
        tool_details=re_pb2.ToolDetails(tool_name="bazel", tool_version="4.2.3"),
        tool_invocation_id="inv-1234", action_mnemonic="CppCompile", target_id="//pkg:lib")
    with grpc.insecure_channel(apus.address) as ch:
        get = ch.unary_unary(AC + "GetActionResult")
        for i in range(7):
            request = re_pb2.GetActionResultRequest(action_digest=digest(b"action %d" % i))
            try:
                get(request.SerializeToString(),
                    metadata=[("build.bazel.remote.execution.v2.requestmetadata-bin", metadata.SerializeToString())])
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
        result = re_pb2.ActionResult(exit_code=0)
        ch.unary_unary(AC + "UpdateActionResult")(re_pb2.UpdateActionResultRequest(
            action_digest=digest(b"action 0"), action_result=result).SerializeToString())
        for _ in range(3):
            get(re_pb2.GetActionResultRequest(action_digest=digest(b"action 0")).SerializeToString())

    status, body = fetch(f"http://127.0.0.1:{admin}/metrics")
    assert status == 200
    text = body.decode()
    method = "ActionCache/GetActionResult"
    assert sample(text, "apus_grpc_requests_total", method=method, code="NOT_FOUND") == 7
    assert sample(text, "apus_grpc_requests_total", method=method, code="OK") == 3
    assert sample(text, "apus_grpc_request_duration_seconds_count", method=method) == 10
    assert sample(text, "apus_grpc_in_flight_requests", method=method) == 0
    assert sample(text, "apus_grpc_received_bytes_total", method=method) > 0
    assert sample(text, "apus_action_cache_lookups_total", instance_name="", result="miss") == 7
    assert sample(text, "apus_action_cache_lookups_total", instance_name="", result="hit") == 3
    assert sample(text, "apus_build_info", version=re.search(r'version="([^"]+)"', text).group(1)) == 1
    assert sample(text, "apus_process_resident_memory_bytes") > 1 << 20
    assert "# HELP apus_grpc_requests_total " in text

    status, body = fetch(f"http://127.0.0.1:{admin}/status")
    feed = json.loads(body)
    assert feed["action_cache"][""] == {"hits": 3, "misses": 7}
    assert feed["grpc"]["requests"] >= 11 and feed["grpc"]["errors"] >= 7

    # Each finished call is one debug line with its method, status, sizes and RequestMetadata.
    lines = [line for line in apus.read_log().splitlines() if "call finished" in line and method in line]
    assert len(lines) == 10
    assert all("tool_invocation_id=inv-1234" in line and "action_mnemonic=CppCompile" in line
               and "target_id=//pkg:lib" in line for line in lines[:7])
    assert sum("code=NOT_FOUND" in line for line in lines) == 7


def test_https_client_certificates_and_tokens(apus_factory, tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    cert, key = ca.issue("admin-server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    client_cert, client_key = ca.issue("ops", "ops", client=True)
    root_token, root_line = new_token("root")
    dev_token, dev_line = new_token("dev")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{root_line}\n{dev_line}\n")
    admin = free_port()
    config = cache_config({"memory": {}})
    config["auth"] = {"tokens": str(tokens), "instances": {"*": {"anonymous": ["read", "write"]}},
                      "admin": ["root", "ops"]}
    config["admin"] = {"listen": f"127.0.0.1:{admin}",
                       "tls": {"certificate": str(cert), "private_key": str(key), "client_ca": str(ca.cert),
                               "client_auth": "optional"}}
    apus_factory(config)
    base = f"https://127.0.0.1:{admin}"
    anonymous = ssl.create_default_context(cafile=str(ca.cert))
    assert fetch(base + "/healthz", context=anonymous)[0] == 200
    assert fetch(base + "/readyz", context=anonymous)[0] == 200
    status, body = fetch(base + "/status", context=anonymous)
    assert status == 401 and "error" in json.loads(body)
    status, body = fetch(base + "/metrics", token=dev_token, context=anonymous)
    assert status == 403 and "admin" in json.loads(body)["error"]
    assert fetch(base + "/metrics", token=root_token, context=anonymous)[0] == 200
    assert fetch(base + "/drain", token=dev_token, method="POST", context=anonymous)[0] == 403
    # The client certificate's common name is a principal like a token's.
    with_cert = ssl.create_default_context(cafile=str(ca.cert))
    with_cert.load_cert_chain(str(client_cert), str(client_key))
    assert fetch(base + "/status", context=with_cert)[0] == 200
    status, body = fetch(base + "/drain", method="POST", context=with_cert)
    assert status == 202 and json.loads(body)["draining"] is True
    status, body = fetch(base + "/readyz", context=anonymous)
    assert status == 503 and json.loads(body)["draining"] is True
    # Plain HTTP to the HTTPS port gets no answer.
    assert fetch_plain_fails(f"http://127.0.0.1:{admin}/healthz")


def fetch_plain_fails(url):
    try:
        urllib.request.urlopen(url, timeout=5)
    except (urllib.error.URLError, ConnectionError, OSError):
        return True
    return False


def test_slow_call_warning_reaches_the_log_and_status(apus_factory):
    admin = free_port()
    config = cache_config({"memory": {}})
    config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    config["global"]["slow_request_seconds"] = 1
    apus = apus_factory(config)
    data = b"x" * (128 << 10)
    d = digest(data)
    name = f"uploads/1234/blobs/{d.hash}/{d.size_bytes}"

    def dawdling():
        yield bs_pb2.WriteRequest(resource_name=name, write_offset=0, data=data[:65536])
        time.sleep(1.5)
        yield bs_pb2.WriteRequest(write_offset=65536, data=data[65536:], finish_write=True)

    with grpc.insecure_channel(apus.address) as ch:
        assert bs_grpc.ByteStreamStub(ch).Write(dawdling()).committed_size == len(data)
    lines = [line for line in apus.read_log().splitlines() if "slow call" in line]
    assert len(lines) == 1 and "method=ByteStream/Write" in lines[0] and "code=OK" in lines[0]
    feed = json.loads(fetch(f"http://127.0.0.1:{admin}/status")[1])
    slow = [e for e in feed["recent_errors"] if e["message"] == "slow call"]
    assert len(slow) == 1 and slow[0]["level"] == "warning" and slow[0]["metadata"]["method"] == "ByteStream/Write"
    assert float(slow[0]["metadata"]["duration_ms"]) >= 1400


def test_systemd_notify_and_probe(apus_factory, tmp_path, monkeypatch):
    """With NOTIFY_SOCKET set (systemd Type=notify), apus sends READY=1 once its listener is
    bound and its worker registered, and STOPPING=1 when SIGTERM begins the drain; `apus
    probe` exits 0 on a 2xx answer and 1 otherwise, for health checks without curl."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    admin = free_port()
    config = {
        "stores": {"cas": {"memory": {}}, "ac": {"memory": {}}},
        "schedulers": {"main": {}},
        "servers": [{"listen": "127.0.0.1:PORT", "worker_api": "main",
                     "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
        "workers": [{"scheduler": "grpc://127.0.0.1:PORT", "cas": "grpc://127.0.0.1:PORT",
                     "work_directory": str(tmp_path / "work"), "cache_directory": str(tmp_path / "cache")}],
        "admin": {"listen": f"127.0.0.1:{admin}"},
        "global": {"shutdown_grace_seconds": 2},
    }
    apus = apus_factory(config)
    assert sock.recv(4096) == b"READY=1"
    assert "registered with scheduler" in apus.read_log()

    probe = [str(APUS), "probe"]
    ok = subprocess.run(probe + [f"http://127.0.0.1:{admin}/readyz"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ready"] is True
    missing = subprocess.run(probe + [f"http://127.0.0.1:{admin}/nope"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    closed = subprocess.run(probe + [f"http://127.0.0.1:{free_port()}/readyz", "--timeout", "2"],
                            capture_output=True, text=True, timeout=30)
    assert closed.returncode == 1 and "refused" in closed.stderr.lower()

    apus.proc.send_signal(signal.SIGTERM)
    assert sock.recv(4096) == b"STOPPING=1"
    assert apus.proc.wait(30) == 0
    sock.close()
