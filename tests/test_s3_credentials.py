"""The s3 store gets its keys itself: the AWS credential chain (README "s3 credentials").

apus runs with an `s3` store and no keys in its config against a moto server. There is no
EC2 instance metadata service or ECS agent on these machines: small loopback stand-ins
implement the documented endpoints (IMDSv2: `PUT /latest/api/token`, then
`/latest/meta-data/iam/security-credentials/[ROLE]` with the token; container credentials:
GET with an `Authorization` token) and apus is pointed at them with the SDKs' variables
(`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_CONTAINER_CREDENTIALS_FULL_URI`). A recording
proxy in front of moto notes which access key signed each S3 request (moto does not check
signatures).
"""
import http.client
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from conftest import cache_config, free_port
from reapi import digest, download, re_grpc, re_pb2, upload
from s3server import moto  # noqa: F401

BUCKET = "creds"
ROLE = "apus-scheduler"
CHAIN_VARIABLES = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                   "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                   "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_DISABLED"]


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Server:
    """A ThreadingHTTPServer on a loopback port, stoppable and restartable on that port."""

    def __init__(self, port=0):
        self.port = port
        self.httpd = None

    def handler(self):
        raise NotImplementedError

    def start(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


class Issuer:
    """Hands out numbered keys valid for `lifetime` seconds, and remembers each one's expiry."""

    def __init__(self, prefix, lifetime):
        self.prefix, self.lifetime = prefix, lifetime
        self.issued = {}  # access key id -> expiry (epoch seconds)
        self.lock = threading.Lock()

    def document(self):
        with self.lock:
            key = f"{self.prefix}{len(self.issued) + 1:04d}"
            # Whole seconds: the ISO form has no fraction, and apus must not outlive it.
            expires = int(time.time()) + self.lifetime
            self.issued[key] = expires
        return {"Code": "Success", "LastUpdated": iso(time.time()), "Type": "AWS-HMAC", "AccessKeyId": key,
                "SecretAccessKey": secrets.token_hex(20), "Token": "token-for-" + key, "Expiration": iso(expires)}


class IMDS(Server):
    """The EC2 instance metadata service's credential endpoints, IMDSv2 only: a GET without a
    valid token is 401, a PUT without the TTL header is 400 (as AWS documents)."""

    def __init__(self, lifetime=3600, port=0):
        super().__init__(port)
        self.issuer = Issuer("ASIAIMDS", lifetime)
        self.tokens = set()
        self.requests = []  # (method, path, status)

    def handler(self):
        imds = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, body=b"", kind="text/plain"):
                imds.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                if self.path != "/latest/api/token":
                    return self.answer(404)
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return self.answer(400)
                token = secrets.token_urlsafe(24)
                imds.tokens.add(token)
                self.answer(200, token.encode())

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    return self.answer(401)
                base = "/latest/meta-data/iam/security-credentials/"
                if self.path == base:
                    return self.answer(200, ROLE.encode())
                if self.path == base + ROLE:
                    return self.answer(200, json.dumps(imds.issuer.document()).encode(), "application/json")
                self.answer(404)

        return Handler


class ContainerEndpoint(Server):
    """The ECS/EKS container credentials endpoint: GET /creds with the agent's token."""

    def __init__(self, token, lifetime=3600):
        super().__init__()
        self.token = token
        self.issuer = Issuer("ASIACONT", lifetime)
        self.requests = []  # (path, authorization header, status)

    def handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                auth = self.headers.get("Authorization")
                if self.path != "/creds":
                    status, body = 404, b""
                elif auth != endpoint.token:
                    status, body = 401, b""
                else:
                    doc = endpoint.issuer.document()
                    del doc["Code"], doc["Type"], doc["LastUpdated"]  # the container form
                    status, body = 200, json.dumps(doc).encode()
                endpoint.requests.append((self.path, auth, status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class RecordingProxy(Server):
    """Forwards S3 requests to moto and records, per request, when it came and which access
    key and session token signed it."""

    def __init__(self, upstream_port):
        super().__init__()
        self.upstream_port = upstream_port
        self.signed = []  # (time, method, access key id, session token)
        self.lock = threading.Lock()

    def handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                auth = self.headers.get("Authorization", "")
                key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else None
                with proxy.lock:
                    proxy.signed.append((time.time(), self.command, key, self.headers.get("x-amz-security-token")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                r = upstream.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                length = r.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        return Handler

    def keys(self):
        with self.lock:
            return [k for _, _, k, _ in self.signed]


def s3_store():
    """An s3 store with no keys in its config: `credentials` defaults to auto."""
    return {"s3": {"endpoint": "PROXY", "bucket": BUCKET, "key_prefix": "cas/", "path_style": True,
                   "max_attempts": 1, "connect_timeout_seconds": 1, "first_byte_timeout_seconds": 5,
                   "circuit_breaker": {"failure_threshold": 3, "open_seconds": 1}}}


@pytest.fixture
def chain_env(monkeypatch):
    """No AWS credentials in the environment apus inherits, and no real metadata service."""
    for name in CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing there
    return monkeypatch


@pytest.fixture
def proxy(moto):  # noqa: F811
    moto.make_bucket(BUCKET)
    p = RecordingProxy(moto.port).start()
    yield p
    p.stop()


def start_apus(apus_factory, proxy, store=None, admin=None):
    config = cache_config(json.loads(json.dumps(store or s3_store()).replace("PROXY", proxy.url)))
    if admin:
        config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    return apus_factory(config)


def missing(ch, *ds):
    return list(re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
        re_pb2.FindMissingBlobsRequest(blob_digests=list(ds)), timeout=30).missing_blob_digests)


def readyz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_instance_role_keys_rotate_and_the_new_ones_are_used(apus_factory, proxy, chain_env):
    # Keys valid for 8 s: apus renews them halfway (README), so within ~20 s of traffic
    # several sets are used, and none after its expiry.
    imds = IMDS(lifetime=8).start()
    try:
        chain_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        apus = start_apus(apus_factory, proxy)
        blobs = []
        with grpc.insecure_channel(apus.address) as ch:
            deadline = time.time() + 22
            while time.time() < deadline:
                blob = os.urandom(2000)
                upload(ch, blob)
                blobs.append(blob)
                assert missing(ch, digest(blob)) == []
                assert download(ch, digest(blob)) == blob
                time.sleep(0.5)
            assert missing(ch, *(digest(b) for b in blobs)) == []
        used = [k for k in proxy.keys()]
        print(f"{len(proxy.signed)} S3 requests, {len(imds.issuer.issued)} key sets issued, "
              f"{len(set(used))} used: {sorted(set(used))}")
        assert None not in used, "an S3 request went unsigned"
        assert len(set(used)) >= 3, f"keys did not rotate: {sorted(set(used))}"
        assert set(used) <= set(imds.issuer.issued)
        # Every request was signed with unexpired keys, and the session token that goes with them.
        for at, method, key, token in proxy.signed:
            assert at < imds.issuer.issued[key], f"{method} at {at:.1f} signed with {key}, expired at {imds.issuer.issued[key]}"
            assert token == "token-for-" + key
        # Once a newer set is in use, the older ones are not used again.
        order = [k for i, k in enumerate(used) if i == 0 or used[i - 1] != k]
        assert order == sorted(set(used)), order
        # IMDSv2: every credentials GET carried a token (none was refused), each fetch took a
        # token first, and renewals are not made per request.
        gets = [r for r in imds.requests if r[0] == "GET"]
        assert gets and all(status == 200 for _, _, status in gets), imds.requests
        assert [m for m, _, _ in imds.requests[:3]] == ["PUT", "GET", "GET"]
        assert len(imds.issuer.issued) <= len(set(used)) + 2
        assert len(proxy.signed) > 3 * len(imds.issuer.issued)
        log = apus.read_log()
        assert f"s3 credentials from instance role {ROLE} at {imds.url}" in log
        for key in imds.issuer.issued:  # nothing secret, not even the access key id, is logged
            assert "token-for-" + key not in log
    finally:
        imds.stop()


def test_imds_requires_a_token(chain_env):
    """The stand-in is IMDSv2 as AWS documents it (what the test above relies on)."""
    imds = IMDS().start()
    try:
        base = imds.url + "/latest/meta-data/iam/security-credentials/"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base, timeout=5)
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(imds.url + "/latest/api/token", method="PUT"), timeout=5)
        assert e.value.code == 400
        token = urllib.request.urlopen(urllib.request.Request(
            imds.url + "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}),
            timeout=5).read().decode()
        role = urllib.request.urlopen(urllib.request.Request(
            base, headers={"X-aws-ec2-metadata-token": token}), timeout=5).read().decode()
        assert role == ROLE
    finally:
        imds.stop()


def test_metadata_down_is_unavailable_with_the_sources_tried_then_recovers(apus_factory, proxy, chain_env):
    imds_port = free_port()
    chain_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{imds_port}")
    admin = free_port()
    apus = start_apus(apus_factory, proxy, admin=admin)
    blob = os.urandom(1000)
    with grpc.insecure_channel(apus.address) as ch:
        # The store's start-up check found no keys and opened the breaker; the first call may
        # come before that or after: either way UNAVAILABLE, and the log or the message says why.
        with pytest.raises(grpc.RpcError) as e:
            missing(ch, digest(blob))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        print("while down:", e.value.details())
        deadline = time.time() + 15
        while "no AWS credentials" not in apus.read_log() and time.time() < deadline:
            time.sleep(0.1)
        log = apus.read_log()
        reason = next(line for line in log.splitlines() if "no AWS credentials" in line)
        print("logged:", reason)
        assert "credentials: auto" in reason
        assert "environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set" in reason
        assert "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set" in reason
        assert f"instance metadata: PUT http://127.0.0.1:{imds_port}/latest/api/token" in reason
        assert proxy.signed == [], "a request reached S3 without keys"

        # /readyz says the bucket is unusable, and why.
        deadline = time.time() + 15
        status, body = readyz(admin)
        while status != 503 and time.time() < deadline:
            time.sleep(0.2)
            status, body = readyz(admin)
        assert status == 503, body
        cas = {f["component"]: f["reason"] for f in body["not_ready"]}["store cas"]
        print("readyz:", cas)
        assert "no AWS credentials" in cas or "circuit open" in cas, cas

        # Every call meanwhile is UNAVAILABLE, and fast (the breaker and the one-second hold).
        for _ in range(5):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                missing(ch, digest(blob))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 5
            if "no AWS credentials" in e.value.details():
                assert f"PUT http://127.0.0.1:{imds_port}/latest/api/token" in e.value.details()

        # The metadata service comes up: the breaker's prober gets keys, S3 is used again.
        imds = IMDS(port=imds_port).start()
        try:
            deadline = time.time() + 20
            while True:
                try:
                    upload(ch, blob)
                    break
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
                    assert time.time() < deadline, f"no recovery: {err.details()}"
                    time.sleep(0.3)
            assert download(ch, digest(blob)) == blob
            assert set(proxy.keys()) <= set(imds.issuer.issued) and proxy.keys()
            deadline = time.time() + 15
            while readyz(admin)[0] != 200:
                assert time.time() < deadline, readyz(admin)
                time.sleep(0.2)
        finally:
            imds.stop()


def test_container_credentials_come_before_the_instance_role(apus_factory, proxy, chain_env, tmp_path):
    agent_token = "agent-" + secrets.token_hex(8)
    token_file = tmp_path / "token"
    token_file.write_text(agent_token + "\n")
    container = ContainerEndpoint(agent_token, lifetime=3600).start()
    imds = IMDS().start()
    try:
        chain_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", container.url + "/creds")
        chain_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
        chain_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        apus = start_apus(apus_factory, proxy)
        blob = os.urandom(3000)
        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, blob)
            assert download(ch, digest(blob)) == blob
        assert set(proxy.keys()) == {"ASIACONT0001"}, proxy.keys()
        assert container.requests == [("/creds", agent_token, 200)], "fetched once, with the file's token"
        assert imds.requests == [], "the instance role was asked though the container endpoint answered"
        assert f"s3 credentials from {container.url}/creds" in apus.read_log()
    finally:
        container.stop()
        imds.stop()


def test_environment_keys_come_first(apus_factory, proxy, chain_env):
    imds = IMDS().start()
    try:
        chain_env.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
        chain_env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
        chain_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        apus = start_apus(apus_factory, proxy)
        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, b"from the environment")
        assert set(proxy.keys()) == {"AKIAENVIRONMENT"}
        assert imds.requests == []
    finally:
        imds.stop()


def test_credentials_instance_ignores_the_environment(apus_factory, proxy, chain_env):
    imds = IMDS().start()
    try:
        chain_env.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
        chain_env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
        chain_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        store = s3_store()
        store["s3"]["credentials"] = "instance"
        apus = start_apus(apus_factory, proxy, store)
        with grpc.insecure_channel(apus.address) as ch:
            upload(ch, b"from the instance role")
        assert set(proxy.keys()) == {"ASIAIMDS0001"}
    finally:
        imds.stop()


def test_a_silent_metadata_service_costs_seconds_not_minutes(apus_factory, proxy, chain_env):
    """A metadata address that accepts connections and never answers (a black-holed
    169.254.169.254 off EC2 behaves alike, or times out connecting after 1 s): the call fails
    UNAVAILABLE after the 2 s deadline, and the next ones at once while the failure is held
    and the breaker is open."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # never accepted: the kernel completes connections, nothing answers
    try:
        chain_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        store = s3_store()
        store["s3"]["credentials"] = "instance"
        apus = start_apus(apus_factory, proxy, store)
        took = []
        with grpc.insecure_channel(apus.address) as ch:
            for _ in range(4):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as e:
                    missing(ch, digest(b"x"))
                took.append(time.monotonic() - started)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        print("calls took", [round(t, 2) for t in took], "s")
        assert took[0] < 6 and max(took[1:]) < 3, took
        deadline = time.time() + 10
        while "no answer within 2.0 s" not in apus.read_log() and time.time() < deadline:
            time.sleep(0.1)
        assert "instance metadata: PUT http" in apus.read_log()
        assert "no answer within 2.0 s" in apus.read_log()
        assert proxy.signed == []
    finally:
        silent.close()
