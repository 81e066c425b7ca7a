"""Real Bazel against a deployment where every hop is TLS and authenticated: bearer tokens
(`--remote_header`), client certificates mapped to principals, and workers holding the
`worker` permission."""
import subprocess

import pytest

from conftest import APUS, ApusProcess, cache_config
from execution import exec_config, worker_config
from test_bazel_remote_cache import Bazel, assert_all_remote_hits, summary
from test_bazel_remote_execution import assert_all_remote
from tlscerts import CertificateAuthority

pytestmark = [pytest.mark.usefixtures("require_bazel"), pytest.mark.timeout(1800)]


def new_token(principal):
    out = subprocess.run([str(APUS), "token", "--principal", principal], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.strip().splitlines())
    return fields["token"].strip(), fields["line"].strip()


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    return ca, ca.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])


def test_bazel_remote_cache_with_a_bearer_token_over_tls(apus_factory, pki, tmp_path):
    ca, server = pki
    token, line = new_token("ci")
    (tmp_path / "tokens").write_text(line + "\n")
    config = cache_config({"memory": {}})
    config["servers"][0]["tls"] = {"certificate": str(server[0]), "private_key": str(server[1])}
    config["auth"] = {"tokens": str(tmp_path / "tokens"),
                      "instances": {"*": {"ci": ["read", "write", "write_ac"]}}}
    apus = apus_factory(config)
    build_twice(tmp_path, [f"--remote_cache=grpcs://localhost:{apus.port}", f"--tls_certificate={ca.cert}",
                           f"--remote_header=authorization=Bearer {token}", "--noremote_local_fallback",
                           "--remote_timeout=60"])
    log = apus.read_log()
    assert token not in log and token[:12] not in log


def test_bazel_remote_execution_where_every_hop_is_tls_and_authenticated(apus_factory, pki, tmp_path):
    """Bazel is principal "ci" by its client certificate; the two worker processes hold a
    token for principal "worker" (the WorkerAPI, and the CAS/AC access actions need) and
    check the server's certificate."""
    ca, server = pki
    client = ca.issue("bazel", "ci", client=True)
    token, line = new_token("worker")
    (tmp_path / "tokens").write_text(line + "\n")
    (tmp_path / "worker-token").write_text(token + "\n")
    config = exec_config(tmp_path, workers=0)
    config["servers"][0]["tls"] = {"certificate": str(server[0]), "private_key": str(server[1]),
                                   "client_ca": str(ca.cert), "client_auth": "optional"}
    config["auth"] = {"tokens": str(tmp_path / "tokens"), "certificate_principal": "cn",
                      "instances": {"*": {"ci": ["read", "write", "write_ac", "execute"],
                                          # Workers fetch inputs and upload outputs and results.
                                          "worker": ["read", "write", "write_ac"]}},
                      "schedulers": {"main": {"worker": ["worker"]}}}
    apus = apus_factory(config)
    url = f"grpcs://localhost:{apus.port}"
    workers = start_workers(tmp_path, url, {"tls": {"ca": str(ca.cert)}, "token_file": str(tmp_path / "worker-token")})
    build_twice(tmp_path, [
        f"--remote_executor={url}", "--noremote_local_fallback", "--remote_timeout=120",
        f"--tls_certificate={ca.cert}", f"--tls_client_certificate={client[0]}", f"--tls_client_key={client[1]}"],
        first=assert_all_remote, workers=workers)
    for log in [apus.read_log()] + [w.read_log() for w in workers]:
        assert token not in log


def start_workers(tmp_path, url, extra, count=2):
    """Worker processes of a split deployment dialing `url`, each with `extra` config keys."""
    workers = []
    for i in range(count):
        d = tmp_path / f"w{i}"
        d.mkdir()
        w = dict(worker_config(tmp_path, i, url=url), **extra)
        workers.append(ApusProcess({"workers": [w]}, d).start_worker())
    return workers


def build_twice(tmp_path, flags, first=None, workers=()):
    """Bazel builds the example with `flags` (`first` checks that build's summary), and again
    after `clean`, when every action is a remote cache hit; `workers` are stopped at the end."""
    bazel = Bazel(tmp_path)
    try:
        code, out = bazel.run("test", "//...", *flags)
        assert code == 0, out[-4000:]
        if first:
            first(summary(out))
        bazel.clean()
        code, out = bazel.run("test", "//...", *flags)
        assert code == 0, out[-4000:]
        assert_all_remote_hits(summary(out))
    finally:
        bazel.shutdown()
        for w in workers:
            assert w.stop() == 0
