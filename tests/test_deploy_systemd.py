"""deployment-examples/systemd: the units pass `systemd-analyze verify`, the cas and scheduler
units score <= 2.5 in `systemd-analyze security`, install.sh is shellcheck-clean and idempotent,
the layout runs as processes (each unit's ExecStart with its EnvironmentFile, TLS and client
certificates as in the configs) under real Bazel with --remote_executor, and the README's
marked shell blocks run."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import APUS, ROOT, free_port, missing_bazel
from test_bazel_remote_cache import Bazel, assert_all_remote_hits, summary
from test_bazel_remote_execution import assert_all_remote
from tlscerts import CertificateAuthority

LAYOUT = ROOT / "deployment-examples" / "systemd"
UNITS = sorted((LAYOUT / "units").glob("*.service"))
HARDENED = ["apus-cas.service", "apus-scheduler.service"]
INSTALLED_BIN = "/usr/local/bin/apus"


def have(tool):
    return shutil.which(tool) is not None


def unit_instance(unit):
    """A template unit is analysed as its instance `@1`."""
    return unit.name.replace("@.", "@1.")


def units_for_analysis(tmp_path):
    """The units with ExecStart pointing at the built binary (verify checks it is executable)."""
    d = tmp_path / "units"
    d.mkdir()
    for unit in UNITS:
        text = unit.read_text().replace(INSTALLED_BIN, str(APUS))
        (d / unit.name).write_text(text)
    return d


@pytest.mark.skipif(not have("systemd-analyze"), reason="needs systemd-analyze")
def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    d = units_for_analysis(tmp_path)
    names = [unit_instance(u) for u in UNITS]
    p = subprocess.run(["systemd-analyze", "verify", *names], cwd=d, capture_output=True, text=True)
    print(p.stdout + p.stderr)
    assert p.returncode == 0, p.stderr
    about_ours = [l for l in (p.stdout + p.stderr).splitlines() if "apus" in l]
    assert not about_ours, about_ours


@pytest.mark.skipif(not have("systemd-analyze"), reason="needs systemd-analyze")
def test_security_exposure_of_each_unit(tmp_path):
    """Offline analysis needs the units in a root's unit path: a temp root holds them."""
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, root / "etc" / "systemd" / "system" / unit.name)
    scores = {}
    for unit in UNITS:
        name = unit_instance(unit)
        p = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", name],
                           capture_output=True, text=True)
        print(p.stdout)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", p.stdout)
        assert m, p.stdout + p.stderr
        scores[name] = float(m.group(1))
    print("exposure:", scores)
    for name in HARDENED:
        assert scores[name] <= 2.5, (name, scores[name])


@pytest.mark.skipif(not have("shellcheck"), reason="needs shellcheck")
def test_scripts_pass_shellcheck():
    scripts = [p for p in LAYOUT.rglob("*.sh")]
    assert scripts
    p = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


def test_install_sh_into_a_root_is_complete_and_idempotent(tmp_path):
    root = tmp_path / "root"
    run = lambda: subprocess.run(["sh", str(LAYOUT / "install.sh"), "--root", str(root), str(APUS)],
                                 capture_output=True, text=True)
    p = run()
    assert p.returncode == 0, p.stdout + p.stderr
    expected = ["usr/local/bin/apus", "usr/lib/sysusers.d/apus.conf", "usr/lib/tmpfiles.d/apus.conf",
                "etc/apus/apus.env", "etc/apus/cas.json", "etc/apus/scheduler.json", "etc/apus/worker.json",
                "etc/apus/tokens", "etc/apus/tls", "var/lib/apus",
                "etc/systemd/system/apus-cas.service", "etc/systemd/system/apus-scheduler.service",
                "etc/systemd/system/apus-worker@.service"]
    for path in expected:
        assert (root / path).exists(), path
    assert os.access(root / "usr/local/bin/apus", os.X_OK)
    assert (root / "etc/apus/cas.json").read_text() == (LAYOUT / "config/cas.json").read_text()
    assert oct((root / "etc/apus").stat().st_mode & 0o777) == "0o750"
    # An operator edits the config and the env file; a second run (an upgrade) keeps both.
    edited = (root / "etc/apus/cas.json").read_text().replace("\"shutdown_grace_seconds\": 30", "\"shutdown_grace_seconds\": 31")
    (root / "etc/apus/cas.json").write_text(edited)
    (root / "etc/apus/apus.env").write_text("APUS_CAS=grpcs://mine:50051\n")
    (root / "etc/apus/tokens").write_text("abc ops\n")
    p = run()
    assert p.returncode == 0, p.stdout + p.stderr
    assert (root / "etc/apus/cas.json").read_text() == edited
    assert (root / "etc/apus/cas.json.new").read_text() == (LAYOUT / "config/cas.json").read_text()
    assert (root / "etc/apus/apus.env").read_text() == "APUS_CAS=grpcs://mine:50051\n"
    assert (root / "etc/apus/tokens").read_text() == "abc ops\n"
    assert not (root / "etc/apus/scheduler.json.new").exists()
    # A third run changes nothing more.
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert run().returncode == 0
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before


@pytest.mark.skipif(not (have("systemd-sysusers") and have("systemd-tmpfiles")), reason="needs systemd-sysusers/tmpfiles")
def test_sysusers_and_tmpfiles_apply_to_a_root(tmp_path):
    """What install.sh runs on a VM, applied to a temp root: the users and the directories."""
    (tmp_path / "etc").mkdir()
    p = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(LAYOUT / "sysusers.d/apus.conf")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    users = {l.split(":")[0]: l.split(":") for l in (tmp_path / "etc/passwd").read_text().splitlines()}
    assert users["apus"][5] == "/var/lib/apus" and users["apus"][6] == "/usr/sbin/nologin"
    assert "apus-action" in users
    conf = tmp_path / "apus-tmpfiles.conf"
    shutil.copy(LAYOUT / "tmpfiles.d/apus.conf", conf)
    p = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(conf)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for path, mode in [("etc/apus", 0o750), ("etc/apus/tls", 0o750), ("var/lib/apus", 0o755)]:
        st = (tmp_path / path).stat()
        assert st.st_mode & 0o777 == mode, (path, oct(st.st_mode))
        assert st.st_uid == 0


# --- the layout as processes -------------------------------------------------------------

def parse_unit(path, instance="1"):
    """[Service] keys of a unit file, each a list of values in order, with %i substituted."""
    values, section = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value.replace("%i", instance))
    return values


def parse_env_file(path):
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def installed_to_repo(path):
    """/etc/apus/X in a unit is the layout's config/X."""
    assert path.startswith("/etc/apus/"), path
    return LAYOUT / "config" / path[len("/etc/apus/"):]


class NotifySocket:
    """The datagram socket systemd would hand a Type=notify service as NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages = []

    def poll(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.extend(data.decode().splitlines())

    def close(self):
        self.sock.close()


PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1


def process_settings(svc):
    """The unit's settings a child can take on without systemd: MemoryDenyWriteExecute (as the
    kernel's PR_SET_MDWE, Linux >= 6.3, which refuses the same mappings systemd's seccomp rule
    does), NoNewPrivileges, UMask and LimitNOFILE. The others need systemd as PID 1."""
    import ctypes
    import resource
    mdwe = svc.get("MemoryDenyWriteExecute") == ["yes"]
    nnp = svc.get("NoNewPrivileges") == ["yes"]
    umask = int(svc["UMask"][0], 8) if "UMask" in svc else None
    nofile = int(svc["LimitNOFILE"][0]) if "LimitNOFILE" in svc else None

    def apply():
        libc = ctypes.CDLL(None, use_errno=True)
        if mdwe and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
        if nnp and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if umask is not None:
            os.umask(umask)
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), min(nofile, hard)))
    return apply


class UnitProcess:
    """One unit's ExecStart run as a process with the environment its EnvironmentFile= lines
    (and Environment=) give it, then `overrides`."""

    def __init__(self, unit, workdir, overrides, instance="1", rewrite=None, sockets=None):
        self.name = unit.name.replace("@.", f"@{instance}.")
        svc = parse_unit(unit, instance)
        assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"], self.name
        env = {}
        for value in svc.get("Environment", []):
            key, _, v = value.partition("=")
            env[key] = v
        for value in svc["EnvironmentFile"]:
            optional = value.startswith("-")
            path = installed_to_repo(value.lstrip("-"))
            if optional and not path.exists():
                continue
            env.update(parse_env_file(path))
        env.update(overrides)
        [exec_start] = svc["ExecStart"]
        binary, config = exec_start.split()
        assert binary == INSTALLED_BIN, exec_start
        self.config = installed_to_repo(config)
        if rewrite:
            copy = Path(workdir) / self.config.name
            copy.write_text(rewrite(self.config.read_text()))
            self.config = copy
        self.env = dict(os.environ, **env)
        # A short directory: a socket path must fit in 108 bytes.
        self.notify = NotifySocket(Path(sockets or workdir) / f"{self.name}.notify")
        self.env["NOTIFY_SOCKET"] = self.notify.path
        self.log_path = Path(workdir) / f"{self.name}.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(APUS), str(self.config)], stdout=self.log, stderr=self.log, env=self.env,
                                     preexec_fn=process_settings(svc))

    def read_log(self):
        return self.log_path.read_text(errors="replace")

    def check(self):
        """`apus check` of the config with this unit's environment (its ExecStartPre)."""
        p = subprocess.run([str(APUS), "check", str(self.config)], env=self.env, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr

    def wait_ready(self, admin, timeout=60):
        """Waits as systemd would, for READY=1 on the notify socket, and then for /readyz to
        answer 200."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.read_log()[-3000:]}")
            if "READY=1" in self.notify.poll():
                try:
                    with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready within {timeout} s: {self.read_log()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def actions_as_nobody(config):
    """worker.json runs actions as apus-action (sysusers.d/apus.conf), a literal because apus
    does not expand ${VAR} inside run_as; this host has `nobody` instead."""
    try:
        import pwd
        pwd.getpwnam("apus-action")
        return config
    except KeyError:
        return config.replace('"user": "apus-action", "group": "apus-action"', '"user": "nobody", "group": "nogroup"')


@pytest.fixture
def pki(tmp_path):
    """The files the configs name under APUS_TLS: ca.pem, server, scheduler and worker pairs."""
    tls = tmp_path / "tls"
    ca = CertificateAuthority(tls)
    shutil.copy(ca.cert, tls / "ca.pem")
    ca.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    ca.issue("scheduler", "scheduler", client=True)
    ca.issue("worker", "worker", client=True)
    ci = ca.issue("ci", "ci", client=True)
    return tls, ci


@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.geteuid() != 0, reason="worker.json runs actions as another user (run_as): needs root")
def test_the_layout_runs_as_processes_under_bazel_remote_execution(tmp_path, pki, require_bazel):
    tls, (ci_cert, ci_key) = pki
    (tmp_path / "tokens").write_text("")
    # The worker runs actions as `nobody`: its directories must be reachable by that user.
    data = Path(tempfile.mkdtemp(prefix="apus-systemd-"))
    os.chmod(data, 0o755)
    cas_port, sched_port = free_port(), free_port()
    admin = {role: f"127.0.0.1:{free_port()}" for role in ("cas", "scheduler", "worker")}
    overrides = {
        "APUS_CAS": f"grpcs://localhost:{cas_port}", "APUS_SCHEDULER": f"grpcs://localhost:{sched_port}",
        "APUS_CAS_LISTEN": f"127.0.0.1:{cas_port}", "APUS_SCHEDULER_LISTEN": f"127.0.0.1:{sched_port}",
        "APUS_CAS_ADMIN": admin["cas"], "APUS_SCHEDULER_ADMIN": admin["scheduler"],
        "APUS_WORKER_ADMIN": admin["worker"],
        "APUS_TLS": str(tls), "APUS_TOKENS": str(tmp_path / "tokens"), "APUS_DATA": str(data),
        "APUS_CAS_MAX_BYTES": str(1 << 30), "APUS_WORKER_SLOTS": "2",
    }
    unit = {u.name: u for u in UNITS}
    started = []
    bazel = Bazel(tmp_path)
    timings = {}
    try:
        for name, role in [("apus-cas.service", "cas"), ("apus-scheduler.service", "scheduler"),
                           ("apus-worker@.service", "worker")]:
            t = time.time()
            p = UnitProcess(unit[name], tmp_path, overrides, rewrite=actions_as_nobody, sockets=data)
            p.check()
            started.append(p)
            p.wait_ready(admin[role])
            timings[f"{role} ready"] = round(time.time() - t, 2)
        flags = [f"--remote_executor=grpcs://localhost:{sched_port}", "--noremote_local_fallback",
                 "--remote_timeout=120", f"--tls_certificate={tls / 'ca.pem'}",
                 f"--tls_client_certificate={ci_cert}", f"--tls_client_key={ci_key}"]
        t = time.time()
        code, out = bazel.run("test", "//...", *flags)
        assert code == 0, out[-4000:]
        assert_all_remote(summary(out))
        timings["bazel remote"] = round(time.time() - t, 1)
        bazel.clean()
        t = time.time()
        code, out = bazel.run("test", "//...", *flags)
        assert code == 0, out[-4000:]
        assert_all_remote_hits(summary(out))
        timings["bazel rebuild (hits)"] = round(time.time() - t, 1)
    finally:
        bazel.shutdown()
        codes = {}
        for p in reversed(started):
            t = time.time()
            codes[p.name] = p.stop()
            timings[f"{p.name} stop"] = round(time.time() - t, 2)
        print("timings:", json.dumps(timings))
        shutil.rmtree(data, ignore_errors=True)
    for p in started:
        assert codes[p.name] == 0, (p.name, codes[p.name], p.read_log()[-3000:])
    messages = {p.name: p.notify.poll() for p in started}
    print("notifications:", messages)
    for name, msgs in messages.items():
        assert msgs == ["READY=1", "STOPPING=1"], (name, msgs)
    for p in started:
        p.notify.close()


# --- the README's runnable blocks --------------------------------------------------------

def readme_blocks():
    """Fenced ```sh blocks that follow a `<!-- test: run -->` line in the README."""
    text = (LAYOUT / "README.md").read_text()
    return re.findall(r"<!-- test: run -->\s*\n```sh\n(.*?)```", text, re.S)


def test_readme_shell_blocks_run(tmp_path):
    """Each marked block runs from the repository root with /etc/apus moved into the temp
    root the README's `install.sh --root "${TMPDIR:-/tmp}/apus-root"` block fills, `sudo`
    dropped and the built binary for `.build/release/apus` and on PATH."""
    blocks = readme_blocks()
    assert len(blocks) >= 4, "the README marks its runnable blocks with <!-- test: run -->"
    root = tmp_path / "apus-root"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "apus").symlink_to(APUS)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", TMPDIR=str(tmp_path))
    for i, block in enumerate(blocks):
        script = (block.replace("/etc/apus", f"{root}/etc/apus").replace(".build/release/apus", str(APUS))
                  .replace("sudo ", ""))
        t = time.time()
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        print(f"block {i}: exit {p.returncode} in {time.time() - t:.1f} s\n{p.stdout[-1500:]}")
        assert p.returncode == 0, f"block {i}:\n{script}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    assert (root / "etc/apus/tls/server.pem").exists() and (root / "etc/apus/ops-token").exists()
    assert " ops" in (root / "etc/apus/tokens").read_text()
