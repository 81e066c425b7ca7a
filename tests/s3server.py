"""A moto S3 server on a loopback port, started and stopped by PID."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


class MotoServer:
    def __init__(self, logdir, tls=None):
        self.tls = tls  # (certificate, key): serve https with them
        self.ca = None  # the CA bundle clients verify it with
        self.port = 0  # 0: moto binds any free port and prints it; set to reuse a port
        self.logdir = Path(logdir)
        self.proc = None

    def start(self):
        moto = Path(sys.executable).parent / "moto_server"
        path = self.logdir / f"moto-{os.getpid()}-{time.monotonic_ns()}.log"
        log = open(path, "ab")
        args = [str(moto), "-H", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            args += ["-s", "-c", str(self.tls[0]), "-k", str(self.tls[1])]
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            # ` * Running on http://127.0.0.1:PORT`, printed once the socket is bound.
            m = re.search(r"Running on https?://127\.0\.0\.1:(\d+)", path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("moto_server did not start: " + path.read_text(errors="replace"))

    def freeze(self):
        """SIGSTOP: the socket stays bound and the kernel still accepts connections, but nothing
        answers: an S3 that hangs."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        """SIGKILL: an S3 that crashes; connections are reset, and refused until `start()`
        runs again on the same port (moto keeps nothing: buckets must be made again)."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            verify=str(self.ca) if self.tls else None,
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def make_bucket(self, name):
        self.client().create_bucket(Bucket=name)


@pytest.fixture
def moto(tmp_path):
    server = MotoServer(tmp_path).start()
    yield server
    server.stop()


def s3_spec(moto, bucket, prefix, **extra):
    return {"s3": dict({"endpoint": moto.endpoint, "bucket": bucket, "key_prefix": prefix, "path_style": True,
                        "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        "multipart_threshold_bytes": 5 << 20, "part_bytes": 5 << 20, "max_attempts": 3,
                        "request_timeout_seconds": 20}, **extra)}
