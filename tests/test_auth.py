"""`auth`: bearer tokens from a token file, per-instance permissions, worker credentials."""
import subprocess
import time

import grpc
import pytest

from conftest import APUS, ApusProcess, cache_config
from execution import exec_config, worker_config
from reapi import digest, re_grpc, re_pb2, upload

BLOB = b"auth test blob"


def new_token(principal):
    """`apus token --principal NAME`: (token, line for the token file)."""
    out = subprocess.run([str(APUS), "token", "--principal", principal], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.strip().splitlines())
    token, line = fields["token"].strip(), fields["line"].strip()
    assert line.endswith(" " + principal) and token not in line
    return token, line


@pytest.fixture
def tokens(tmp_path):
    """Tokens for ci (everything), uploader (read+write), reader (read), and the token file."""
    made = {name: new_token(name) for name in ("ci", "uploader", "reader", "later")}
    path = tmp_path / "tokens"
    path.write_text("# apus tokens\n" + "\n".join(made[n][1] for n in ("ci", "uploader", "reader")) + "\n")
    return {name: t for name, (t, _) in made.items()}, path, made


def auth_config(token_path, **extra):
    config = cache_config({"memory": {"max_bytes": 1 << 30}})
    config["auth"] = dict({
        "tokens": str(token_path),
        "instances": {"*": {"ci": ["read", "write", "write_ac", "execute"],
                            "uploader": ["read", "write"], "reader": ["read"]}},
    }, **extra)
    return config


def creds(token):
    return [("authorization", f"Bearer {token}")]


def code_of(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details()


def find_missing(ch, token, blob=BLOB):
    cas = re_grpc.ContentAddressableStorageStub(ch)
    r = cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=[digest(blob)]), metadata=creds(token))
    return list(r.missing_blob_digests)


def update_blobs(ch, token, blob=BLOB):
    cas = re_grpc.ContentAddressableStorageStub(ch)
    return cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
        requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob)]), metadata=creds(token))


def update_ac(ch, token, instance=""):
    ac = re_grpc.ActionCacheStub(ch)
    return ac.UpdateActionResult(re_pb2.UpdateActionResultRequest(
        instance_name=instance, action_digest=digest(b"action"), action_result=re_pb2.ActionResult(exit_code=0)),
        metadata=creds(token))


def get_ac(ch, token):
    return re_grpc.ActionCacheStub(ch).GetActionResult(
        re_pb2.GetActionResultRequest(action_digest=digest(b"action")), metadata=creds(token))


def test_missing_or_invalid_credentials_are_unauthenticated(apus_factory, tokens):
    t, path, _ = tokens
    apus = apus_factory(auth_config(path))
    with grpc.insecure_channel(apus.address) as ch:
        cas = re_grpc.ContentAddressableStorageStub(ch)
        code, details = code_of(lambda: cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "credentials required" in details
        code, details = code_of(lambda: find_missing(ch, "not-a-real-token"))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not-a-real-token" not in details
        code, _ = code_of(lambda: upload(ch, BLOB)[0])
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert find_missing(ch, t["reader"]) == [digest(BLOB)]
    log = apus.read_log()
    assert "not-a-real-token" not in log and not any(token in log for token in t.values())


def test_read_only_token_reads_but_stores_nothing(apus_factory, tokens):
    t, path, _ = tokens
    apus = apus_factory(auth_config(path))
    with grpc.insecure_channel(apus.address) as ch:
        caps = re_grpc.CapabilitiesStub(ch).GetCapabilities(re_pb2.GetCapabilitiesRequest(), metadata=creds(t["reader"]))
        assert caps.cache_capabilities.digest_functions
        assert find_missing(ch, t["reader"]) == [digest(BLOB)]
        code, details = code_of(lambda: update_blobs(ch, t["reader"]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == 'principal "reader" lacks "write" on instance ""'
        code, _ = code_of(lambda: upload(ch, BLOB, metadata=creds(t["reader"]))[0])
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, details = code_of(lambda: update_ac(ch, t["reader"]))
        assert code == grpc.StatusCode.PERMISSION_DENIED and '"write_ac"' in details
        # Nothing was stored by the refused calls.
        assert find_missing(ch, t["ci"]) == [digest(BLOB)]
        code, _ = code_of(lambda: get_ac(ch, t["ci"]))
        assert code == grpc.StatusCode.NOT_FOUND
        # Team instance: `*` grants apply there too.
        code, details = code_of(lambda: update_ac(ch, t["reader"], instance="team/a"))
        assert details == 'principal "reader" lacks "write_ac" on instance "team/a"'


def test_write_without_write_ac_uploads_but_cannot_update_the_action_cache(apus_factory, tokens):
    t, path, _ = tokens
    apus = apus_factory(auth_config(path))
    with grpc.insecure_channel(apus.address) as ch:
        assert update_blobs(ch, t["uploader"]).responses[0].status.code == 0
        other = b"uploaded by bytestream"
        response, d = upload(ch, other, metadata=creds(t["uploader"]))
        assert response.committed_size == len(other)
        assert find_missing(ch, t["reader"]) == [] and find_missing(ch, t["reader"], other) == []
        code, details = code_of(lambda: update_ac(ch, t["uploader"]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == 'principal "uploader" lacks "write_ac" on instance ""'
        update_ac(ch, t["ci"])
        assert get_ac(ch, t["reader"]).exit_code == 0


def test_anonymous_grants_and_instance_specific_entries(apus_factory, tokens):
    t, path, _ = tokens
    config = auth_config(path)
    config["auth"]["instances"]["*"]["anonymous"] = ["read"]
    config["auth"]["instances"]["team/a"] = {"reader": ["write"]}
    apus = apus_factory(config)
    with grpc.insecure_channel(apus.address) as ch:
        cas = re_grpc.ContentAddressableStorageStub(ch)
        assert cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=[digest(BLOB)])).missing_blob_digests
        code, details = code_of(lambda: cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
            requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest(BLOB), data=BLOB)])))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # reader may write on team/a only.
        upload(ch, BLOB, instance="team/a", metadata=creds(t["reader"]))
        code, _ = code_of(lambda: update_blobs(ch, t["reader"]))
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_action_cache_updates_false_wins_over_grants(apus_factory, tokens):
    t, path, _ = tokens
    config = auth_config(path)
    config["servers"][0]["instances"][""]["action_cache_updates"] = False
    apus = apus_factory(config)
    with grpc.insecure_channel(apus.address) as ch:
        code, details = code_of(lambda: update_ac(ch, t["ci"]))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "does not accept action cache updates" in details


def test_token_file_edits_take_effect_without_restart(apus_factory, tokens):
    t, path, made = tokens
    config = auth_config(path)
    config["auth"]["instances"]["*"]["later"] = ["read"]
    apus = apus_factory(config)
    with grpc.insecure_channel(apus.address) as ch:
        code, _ = code_of(lambda: find_missing(ch, t["later"]))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Add a token for "later", revoke "reader"'s.
        path.write_text(made["ci"][1] + "\n" + made["later"][1] + "\n")
        deadline = time.time() + 10
        while True:
            try:
                find_missing(ch, t["later"])
                break
            except grpc.RpcError:
                assert time.time() < deadline, "the edited token file was not reloaded"
                time.sleep(0.2)
        code, _ = code_of(lambda: find_missing(ch, t["reader"]))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # "later" may only read.
        code, _ = code_of(lambda: update_blobs(ch, t["later"]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "token file reloaded" in apus.read_log()


def test_unreadable_token_file_is_a_config_error(tmp_path):
    config = tmp_path / "apus.json"
    import json
    config.write_text(json.dumps(auth_config(tmp_path / "missing")).replace("PORT", "0"))
    r = subprocess.run([str(APUS), "check", str(config)], capture_output=True, text=True)
    assert r.returncode == 2 and "auth.tokens: cannot read the token file" in r.stderr


def test_check_warns_without_auth_on_a_public_listener(tmp_path, tokens):
    import json
    _, path, _ = tokens
    config = cache_config({"memory": {}})
    config["servers"][0]["listen"] = "0.0.0.0:0"
    file = tmp_path / "public.json"
    file.write_text(json.dumps(config))
    out = subprocess.run([str(APUS), "check", str(file)], check=True, capture_output=True, text=True).stdout
    assert "WARNING: 0.0.0.0:0 is not a loopback address and no auth block is configured" in out
    config = auth_config(path)
    config["servers"][0]["listen"] = "0.0.0.0:0"
    file.write_text(json.dumps(config))
    out = subprocess.run([str(APUS), "check", str(file)], check=True, capture_output=True, text=True).stdout
    assert "WARNING" not in out and "auth: tokens" in out


def test_workers_need_the_worker_permission(apus_factory, tmp_path, tokens):
    t, path, _ = tokens
    config = exec_config(tmp_path, workers=0)
    config["auth"] = {"tokens": str(path), "instances": {"*": {"ci": ["read", "write", "execute"]}},
                      "schedulers": {"main": {"uploader": ["worker"]}}}
    server = apus_factory(config)
    url = f"grpc://{server.address}"

    def worker(name, token):
        d = tmp_path / name
        d.mkdir()
        (d / "token").write_text(token + "\n")
        cfg = dict(worker_config(d, 0, url=url), token_file=str(d / "token"))
        return ApusProcess({"workers": [cfg]}, d)

    refused = worker("refused", t["reader"]).start(wait_for_port=False)
    try:
        deadline = time.time() + 20
        while "refused this worker's credentials" not in refused.read_log():
            assert time.time() < deadline and refused.proc.poll() is None, refused.read_log()
            time.sleep(0.1)
        assert 'lacks \\"worker\\" on scheduler \\"main\\"' in refused.read_log() or \
            'lacks "worker" on scheduler "main"' in refused.read_log()
        assert "registered with scheduler" not in refused.read_log()
        assert "worker refused" in server.read_log()
    finally:
        refused.stop()
    accepted = worker("accepted", t["uploader"]).start_worker()
    accepted.stop()
    logs = server.read_log() + refused.read_log() + accepted.read_log()
    assert not any(token in logs for token in t.values())


def b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(private_key, claims, kid="k1"):
    import json
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = private_key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(signature)}"


def test_jwt_bearer_tokens(apus_factory, tmp_path, tokens):
    import json
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    t, path, _ = tokens
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
           "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
           "e": b64url(numbers.e.to_bytes(3, "big"))}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    config = auth_config(path, jwt={"jwks": str(tmp_path / "jwks.json"), "audience": "apus"})
    config["auth"]["instances"]["*"]["alice"] = ["read", "write"]
    apus = apus_factory(config)
    now = int(time.time())
    good = make_jwt(key, {"sub": "alice", "aud": "apus", "exp": now + 600, "nbf": now - 10})
    refused = {
        "expired": make_jwt(key, {"sub": "alice", "aud": "apus", "exp": now - 60}),
        "wrong audience": make_jwt(key, {"sub": "alice", "aud": "other", "exp": now + 600}),
        "unknown kid": make_jwt(key, {"sub": "alice", "aud": "apus", "exp": now + 600}, kid="k2"),
        "wrong key": make_jwt(other, {"sub": "alice", "aud": "apus", "exp": now + 600}),
        "not yet valid": make_jwt(key, {"sub": "alice", "aud": "apus", "exp": now + 600, "nbf": now + 300}),
    }
    with grpc.insecure_channel(apus.address) as ch:
        assert update_blobs(ch, good).responses[0].status.code == 0
        assert find_missing(ch, t["reader"]) == []
        code, details = code_of(lambda: update_ac(ch, good))
        assert code == grpc.StatusCode.PERMISSION_DENIED and 'principal "alice" lacks "write_ac"' in details
        for why, token in refused.items():
            code, details = code_of(lambda: find_missing(ch, token))
            assert code == grpc.StatusCode.UNAUTHENTICATED, why
            assert details.startswith("the JWT is not valid") and token not in details, (why, details)
        # Opaque tokens still go to the token file.
        assert find_missing(ch, t["reader"]) == []
    log = apus.read_log()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    body = "".join(pem.splitlines()[1:-1])
    assert good not in log and not any(token in log for token in refused.values())
    assert body[:40] not in log and "PRIVATE KEY" not in log


def test_grpc_store_sends_its_token_file(apus_factory, tmp_path, tokens):
    t, path, _ = tokens
    upstream = apus_factory(auth_config(path))

    def proxy(name, token):
        d = tmp_path / name
        d.mkdir()
        (d / "token").write_text(token)
        url = f"grpc://{upstream.address}"
        config = {
            "stores": {"cas": {"grpc": {"url": url, "token_file": str(d / "token")}},
                       "ac": {"grpc": {"url": url, "role": "action_cache", "token_file": str(d / "token")}}},
            "servers": [{"listen": "127.0.0.1:PORT", "instances": {"": {"cas": "cas", "action_cache": "ac"}}}],
        }
        return ApusProcess(config, d).start()

    writer, reader = proxy("writer", t["ci"]), proxy("reader", t["reader"])
    try:
        with grpc.insecure_channel(writer.address) as ch:
            upload(ch, BLOB)
            update_ac(ch, "unused")  # the proxy has no auth; its store sends ci's token
        with grpc.insecure_channel(upstream.address) as ch:
            assert find_missing(ch, t["reader"]) == []
            assert get_ac(ch, t["reader"]).exit_code == 0
        with grpc.insecure_channel(reader.address) as ch:
            other = b"refused upstream"
            code, details = code_of(lambda: upload(ch, other)[0])
            assert code == grpc.StatusCode.PERMISSION_DENIED and '"reader" lacks "write"' in details
            assert get_ac(ch, "unused").exit_code == 0
        with grpc.insecure_channel(upstream.address) as ch:
            assert find_missing(ch, t["reader"], b"refused upstream") == [digest(b"refused upstream")]
    finally:
        writer.stop()
        reader.stop()
