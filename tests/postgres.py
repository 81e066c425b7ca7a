"""A real PostgreSQL for tests: `initdb` + `postgres` in a temporary directory on a
loopback port, run as the `postgres` user when we are root (PostgreSQL refuses root), and
stopped by PID. No mocks.

As a module: `PostgresServer(tmpdir).start()` ... `.stop()`, `.url` (postgres://...).
As a script (scripts/test.sh): `postgres.py start DIR` prints the URL and leaves the server
running; `postgres.py stop DIR` stops it.
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _bindir():
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "postgres")):
            return candidate
    found = shutil.which("postgres")
    if found:
        return os.path.dirname(found)
    raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql; scripts/setup.sh --test)")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster under `directory`; database `apus`, user `apus`, password `apus`."""

    def __init__(self, directory, port=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # As root, the cluster lives where the `postgres` user can reach it: a directory of
        # its own under /tmp (pytest's are private to root), removed by `cleanup()`.
        self.home = Path(tempfile.mkdtemp(prefix="apus-pg-")) if os.geteuid() == 0 else self.directory
        self.data = self.home / "data"
        self.socket_dir = self.home / "socket"
        self.port = port
        self.proc = None
        self.bindir = _bindir()

    @property
    def url(self):
        return f"postgres://apus:apus@127.0.0.1:{self.port}/apus?sslmode=disable"

    def _as_postgres(self):
        """Popen arguments dropping root for the `postgres` user (PostgreSQL refuses root);
        the process started is postgres itself, so its PID is the one to stop."""
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}

    def _run(self, *args, **kw):
        return subprocess.run(list(args), check=True, capture_output=True, text=True, **self._as_postgres(), **kw)

    def init(self):
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres")
            shutil.chown(self.socket_dir, "postgres")
            os.chmod(self.home, 0o755)
        pwfile = self.home / "pw"
        pwfile.write_text("apus\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        self._run(f"{self.bindir}/initdb", "-D", str(self.data), "-U", "apus", "--pwfile", str(pwfile),
                  "-A", "scram-sha-256", "--no-sync", "-E", "UTF8")
        return self

    def start(self, timeout=60):
        """Starts the server (initialising the cluster the first time) and waits until it
        accepts connections. The port is kept across restarts."""
        if not self.data.exists():
            self.init()
        if self.port is None:
            self.port = _free_port()
        log = open(self.directory / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [f"{self.bindir}/postgres", "-D", str(self.data), "-p", str(self.port),
                                   "-h", "127.0.0.1", "-k", str(self.socket_dir), "-c", "fsync=off",
                                   "-c", "max_connections=200"],
            stdout=log, stderr=log, start_new_session=True, **self._as_postgres())
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited: " + (self.directory / "postgres.log").read_text())
            ready = subprocess.run([f"{self.bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                self._ensure_database()
                return self
            time.sleep(0.1)
        raise RuntimeError("postgres did not accept connections: " + (self.directory / "postgres.log").read_text())

    def _ensure_database(self):
        env = dict(os.environ, PGPASSWORD="apus")
        exists = subprocess.run([f"{self.bindir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "apus",
                                 "-d", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'apus'"],
                                capture_output=True, text=True, env=env, check=True)
        if exists.stdout.strip() != "1":
            subprocess.run([f"{self.bindir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "apus",
                            "-d", "postgres", "-c", "CREATE DATABASE apus"], capture_output=True, env=env, check=True)

    def sql(self, statement):
        """Runs one statement with psql; returns its unaligned output."""
        env = dict(os.environ, PGPASSWORD="apus")
        out = subprocess.run([f"{self.bindir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "apus",
                              "-d", "apus", "-tAc", statement], capture_output=True, text=True, env=env, check=True)
        return out.stdout.strip()

    def stop(self, fast=True):
        """Stops the server by its PID (SIGINT: fast shutdown) and waits for it."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT if fast else signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def cleanup(self):
        """Stops the server and removes the cluster."""
        self.stop()
        if self.home != self.directory:
            shutil.rmtree(self.home, ignore_errors=True)


def _main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        sys.exit("usage: postgres.py start|stop DIR")
    directory = Path(argv[2])
    if argv[1] == "start":
        server = PostgresServer(directory).start()
        (directory / "pid").write_text(str(server.proc.pid))
        (directory / "home").write_text(str(server.home))
        print(server.url)
    else:
        pidfile = directory / "pid"
        if pidfile.exists():
            pid = int(pidfile.read_text())
            try:
                os.kill(pid, signal.SIGINT)
                for _ in range(300):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                pass
            pidfile.unlink()
        home = directory / "home"
        if home.exists():
            if Path(home.read_text()) != directory:
                shutil.rmtree(home.read_text(), ignore_errors=True)
            home.unlink()


if __name__ == "__main__":
    _main(sys.argv)
