"""SIGTERM while real Bazel builds remotely: apus drains and exits 0 within its grace period,
leaves no temp files, and after a restart on the same data the build succeeds from cache."""
import signal
import subprocess
import time

from conftest import ApusProcess
from execution import exec_config
from test_bazel_remote_cache import BAZEL4, assert_all_remote_hits, pytestmark  # noqa: F401
from test_bazel_remote_execution import bazel, run_remote  # noqa: F401  (bazel: a fixture)

GRACE = 5


def files_under(path):
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_sigterm_during_remote_build(bazel, tmp_path):
    config = exec_config(tmp_path, workers=1)
    config["stores"] = {"cas": {"filesystem": {"path": str(tmp_path / "cas")}},
                        "ac": {"filesystem": {"path": str(tmp_path / "ac")}}}
    config["global"]["shutdown_grace_seconds"] = GRACE
    apus = ApusProcess(config, tmp_path)
    apus.start().wait_for_workers(1)
    build = subprocess.Popen(
        [str(BAZEL4), f"--output_user_root={bazel.root}", "test", "//...",
         f"--remote_executor=grpc://127.0.0.1:{apus.port}", "--noremote_local_fallback", "--remote_timeout=60"],
        cwd=bazel.workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Stop once the build is under way: inputs uploaded and at least one result cached.
        deadline = time.monotonic() + 300
        while not files_under(tmp_path / "ac" / "content") and time.monotonic() < deadline:
            assert build.poll() is None or files_under(tmp_path / "ac" / "content"), "build ended early"
            time.sleep(0.05)
        assert files_under(tmp_path / "ac" / "content"), apus.read_log()[-3000:]
        start = time.monotonic()
        apus.proc.send_signal(signal.SIGTERM)
        code = apus.proc.wait(timeout=GRACE + 30)
        took = time.monotonic() - start
    finally:
        build.wait(timeout=600)
    assert code == 0, apus.read_log()[-3000:]
    assert took < GRACE + 5, f"apus took {took:.1f} s to stop with a {GRACE} s grace period"
    for store in ("cas", "ac"):
        assert files_under(tmp_path / store / "tmp") == [], f"temp files left in {store}"

    apus.start().wait_for_workers(1)
    try:
        run_remote(bazel, apus.port)
        bazel.clean()
        assert_all_remote_hits(run_remote(bazel, apus.port))
    finally:
        assert apus.stop() == 0
