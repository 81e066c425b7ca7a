"""Actions cannot use the worker's identity: with `run_as`, an action runs as another user in a
mount namespace where the worker's key, tokens and input cache are hidden; `block-network`
actions get a network namespace with only loopback."""
import os
import shutil
import tempfile

import grpc
import pytest

from execution import Action, exec_config, read_blob
from tlscerts import CertificateAuthority

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run_as and namespaces need the worker to run as root")


@pytest.fixture
def work_root():
    # The action's user must reach its working directory; pytest's tmp_path is under a 0700
    # directory.
    path = tempfile.mkdtemp(prefix="apus-isolation-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(channel, script, platform=None):
    action = Action(channel, ["/bin/bash", "-c", script], outputs=["out.txt"], platform=platform,
                    do_not_cache=True)
    _, response = action.execute()
    assert response.status.code == 0, response
    files = {f.path: f for f in response.result.output_files}
    return read_blob(channel, files["out.txt"].digest).decode()


def test_an_action_cannot_read_the_workers_secrets_nor_write_its_cache(apus_factory, tmp_path, work_root):
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    client = ca.issue("worker", "worker-1", client=True)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("s3cr3t-worker-token\n")
    config = exec_config(tmp_path, workers=1)
    config["servers"][0]["tls"] = {"certificate": str(server[0]), "private_key": str(server[1]),
                                   "client_ca": str(ca.cert), "client_auth": "require"}
    worker = config["workers"][0]
    worker.update({"scheduler": "grpcs://localhost:PORT", "cas": "grpcs://localhost:PORT",
                   "tls": {"ca": str(ca.cert), "certificate": str(client[0]), "private_key": str(client[1])},
                   "work_directory": f"{work_root}/work", "run_as": {"user": "nobody", "group": "nogroup"},
                   "hide_paths": [str(secrets)]})
    cache = worker["cache_directory"]
    apus = apus_factory(config).wait_for_workers(1)
    creds = grpc.ssl_channel_credentials(open(ca.cert, "rb").read(), open(client[1], "rb").read(),
                                         open(client[0], "rb").read())
    with grpc.secure_channel(f"localhost:{apus.port}", creds) as ch:
        out = run(ch, f"""
            id -un > out.txt
            cat {secrets}/token >> out.txt 2>/dev/null || echo "token: refused" >> out.txt
            cat {client[1]} >> out.txt 2>/dev/null || echo "key: refused" >> out.txt
            echo poison 2>/dev/null > {cache}/poison || echo "cache write: refused" >> out.txt
            ls -A {cache} 2>/dev/null | wc -l >> out.txt
        """)
    lines = out.split()
    assert lines[0] == "nobody", out
    assert "s3cr3t" not in out and "PRIVATE KEY" not in out, out
    assert "token: refused" in out and "key: refused" in out and "cache write: refused" in out, out
    assert not os.path.exists(f"{cache}/poison")
    # The worker itself still reads its key (it connected) and its cache (it fetched inputs).
    assert os.listdir(cache)


def test_block_network_leaves_only_loopback(apus_factory, tmp_path, work_root):
    config = exec_config(tmp_path, workers=1)
    config["workers"][0].update({"work_directory": f"{work_root}/work",
                                 "run_as": {"user": "nobody", "group": "nogroup"}})
    apus = apus_factory(config).wait_for_workers(1)
    probe = f"""
        (exec 3<>/dev/tcp/127.0.0.1/{apus.port}) 2>/dev/null && echo "cas: connected" > out.txt || echo "cas: refused" > out.txt
        cat /proc/net/dev | grep -c ':' >> out.txt
    """
    with grpc.insecure_channel(apus.address) as ch:
        open_net = run(ch, probe)
        blocked = run(ch, probe, platform={"block-network": "true"})
    assert open_net.startswith("cas: connected"), open_net
    assert blocked.startswith("cas: refused"), blocked
    assert blocked.split()[-1] == "1", f"only loopback in the namespace: {blocked}"
