"""A moto S3 server on a free loopback port, started and stopped by PID."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from conftest import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


class MotoServer:
    def __init__(self, logdir):
        self.port = free_port()
        self.logdir = Path(logdir)
        self.proc = None

    def start(self):
        moto = Path(sys.executable).parent / "moto_server"
        log = open(self.logdir / f"moto-{self.port}.log", "ab")
        self.proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
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
