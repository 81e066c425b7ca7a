"""Real Bazel with --remote_executor: every action runs on apus workers."""
import pytest

from conftest import ApusProcess
from execution import exec_config, worker_config
from test_bazel_remote_cache import BAZEL4, Bazel, assert_all_remote_hits, pytestmark  # noqa: F401


@pytest.fixture
def bazel(tmp_path):
    b = Bazel(tmp_path)
    yield b
    b.shutdown()


def run_remote(bazel, port):
    code, out = bazel.run("test", "//...", f"--remote_executor=grpc://127.0.0.1:{port}",
                          "--noremote_local_fallback", "--remote_timeout=120")
    assert code == 0, out[-4000:]
    from test_bazel_remote_cache import summary
    return summary(out)


def assert_all_remote(result):
    total, counts, line = result
    non_internal = total - counts.get("internal", 0)
    assert non_internal > 0 and counts.get("remote", 0) == non_internal, line


def test_bazel_remote_execution_all_in_one(apus_factory, bazel, tmp_path):
    apus = apus_factory(exec_config(tmp_path, workers=1)).wait_for_workers(1)
    assert_all_remote(run_remote(bazel, apus.port))
    digest = bazel.big_bin_sha256()
    bazel.clean()
    assert_all_remote_hits(run_remote(bazel, apus.port))
    assert bazel.big_bin_sha256() == digest


def test_bazel_remote_execution_split_deployment(apus_factory, bazel, tmp_path):
    server = apus_factory(exec_config(tmp_path, workers=0))
    url = f"grpc://{server.address}"
    workers = []
    for i in range(2):
        d = tmp_path / f"w{i}"
        d.mkdir()
        workers.append(ApusProcess({"workers": [worker_config(tmp_path, i, url=url)]}, d).start_worker())
    try:
        assert_all_remote(run_remote(bazel, server.port))
        for i in range(2):
            cached = [p for p in (tmp_path / f"cache{i}" / "content").rglob("*") if p.is_file()]
            assert cached, f"worker {i} ran no action"
        bazel.clean()
        assert_all_remote_hits(run_remote(bazel, server.port))
    finally:
        for w in workers:
            assert w.stop() == 0
