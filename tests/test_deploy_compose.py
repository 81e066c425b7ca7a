"""deployment-examples/docker-compose (and docker/): static checks, and the compose layout run
without a container engine.

There is no Docker here, so `test_compose_layout_runs_bazel` reads `compose.yaml` (through
`docker-compose config`, which resolves its `${VAR:-default}`s) and starts each service's
`command` with its `environment` as local processes: container hostnames become 127.0.0.1,
each port the file and the configs name gets a free loopback port, the admin listener (9090
in every container) a port per process, the volumes temporary directories, and the
certificates come from `make-certs.sh`. Services start in `depends_on` order, each waited on
through the healthcheck it declares. Then real Bazel builds the example through the
scheduler, over plaintext and over TLS.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import APUS, ROOT, free_port
from s3server import moto  # noqa: F401
from test_bazel_remote_cache import Bazel, assert_all_remote_hits, summary
from test_bazel_remote_execution import assert_all_remote

EXAMPLES = ROOT / "deployment-examples"
COMPOSE_DIR = EXAMPLES / "docker-compose"
DOCKER_DIR = EXAMPLES / "docker"
CONFIGS = COMPOSE_DIR / "configs"
YAMLLINT_CONFIG = EXAMPLES / ".yamllint"
ADMIN_PORT = 9090
# `${VAR:-default}` in a config (no nesting: apus does not expand nested defaults).
EXPANSION = re.compile(r"\$\{(\w+):-([^}]*)\}")
HOSTPORT = re.compile(r"^(?:(grpcs?|https?)://)?([\w.-]+):(\d+)$")


def clean_env(**extra):
    """The environment without any of the variables the compose file or configs read, so
    the defaults in the files are what is tested."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APUS_", "MINIO_", "MC_", "AWS_")) and k not in ("CAS_ENDPOINT", "SCHEDULER_ENDPOINT")}
    env.update(extra)
    return env


def compose(*args, cwd=COMPOSE_DIR, env=None):
    return subprocess.run(["docker-compose", "-f", "compose.yaml", *args], cwd=cwd, capture_output=True, text=True,
                          env=env or clean_env(), timeout=60)


def compose_config(profile=None, **env):
    p = compose(*(["--profile", profile] if profile else []), "config", env=clean_env(**env))
    assert p.returncode == 0, p.stderr
    return yaml.safe_load(p.stdout)


def apus_services(config):
    """The services built from the Apus image (not MinIO's), without profile-only ones."""
    return {name: s for name, s in config["services"].items()
            if not s.get("profiles") and "build" in s}


# --- static checks ------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [None, "minio"])
def test_compose_config_is_valid(profile):
    config = compose_config(profile)
    assert {"cas", "scheduler", "worker"} <= set(config["services"])
    worker = config["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker, "the worker service must scale"
    assert worker["depends_on"]["cas"]["condition"] == "service_healthy"
    assert config["services"]["scheduler"]["depends_on"]["cas"]["condition"] == "service_healthy"
    for name in ("cas", "scheduler", "worker"):
        assert config["services"][name]["healthcheck"]["test"][:3] == ["CMD", "apus", "probe"]
    assert {"cas-data", "scheduler-data"} <= set(config["volumes"])
    if profile == "minio":
        assert {"minio", "minio-init"} <= set(config["services"])
        assert "mc ilm rule add --expire-days" in " ".join(config["services"]["minio-init"]["command"])


def test_yamllint():
    files = [str(p) for d in (COMPOSE_DIR, DOCKER_DIR) for p in sorted(d.rglob("*.y*ml"))]
    files.append(str(YAMLLINT_CONFIG))
    p = subprocess.run(["yamllint", "--strict", "-c", str(YAMLLINT_CONFIG), *files], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    # And with yamllint's defaults, as a hook run from the repository root sees them.
    p = subprocess.run(["yamllint", "--strict", "-d", "default", *files], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_shellcheck():
    scripts = sorted(str(p) for d in (COMPOSE_DIR, DOCKER_DIR) for p in d.rglob("*.sh"))
    assert scripts
    p = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_config_passes_apus_check():
    """Each config in configs/ with the environment of the service that mounts it."""
    services = compose_config("minio")["services"]
    env_of = {"cas.json": services["cas"]["environment"], "cas-minio.json": services["cas"]["environment"],
              "scheduler.json": services["scheduler"]["environment"], "worker.json": services["worker"]["environment"]}
    configs = sorted(CONFIGS.glob("*.json"))
    assert {p.name for p in configs} == set(env_of), "a config without a service, or a service without a config"
    for path in [*configs, DOCKER_DIR / "apus.json"]:
        env = clean_env(**{k: str(v) for k, v in env_of.get(path.name, {}).items()})
        p = subprocess.run([str(APUS), "check", str(path)], capture_output=True, text=True, env=env)
        assert p.returncode == 0, f"{path.name}: {p.stdout}{p.stderr}"
        assert "config OK" in p.stdout


def test_every_address_in_the_configs_comes_from_the_environment():
    """No host:port or URL outside a `${VAR:-default}`, so tests (and other layouts) can move them."""
    for path in sorted(CONFIGS.glob("*.json")):
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//"))
        bare = re.findall(r"[\w.-]+:\d{2,5}\b|\w+://[^\s\"]+", EXPANSION.sub("", text))
        assert not bare, f"{path.name}: {bare}"


def test_dockerfile_and_dockerignore():
    dockerfile = (DOCKER_DIR / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert len(stages) == 2, stages
    assert "--static-swift-stdlib" in dockerfile
    assert re.search(r"^USER apus$", dockerfile, re.M)
    assert 'HEALTHCHECK' in dockerfile and '"apus", "probe", "http://127.0.0.1:9090/readyz"' in dockerfile
    assert 'ENTRYPOINT ["apus"]' in dockerfile and 'CMD ["/etc/apus/apus.json"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".build", ".venv", ".git"):
        assert entry in ignored
    for needed in ("Package.swift", "Sources", "Tests"):  # what the build stage copies
        assert needed not in ignored


# --- the compose layout as local processes --------------------------------------------------


class Layout:
    """The services of compose.yaml as local processes."""

    def __init__(self, config, tmp_path, certs, workers=2):
        self.config = config
        self.services = apus_services(config)
        self.tmp = tmp_path
        self.certs = certs
        self.replicas = {name: (workers if name == "worker" else 1) for name in self.services}
        self.ports = {}         # a port named in compose.yaml or a config → a free loopback port
        self.procs = []         # (service, replica, Popen, admin port)

    def port(self, number):
        number = int(number)
        if number not in self.ports:
            self.ports[number] = free_port()
        return self.ports[number]

    def localize(self, value):
        """A URL or host:port naming a service (or any host) → 127.0.0.1 and the mapped port."""
        m = HOSTPORT.match(str(value))
        if not m:
            return str(value)
        scheme, _, port = m.groups()
        return (f"{scheme}://" if scheme else "") + f"127.0.0.1:{self.port(port)}"

    def config_path(self, service, arg):
        """A container path (/etc/apus/X) → the file beside compose.yaml it is mounted from."""
        for volume in service.get("volumes", []):
            source, _, target = volume.partition(":")
            target = target.split(":")[0]
            if source.startswith("/") and arg.startswith(target + "/"):
                return str(Path(source) / arg[len(target) + 1:])
        return arg

    def environment(self, name, replica, admin_port):
        service = self.services[name]
        config_file = Path(self.config_path(service, service["command"][0]))
        env = clean_env(HOME=str(self.tmp))
        # Every `${VAR:-host:port}` or `${VAR:-grpc://host:port}` in the config, localized.
        for var, default in EXPANSION.findall(config_file.read_text()):
            m = HOSTPORT.match(default)
            if m and int(m.group(3)) == ADMIN_PORT:
                env[var] = f"127.0.0.1:{admin_port}"
            elif m:
                env[var] = self.localize(default)
        # Then the service's own environment, localized the same way.
        for var, value in (service.get("environment") or {}).items():
            env[var] = self.localize(value)
        # Volumes: APUS_DATA (the image's ENV) → a directory per replica; certificates → `certs`.
        data = self.tmp / f"{name}-{replica}"
        data.mkdir(parents=True, exist_ok=True)
        env["APUS_DATA"] = str(data)
        if "APUS_TLS" in env:
            env["APUS_TLS"] = str(self.certs)
        return env, config_file

    def start(self):
        for name in self.order():
            for replica in range(self.replicas[name]):
                admin = free_port()
                env, config_file = self.environment(name, replica, admin)
                log = open(self.tmp / f"{name}-{replica}.log", "wb")
                command = [str(APUS), str(config_file), *self.services[name]["command"][1:]]
                proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
                self.procs.append((name, replica, proc, admin))
            for _, replica, proc, admin in [p for p in self.procs if p[0] == name]:
                self.wait_healthy(name, replica, proc, admin)
        return self

    def order(self):
        """Services in depends_on order."""
        done = []
        while len(done) < len(self.services):
            ready = [n for n, s in self.services.items()
                     if n not in done and all(d in done for d in s.get("depends_on", {}))]
            assert ready, "depends_on has a cycle"
            done.extend(sorted(ready))
        return done

    def wait_healthy(self, name, replica, proc, admin):
        """Runs the service's declared healthcheck (CMD apus probe URL) until it passes."""
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "apus", test
        command = [str(APUS), *[a.replace(f"127.0.0.1:{ADMIN_PORT}", f"127.0.0.1:{admin}") for a in test[2:]]]
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{name}-{replica} exited {proc.returncode}: {self.log(name, replica)}")
            p = subprocess.run(command, capture_output=True, text=True)
            if p.returncode == 0:
                return
            if time.time() > deadline:
                raise AssertionError(f"{name}-{replica} not healthy: {p.stderr}\n{self.log(name, replica)}")
            time.sleep(0.3)

    def log(self, name, replica):
        return (self.tmp / f"{name}-{replica}.log").read_text(errors="replace")[-4000:]

    def status(self, name):
        admin = next(a for n, _, _, a in self.procs if n == name)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as r:
            return json.load(r)

    def stop(self):
        """SIGTERM by PID, newest first (workers before the scheduler before the CAS)."""
        codes = {}
        for name, replica, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            codes[f"{name}-{replica}"] = proc.returncode
        return codes


@pytest.mark.usefixtures("require_bazel")
@pytest.mark.timeout(1800)
def test_compose_layout_runs_bazel(tmp_path):
    config = compose_config()
    assert set(apus_services(config)) == {"cas", "scheduler", "worker"}
    certs = tmp_path / "certs"
    p = subprocess.run([str(COMPOSE_DIR / "make-certs.sh"), str(certs)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    layout = Layout(config, tmp_path, certs, workers=2)
    bazel = Bazel(tmp_path)
    try:
        started = time.time()
        layout.start()
        print(f"layout healthy in {time.time() - started:.1f} s; ports {layout.ports}")
        workers = [w["id"] for s in layout.status("scheduler")["schedulers"].values() for w in s["workers"]]
        assert len(workers) == 2, workers
        scheduler = layout.port(50052)
        scheduler_tls = layout.port(50062)
        cas_tls = layout.port(50061)
        # The layout's published ports are those compose.yaml publishes.
        published = {int(str(p).split(":")[-1].split("/")[0]) if not isinstance(p, dict) else int(p["target"])
                     for s in layout.services.values() for p in s.get("ports", [])}
        assert published == {50051, 50052, 50061, 50062}, published

        # Plaintext to the scheduler: every action runs on the workers.
        t = time.time()
        code, out = bazel.run("test", "//...", f"--remote_executor=grpc://127.0.0.1:{scheduler}",
                              "--noremote_local_fallback", "--remote_timeout=120")
        assert code == 0, out[-4000:]
        assert_all_remote(summary(out))
        print(f"bazel grpc:// {time.time() - t:.1f} s: {summary(out)[2]}")
        ran = [bool(list((tmp_path / f"worker-{i}" / "worker-cache").rglob("*"))) for i in range(2)]
        print(f"workers that fetched inputs: {ran}")

        # TLS to the scheduler, with the CA from make-certs.sh; cached results refused, so the
        # actions run remotely again.
        bazel.clean()
        t = time.time()
        code, out = bazel.run("test", "//...", f"--remote_executor=grpcs://localhost:{scheduler_tls}",
                              f"--tls_certificate={certs / 'ca.pem'}", "--noremote_accept_cached",
                              "--noremote_local_fallback", "--remote_timeout=120")
        assert code == 0, out[-4000:]
        assert_all_remote(summary(out))
        print(f"bazel grpcs:// {time.time() - t:.1f} s: {summary(out)[2]}")

        # The CAS's TLS port as a remote cache: everything is there.
        bazel.clean()
        code, out = bazel.run("test", "//...", f"--remote_cache=grpcs://localhost:{cas_tls}",
                              f"--tls_certificate={certs / 'ca.pem'}", "--noremote_local_fallback")
        assert code == 0, out[-4000:]
        assert_all_remote_hits(summary(out))
    finally:
        bazel.shutdown()
        codes = layout.stop()
    assert all(c == 0 for c in codes.values()), codes


@pytest.mark.usefixtures("require_bazel")
@pytest.mark.timeout(1800)
def test_minio_profile_layout_stores_in_the_bucket(tmp_path, moto):  # noqa: F811
    """The `minio` profile as the README starts it (APUS_CAS_CONFIG=cas-minio.json), with a
    moto S3 server in MinIO's place (minio:9000) and the bucket made as minio-init does."""
    config = compose_config("minio", APUS_CAS_CONFIG="cas-minio.json")
    assert config["services"]["cas"]["command"] == ["/etc/apus/cas-minio.json"]
    init = config["services"]["minio-init"]["environment"]
    moto.make_bucket(init["APUS_S3_BUCKET"])
    certs = tmp_path / "certs"
    subprocess.run([str(COMPOSE_DIR / "make-certs.sh"), str(certs)], check=True, capture_output=True)
    layout = Layout(config, tmp_path, certs, workers=1)
    layout.ports[9000] = moto.port
    bazel = Bazel(tmp_path)
    try:
        layout.start()
        code, out = bazel.run("test", "//...", f"--remote_executor=grpc://127.0.0.1:{layout.port(50052)}",
                              "--noremote_local_fallback", "--remote_timeout=120")
        assert code == 0, out[-4000:]
        assert_all_remote(summary(out))
        keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=init["APUS_S3_BUCKET"]).get("Contents", [])]
        assert any(k.startswith("cas/") for k in keys) and any(k.startswith("ac/") for k in keys), keys
        print(f"bucket: {len(keys)} objects")
    finally:
        bazel.shutdown()
        codes = layout.stop()
    assert all(c == 0 for c in codes.values()), codes


# --- the README ------------------------------------------------------------------------------


def readme_blocks(path):
    """The fenced shell blocks preceded by `<!-- test: run -->`."""
    return re.findall(r"<!-- test: run -->\s*\n```(?:sh|bash|shell)\n(.*?)```", path.read_text(), re.S)


def test_readme_blocks_that_need_no_container_engine(tmp_path):
    """Runs them in a copy of the repository's deployment-examples (so `certs/` is not left in
    the tree), from the copy's root, as a newcomer would from a checkout."""
    blocks = readme_blocks(COMPOSE_DIR / "README.md") + readme_blocks(DOCKER_DIR / "README.md")
    assert len(blocks) >= 2, "README blocks marked <!-- test: run -->"
    root = tmp_path / "apus"
    shutil.copytree(EXAMPLES, root / "deployment-examples")
    (root / "configs").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apus").symlink_to(APUS)
    script = "set -eu\n" + "\n".join(f"(\n{b})" for b in blocks)
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    p = subprocess.run(["bash", "-c", script], cwd=root, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (root / "deployment-examples" / "docker-compose" / "certs" / "ca.pem").exists()
