"""deployment-examples/tools/bazel: the wrapper starts the local apus proxy
(configs/local-proxy.json) when it is not running and runs real Bazel through it; the
proxy's uploads reach the team cache upstream, so a fresh proxy serves a clean rebuild."""
import os
import shutil
import signal
import subprocess
import time


from conftest import APUS, BAZEL4, ROOT, cache_config, free_port
from test_bazel_remote_cache import Bazel, assert_all_remote_hits, pytestmark, summary  # noqa: F401

WRAPPER = ROOT / "deployment-examples" / "tools" / "bazel"


def run(bazel, env, *args):
    p = subprocess.run([str(WRAPPER), f"--output_user_root={bazel.root}", *args], cwd=bazel.workspace,
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return p.stdout + p.stderr


def stop_proxy(state):
    pid = int((state / "apus.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the proxy {pid} did not stop")


def test_wrapper_starts_the_proxy_and_builds_through_it(apus_factory, tmp_path):
    upstream = apus_factory(cache_config({"memory": {"max_bytes": 1 << 30}}))
    home = tmp_path / "home"
    home.mkdir()
    state = home / ".local" / "state" / "apus-proxy"
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = dict(os.environ, HOME=str(home), BAZEL_REAL=str(BAZEL4), APUS_BIN=str(APUS),
               APUS_PROXY_CONFIG=str(ROOT / "configs" / "local-proxy.json"),
               APUS_UPSTREAM=f"grpc://127.0.0.1:{upstream.port}", APUS_PROXY_LISTEN=listen, APUS_PROXY_ADMIN=admin)
    bazel = Bazel(tmp_path)
    try:
        first = run(bazel, env, "test", "//...", "--noremote_local_fallback", "--remote_timeout=60")
        assert (state / "apus.pid").exists(), "the wrapper did not start the proxy"
        pid = int((state / "apus.pid").read_text())
        assert summary(first)[1].get("remote cache hit", 0) == 0
        run(bazel, env, "clean")
        assert_all_remote_hits(summary(run(bazel, env, "test", "//...", "--noremote_local_fallback")))
        assert int((state / "apus.pid").read_text()) == pid, "a running proxy was started again"

        # A new proxy with an empty disk tier: every hit now comes from the team cache upstream.
        stop_proxy(state)
        shutil.rmtree(home / ".cache" / "apus-proxy")
        run(bazel, env, "clean")
        assert_all_remote_hits(summary(run(bazel, env, "test", "//...", "--noremote_local_fallback")))
        assert int((state / "apus.pid").read_text()) != pid
    finally:
        bazel.shutdown()
        if (state / "apus.pid").exists():
            try:
                stop_proxy(state)
            except ProcessLookupError:
                pass
