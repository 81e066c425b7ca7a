"""Real Bazel (Debian's Bazel 4, offline) against a running apus as --remote_cache."""
import hashlib
import re
import shutil
import subprocess

import pytest

from conftest import BAZEL4, EXAMPLE, cache_config

# Missing Bazel skips these tests, or fails them under CI=true (conftest.require_bazel); a
# Bazel build gets longer than the suite's default per-test timeout.
pytestmark = [pytest.mark.usefixtures("require_bazel"), pytest.mark.timeout(1800)]


class Bazel:
    def __init__(self, tmp_path):
        self.workspace = tmp_path / "ws"
        shutil.copytree(EXAMPLE, self.workspace)
        self.root = tmp_path / "bazel-root"

    def run(self, *args):
        cmd = [str(BAZEL4), f"--output_user_root={self.root}", *args]
        p = subprocess.run(cmd, cwd=self.workspace, capture_output=True, text=True, timeout=900)
        return p.returncode, p.stdout + p.stderr

    def test(self, port):
        code, out = self.run(
            "test", "//...", f"--remote_cache=grpc://127.0.0.1:{port}", "--noremote_local_fallback",
            "--remote_timeout=60")
        assert code == 0, out[-4000:]
        return summary(out)

    def clean(self):
        code, out = self.run("clean")
        assert code == 0, out

    def shutdown(self):
        self.run("shutdown")

    def big_bin_sha256(self):
        return hashlib.sha256((self.workspace / "bazel-bin" / "gen" / "big.bin").read_bytes()).hexdigest()


def summary(output):
    """Parses `INFO: N processes: A remote cache hit, B internal, C linux-sandbox.`"""
    line = [l for l in output.splitlines() if re.search(r"\d+ processes?:", l)][-1]
    counts = {}
    for n, kind in re.findall(r"(\d+) ([a-z -]+?)(?:,|\.|$)", line.split(":", 2)[-1]):
        counts[kind.strip()] = int(n)
    total = int(re.search(r"(\d+) processes?", line).group(1))
    return total, counts, line


@pytest.fixture
def bazel(tmp_path):
    b = Bazel(tmp_path)
    yield b
    b.shutdown()


def assert_all_remote_hits(result):
    total, counts, line = result
    non_internal = total - counts.get("internal", 0)
    assert non_internal > 0, line
    assert counts.get("remote cache hit", 0) == non_internal, line


@pytest.mark.parametrize("store", ["memory", "filesystem"])
def test_bazel_rebuild_is_all_remote_cache_hits(apus_factory, bazel, tmp_path, store):
    cas = ({"memory": {"max_bytes": 1 << 30}} if store == "memory"
           else {"filesystem": {"path": str(tmp_path / "cas"), "max_bytes": 1 << 30}})
    apus = apus_factory(cache_config(cas))
    first = bazel.test(apus.port)
    assert first[1].get("remote cache hit", 0) == 0, first[2]
    digest_before = bazel.big_bin_sha256()
    bazel.clean()
    assert_all_remote_hits(bazel.test(apus.port))
    assert bazel.big_bin_sha256() == digest_before


def test_bazel_cache_survives_apus_restart(apus_factory, bazel, tmp_path):
    config = cache_config({"filesystem": {"path": str(tmp_path / "cas"), "max_bytes": 1 << 30}},
                          {"filesystem": {"path": str(tmp_path / "ac")}})
    apus = apus_factory(config)
    bazel.test(apus.port)
    digest_before = bazel.big_bin_sha256()
    assert apus.stop() == 0
    restarted = apus_factory(config)
    bazel.clean()
    assert_all_remote_hits(bazel.test(restarted.port))
    assert bazel.big_bin_sha256() == digest_before
