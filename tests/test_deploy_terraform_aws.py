"""Static checks of deployment-examples/terraform/aws and a test of its CloudWatch publisher.

No Terraform CLI or AWS account here: the tree is parsed with python-hcl2 (inspect.py),
scanned with checkov, its README tables compared with tables.py, its cloud-init templates
rendered (a small stand-in for templatefile) and checked with yamllint, shellcheck and
`apus check`, and the desired-workers publisher is run against moto's CloudWatch and a fake
/status. The scheduler pair's database (database.tf) is checked from the parsed HCL: RDS
PostgreSQL 15, Multi-AZ by default, encrypted with the tree's key, private, TLS forced,
reachable from the scheduler hosts' security group only. hcl2 and checkov live in .venv-deploy and run as subprocesses.
"""
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from conftest import APUS, ROOT
from s3server import CREDENTIALS, MotoServer
from tlscerts import CertificateAuthority

TF = ROOT / "deployment-examples" / "terraform"
AWS = TF / "aws"
DEPLOY_PY = ROOT / ".venv-deploy" / "bin" / "python"
CHECKOV = ROOT / ".venv-deploy" / "bin" / "checkov"
PUBLISHER = AWS / "publisher" / "apus-desired-workers.py"
HELPER = AWS / "cloud-init" / "apus-aws-helper.py"
LIFECYCLE = AWS / "lifecycle" / "apus-lifecycle.py"


def need(path):
    if not Path(path).exists():
        pytest.skip(f"{path} is not installed (setup makes it)")


@pytest.fixture(scope="module")
def tree():
    need(DEPLOY_PY)
    out = subprocess.run([str(DEPLOY_PY), str(TF / "inspect.py"), str(AWS)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


# --- 1, 2: every file parses; variables and outputs are declared and described -------------

def test_every_tf_file_parses(tree):
    assert tree["errors"] == {}
    assert {"versions.tf", "variables.tf", "outputs.tf", "network.tf", "storage.tf", "iam.tf",
            "scheduler.tf", "workers.tf", "autoscaling.tf", "database.tf"} <= set(tree["files"])


def test_every_variable_used_is_declared_and_described(tree):
    assert set(tree["var_refs"]) - set(tree["variables"]) == set()
    assert set(tree["variables"]) - set(tree["var_refs"]) == set(), "declared but never used"
    for name, v in {**tree["variables"], **tree["outputs"]}.items():
        assert v["description"] and len(v["description"]) > 10, name


def test_variables_live_in_variables_tf_and_outputs_in_outputs_tf(tree):
    assert {v["file"] for v in tree["variables"].values()} == {"variables.tf"}
    assert {o["file"] for o in tree["outputs"].values()} == {"outputs.tf"}


def test_versions_are_pinned():
    text = (AWS / "versions.tf").read_text()
    assert re.search(r'required_version\s*=\s*">= 1\.5', text)
    assert re.search(r'hashicorp/aws"\s*\n\s*version\s*=\s*"~> 5\.', text)


def test_terraform_fmt_when_a_cli_is_here():
    """`terraform fmt` needs no providers; validate and plan do, and the registry is out of reach."""
    terraform = shutil.which("terraform")
    version = subprocess.run([terraform, "version"], capture_output=True, text=True, cwd="/tmp",
                             timeout=30) if terraform else None
    if not version or version.returncode != 0 or not version.stdout.startswith("Terraform v"):
        pytest.skip("no Terraform CLI")
    out = subprocess.run([terraform, "fmt", "-check", "-diff", "-recursive"], cwd=AWS, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_outputs_the_readmes_name_exist(tree):
    readme = (AWS / "README.md").read_text()
    named = set(re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", readme))
    assert named, "the README uses no output"
    assert named - set(tree["outputs"]) == set()


# --- 3: checkov --------------------------------------------------------------------------

def test_checkov_passes_and_every_skip_has_a_reason():
    need(CHECKOV)
    t = time.monotonic()
    out = subprocess.run([str(CHECKOV), "-d", str(AWS), "--quiet", "--compact", "-o", "json"],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = {k: sum(r["summary"][k] for r in reports) for k in ("passed", "failed", "skipped")}
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    print(f"checkov: {summary} in {time.monotonic() - t:.1f}s")
    assert failed == [] and summary["failed"] == 0
    assert summary["passed"] > 100
    for path in AWS.rglob("*.tf"):
        for m in re.finditer(r"#\s*checkov:skip=([A-Z0-9_]+)(:?)(.*)", path.read_text()):
            assert m.group(2) == ":" and len(m.group(3).strip()) > 20, f"{path.name}: {m.group(1)} has no reason"


# --- 4: the README's tables are the generated ones ------------------------------------------

def test_readme_tables_are_generated():
    need(DEPLOY_PY)
    out = subprocess.run([str(DEPLOY_PY), str(TF / "tables.py"), "--check", str(AWS)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# --- 5: the cloud-init templates, rendered, pass yamllint, shellcheck and apus check ---------

SAMPLE_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def render(template, values):
    """templatefile for the subset the templates use: ${name}, ${indent(n, name)}, $${."""
    def sub(m):
        expr = m.group(1).strip()
        ind = re.fullmatch(r"indent\((\d+),\s*(\w+)\)", expr)
        if ind:
            pad = " " * int(ind.group(1))
            return str(values[ind.group(2)]).rstrip("\n").replace("\n", "\n" + pad)
        return str(values[expr])
    text = template.read_text()
    missing = set(re.findall(r"(?<!\$)\$\{(?:indent\(\d+,\s*)?(\w+)\)?\}", text)) - set(values)
    assert missing == set(), f"{template.name} uses undefined template variables {missing}"
    return re.sub(r"(?<!\$)\$\{([^}\n]*)\}", sub, text).replace("$${", "${")


NLB_LISTENER = json.dumps({"listen": "0.0.0.0:50052", "instances": {"": {"cas": "cas", "action_cache": "ac",
                                                                           "execution": "main"}}})


PG_URL = ("postgres://apus@apus-scheduler-state.abc123.eu-west-1.rds.amazonaws.com:5432/apus"
          "?sslmode=verify-full&sslrootcert=/etc/apus/tls/rds-ca.pem")
# As Terraform's jsonencode writes it: "&" becomes \u0026 (it escapes <, > and & for HTML).
SHARED_STATE = json.dumps({"state": {"postgres": {"password": "${APUS_PG_PASSWORD}", "url": PG_URL}}},
                          separators=(",", ":")).replace("&", "\\u0026")


def scheduler_values(nlb_listener=NLB_LISTENER, shared=True):
    """What scheduler.tf passes: by default two or more hosts (state in PostgreSQL)."""
    return {"nlb_listener": nlb_listener,
        "scheduler_settings": SHARED_STATE if shared else "{}",
        "database_password_parameter": "/apus/scheduler/database-password" if shared else "",
        "rds_ca_bundle_url": "https://truststore.pki.rds.amazonaws.com/eu-west-1/eu-west-1-bundle.pem",
        "worker_slots": 8,
        "release_url": "https://example.com/apus.tar.gz", "release_sha256": "0" * 64, "region": "eu-west-1",
        "bucket": "apus-cache-123", "disk_tier_bytes": 171798691840, "ca_cert_pem": SAMPLE_PEM,
        "server_cert_pem": SAMPLE_PEM, "tls_key_parameter": "/apus/scheduler/tls-private-key",
        "token_file": f"{'a' * 64} ci\n{'b' * 64} worker",
        "auth_instances": json.dumps({"*": {"ci": ["read", "write", "write_ac", "execute"],
                                            "worker": ["read", "write", "write_ac"]}}),
        "aws_helper": HELPER.read_text(),
        "publisher_script": PUBLISHER.read_text(),
        "publisher_service": (AWS / "publisher" / "apus-desired-workers.service").read_text(),
        "publisher_timer": (AWS / "publisher" / "apus-desired-workers.timer").read_text(),
        "autoscaling_group": "apus-workers", "scale_in_delay_seconds": 600,
    }


def worker_values():
    return {"release_url": "s3://releases/apus.tar.gz", "release_sha256": "0" * 64, "scheduler_host": "apusw-0123.elb.eu-west-1.amazonaws.com",
            "server_name": "scheduler.apus.internal", "ca_cert_pem": SAMPLE_PEM,
            "token_parameter": "/apus/tokens/worker", "slots": 8, "cache_bytes": 53687091200,
            "aws_helper": HELPER.read_text(), "lifecycle_script": LIFECYCLE.read_text(),
            "lifecycle_service": (AWS / "lifecycle" / "apus-lifecycle.service").read_text(),
            "autoscaling_group": "apus-workers", "lifecycle_hook": "apus-worker-drain",
            "drain_timeout_seconds": 3600, "region": "eu-west-1"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    d = tmp_path_factory.mktemp("cloud-init")
    out = {}
    for name, values in (("scheduler", scheduler_values()), ("scheduler-nlb-tls", scheduler_values("")),
                         ("scheduler-single", scheduler_values(shared=False)), ("worker", worker_values())):
        path = d / f"{name}.yaml"
        path.write_text(render(AWS / "cloud-init" / f"{name.split('-')[0]}.yaml.tftpl", values))
        out[name] = path
    return out


def test_user_data_fits_ec2s_16_kib_once_gzipped(rendered):
    """Terraform sends it through base64gzip(); real certificates are ~600 bytes more each."""
    import gzip
    for name, path in rendered.items():
        size = len(gzip.compress(path.read_bytes()))
        assert size + 4096 < 16384, (name, size)
    for tf in ("scheduler.tf", "workers.tf"):
        assert "base64gzip(local." in (AWS / tf).read_text()


def test_terraform_passes_every_template_variable():
    """The keys each templatefile() call passes are the ones its template uses."""
    for tf, template in (("scheduler.tf", "scheduler.yaml.tftpl"), ("workers.tf", "worker.yaml.tftpl")):
        text = (AWS / tf).read_text()
        call = text[text.index(f'cloud-init/{template}"'):]
        call = call[:call.index("\n  })")]
        passed = set(re.findall(r"^    (\w+)\s*=", call, re.M))
        used = set(re.findall(r"(?<!\$)\$\{(?:indent\(\d+,\s*)?(\w+)\)?\}", (AWS / "cloud-init" / template).read_text()))
        assert passed == used, (tf, passed ^ used)


def test_cloud_init_is_yaml_that_yamllint_accepts(rendered):
    yamllint = shutil.which("yamllint")
    if not yamllint:
        pytest.skip("yamllint is not installed")
    # Terraform's indent() pads the blank lines of embedded scripts, hence trailing spaces;
    # runcmd's shell one-liners are long.
    conf = ("{extends: default, rules: {line-length: {max: 300}, trailing-spaces: disable, document-start: disable,"
            " comments: {min-spaces-from-content: 1}}}")
    for name, path in rendered.items():
        out = subprocess.run([yamllint, "-d", conf, str(path)], capture_output=True, text=True)
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"
        assert path.read_text().startswith("#cloud-config\n")


def cloud_config(path):
    import yaml  # noqa: PLC0415 - pyyaml comes with moto
    return yaml.safe_load(path.read_text())


def test_cloud_init_shell_commands_pass_shellcheck(rendered, tmp_path):
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed")
    scripts = []
    for name, path in rendered.items():
        for cmd in cloud_config(path)["runcmd"]:
            if cmd[:2] == ["sh", "-c"]:
                scripts.append(cmd[2])
    assert len(scripts) >= 4
    for i, script in enumerate(scripts):
        f = tmp_path / f"runcmd-{i}.sh"
        f.write_text("#!/bin/sh\n" + script + "\n")
        out = subprocess.run([shellcheck, "-s", "sh", str(f)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("directory,units", [
    ("publisher", ("apus-desired-workers.service", "apus-desired-workers.timer")),
    ("lifecycle", ("apus-lifecycle.service",)),
])
def test_units_pass_systemd_analyze(tmp_path, directory, units):
    """The publisher's (scheduler host) and the scale-in drain service's (workers)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    for name in units:
        text = (AWS / directory / name).read_text()
        # verify wants ExecStart's binary and the environment file to exist on this machine.
        text = text.replace("/usr/local/libexec/apus/apus-desired-workers", "/usr/bin/true").replace(
            "/usr/bin/python3 /usr/local/libexec/apus/apus-lifecycle", "/usr/bin/true").replace(
            "EnvironmentFile=/", "EnvironmentFile=-/")
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name) for name in units]
    out = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    out = subprocess.run([analyze, "security", "--offline=yes", paths[0]], capture_output=True, text=True, timeout=60)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout).group(1))
    print(f"systemd-analyze security {units[0]}: {score}")
    assert score <= 2.5


def test_python_scripts_compile():
    for path in (PUBLISHER, HELPER, LIFECYCLE, TF / "inspect.py", TF / "tables.py"):
        compile(path.read_text(), str(path), "exec")


def test_cloud_init_installs_the_systemd_layout_it_names(rendered):
    """The units and install.sh flags cloud-init relies on are the systemd layout's."""
    for name, path in rendered.items():
        cfg = cloud_config(path)
        install = [c for c in cfg["runcmd"] if isinstance(c, list) and str(c[0]).endswith("systemd/install.sh")]
        assert len(install) == 1 and "--no-enable" in install[0], name
        paths = {f["path"] for f in cfg["write_files"]}
        assert f"/etc/apus/{name.split('-')[0]}.json" in paths  # written before install.sh, which keeps it
    systemd = ROOT / "deployment-examples" / "systemd"
    if (systemd / "install.sh").exists():
        text = (systemd / "install.sh").read_text()
        for flag in ("--roles", "--workers", "--no-enable"):
            assert flag in text
        assert (systemd / "units" / "apus-scheduler.service").exists()
        assert (systemd / "units" / "apus-worker@.service").exists()


def apus_binary():
    apus = APUS if APUS.exists() else Path("/work/main/.build/debug/apus")
    if not apus.exists():
        pytest.skip("no apus binary (swift build)")
    return apus


def apus_check(apus, rendered, name, tmp_path, env=None):
    """`apus check` on the Apus config a rendered cloud-init writes, with /etc/apus and
    /var/lib/apus moved under tmp_path and real TLS files in place."""
    etc = tmp_path / "etc"
    if not (etc / "tls" / "server.pem").exists():
        ca = CertificateAuthority(tmp_path / "ca")
        cert, key = ca.issue("server", "scheduler.apus.internal", dns=["scheduler.apus.internal"])
        (etc / "tls").mkdir(parents=True)
        shutil.copy(cert, etc / "tls" / "server.pem")
        shutil.copy(key, etc / "tls" / "server.key")
        shutil.copy(ca.cert, etc / "tls" / "ca.pem")
        shutil.copy(ca.cert, etc / "tls" / "rds-ca.pem")  # stands in for the RDS bundle fetched at boot
        (etc / "worker-token").write_text("t" * 40 + "\n")
    path = rendered[name]
    files = {f["path"]: f["content"] for f in cloud_config(path)["write_files"]}
    if "/etc/apus/tokens" in files:
        (etc / "tokens").write_text(files["/etc/apus/tokens"])
    config = files[f"/etc/apus/{name.split('-')[0]}.json"].replace("/etc/apus", str(etc)).replace(
        "/var/lib/apus", str(tmp_path / "var"))
    (tmp_path / f"{name}.json").write_text(config)
    environ = {k: v for k, v in os.environ.items() if k != "APUS_PG_PASSWORD"}
    environ.update(env or {})
    return subprocess.run([str(apus), "check", str(tmp_path / f"{name}.json")], capture_output=True, text=True,
                          timeout=60, env=environ)


def test_rendered_apus_configs_pass_apus_check(rendered, tmp_path):
    """One scheduler host (state in memory) and the worker."""
    apus = apus_binary()
    for name in ("scheduler-single", "worker"):
        out = apus_check(apus, rendered, name, tmp_path)
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"


def test_rendered_shared_state_configs_pass_apus_check(rendered, tmp_path):
    """Two or more hosts: schedulers.main.state.postgres, the password from the environment
    file cloud-init writes (never in the config itself)."""
    apus = apus_binary()
    for name in ("scheduler", "scheduler-nlb-tls"):
        out = apus_check(apus, rendered, name, tmp_path, {"APUS_PG_PASSWORD": "s3cret"})
        if "schedulers.main.state: unknown key" in out.stderr:
            pytest.skip(f"{apus} predates scheduler state in PostgreSQL (issue 14, branch sched-pg): "
                        "run with APUS_BIN set to a binary that has it")
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"
        assert "PostgreSQL" in out.stdout and "verify-full" in out.stdout, out.stdout
        assert "s3cret" not in rendered[name].read_text()
        out = apus_check(apus, rendered, name, tmp_path)
        assert out.returncode != 0 and "APUS_PG_PASSWORD" in out.stderr, out.stdout + out.stderr


def runcmd_script(path, needle):
    """The runcmd shell lines that mention `needle`, joined in their order."""
    scripts = [c[2] for c in cloud_config(path)["runcmd"] if c[:2] == ["sh", "-c"] and needle in c[2]]
    assert scripts, needle
    return "\n".join(f"( {s} )" for s in scripts)


@pytest.mark.parametrize("name,shared", [("scheduler", True), ("scheduler-single", False)])
def test_boot_writes_the_database_password_only_with_shared_state(rendered, tmp_path, name, shared):
    """The rendered runcmd line, run with /etc/apus under tmp_path, a stand-in aws-helper
    (SSM) and a stand-in curl (the RDS CA bundle download): the password lands in the
    scheduler unit's optional EnvironmentFile, mode 0600, and the CA bundle is world-readable."""
    script = runcmd_script(rendered[name], "set -eu; p='")
    etc, bin_dir = tmp_path / "etc", tmp_path / "bin"
    (etc / "tls").mkdir(parents=True)
    bin_dir.mkdir()
    helper = bin_dir / "aws-helper"
    helper.write_text('#!/bin/sh\n[ "$1 $2" = "get-parameter /apus/scheduler/database-password" ] || exit 9\n'
                      'echo pg-pass-123\n')
    curl = bin_dir / "curl"
    curl.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\necho "$3" > "$2"\n')
    for f in (helper, curl):
        f.chmod(0o755)
    script = script.replace("/usr/local/libexec/apus/aws-helper", str(helper)).replace("/etc/apus", str(etc))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    if not shared:
        assert not (etc / "scheduler.env").exists() and not (etc / "tls" / "rds-ca.pem").exists()
        return
    assert (etc / "scheduler.env").read_text() == "APUS_PG_PASSWORD=pg-pass-123\n"
    assert (etc / "scheduler.env").stat().st_mode & 0o777 == 0o600
    ca = etc / "tls" / "rds-ca.pem"
    assert ca.read_text().strip() == "https://truststore.pki.rds.amazonaws.com/eu-west-1/eu-west-1-bundle.pem"
    assert ca.stat().st_mode & 0o777 == 0o644
    # The unit reads that file, and the config names the bundle it verifies the server with.
    unit = ROOT / "deployment-examples" / "systemd" / "units" / "apus-scheduler.service"
    if unit.exists():
        assert "EnvironmentFile=-/etc/apus/scheduler.env" in unit.read_text()
    files = {f["path"]: f["content"] for f in cloud_config(rendered[name])["write_files"]}
    assert "sslrootcert=/etc/apus/tls/rds-ca.pem" in files["/etc/apus/scheduler.json"]


def test_workers_dial_every_scheduler_through_the_internal_nlb(rendered):
    files = {f["path"]: f["content"] for f in cloud_config(rendered["worker"])["write_files"]}
    config = files["/etc/apus/worker.json"]
    assert '"scheduler": "grpcs://apusw-0123.elb.eu-west-1.amazonaws.com:50051"' in config
    assert '"cas": "grpcs://apusw-0123.elb.eu-west-1.amazonaws.com:50051"' in config
    assert '"server_name": "scheduler.apus.internal"' in config
    assert re.search(r"scheduler_host\s*=\s*aws_lb\.workers\.dns_name", (AWS / "workers.tf").read_text())


# --- the scheduler pair and its database, from the parsed HCL --------------------------------

def hcl(name):
    need(DEPLOY_PY)
    script = ("import hcl2, json, sys; print(json.dumps(hcl2.loads(open(sys.argv[1]).read()), default=str))")
    out = subprocess.run([str(DEPLOY_PY), "-c", script, str(AWS / name)], capture_output=True, text=True,
                         check=True, timeout=60, cwd="/")
    return json.loads(out.stdout)


def value(v):
    while isinstance(v, list) and len(v) == 1:
        v = v[0]
    return v


def resource(doc, rtype, name):
    (body,) = [b[rtype][name] for b in doc.get("resource", []) if rtype in b and name in b[rtype]]
    return body


def test_database_is_private_encrypted_multi_az_and_forces_tls(tree):
    db_tf = hcl("database.tf")
    db = resource(db_tf, "aws_db_instance", "state")
    assert value(db["count"]) == "${local.shared_state ? 1 : 0}"
    assert (value(db["engine"]), value(db["engine_version"])) == ("postgres", "15")
    assert value(db["storage_encrypted"]) is True and value(db["kms_key_id"]) == "${local.kms_key_arn}"
    assert value(db["publicly_accessible"]) is False
    assert value(db["multi_az"]) == "${var.database_multi_az}"
    assert value(db["deletion_protection"]) == "${var.database_deletion_protection}"
    assert value(db["skip_final_snapshot"]) == "${!var.database_final_snapshot}"
    assert value(db["backup_retention_period"]) == "${var.database_backup_retention_days}"
    assert value(db["vpc_security_group_ids"]) == "${aws_security_group.database[0].id}"
    assert "manage_master_user_password" not in db  # see database.tf: a rotation would lock Apus out
    variables = tree["variables"]
    assert variables["database_multi_az"]["default"] is True
    assert variables["database_deletion_protection"]["default"] is True
    assert variables["scheduler_count"]["default"] == 2
    params = resource(db_tf, "aws_db_parameter_group", "state")
    assert value(params["family"]) == "postgres15"
    forced = {value(p["name"]): value(p["value"]) for p in params["parameter"]}
    assert forced["rds.force_ssl"] == "1"
    subnets = resource(db_tf, "aws_db_subnet_group", "state")
    assert value(subnets["subnet_ids"]) == "${aws_subnet.private[*].id}"
    password = resource(db_tf, "aws_ssm_parameter", "database_password")
    assert (value(password["type"]), value(password["key_id"])) == ("SecureString", "${local.kms_key_arn}")
    # The scheduler's config is built with sslmode=verify-full and the password from the environment.
    scheduler_tf = (AWS / "scheduler.tf").read_text()
    assert "sslmode=verify-full&sslrootcert=/etc/apus/tls/rds-ca.pem" in scheduler_tf
    assert 'password = "$${APUS_PG_PASSWORD}"' in scheduler_tf


def test_only_the_scheduler_hosts_reach_the_database():
    net = hcl("network.tf")
    sg = resource(net, "aws_security_group", "database")
    (ingress,) = sg["ingress"]
    assert (value(ingress["from_port"]), value(ingress["to_port"])) == (5432, 5432)
    assert value(ingress["security_groups"]) == "${aws_security_group.scheduler.id}"
    assert "cidr_blocks" not in ingress and "egress" not in sg
    # And the admin port (health checks) only from the two NLBs.
    scheduler = resource(net, "aws_security_group", "scheduler")
    admin = [i for i in scheduler["ingress"] if value(i["from_port"]) == 9091]
    assert len(admin) == 1 and "cidr_blocks" not in admin[0]
    assert value(admin[0]["security_groups"]) == ["${aws_security_group.nlb.id}",
                                                   "${aws_security_group.worker_nlb.id}"]
    grpc = [i for i in scheduler["ingress"] if value(i["from_port"]) == 50051]
    assert [value(i["security_groups"]) for i in grpc] == ["${aws_security_group.worker_nlb.id}"]


def test_the_scheduler_role_reads_the_database_password_and_nothing_else_new():
    iam = (AWS / "iam.tf").read_text()
    block = iam[iam.index('sid       = "DatabasePassword"'):]
    block = block[:block.index("}")]
    assert '["ssm:GetParameter"]' in block and "[aws_ssm_parameter.database_password[0].arn]" in block
    assert "secretsmanager" not in iam


def test_scheduler_hosts_spread_over_zones_behind_both_nlbs_checked_on_readyz(rendered):
    sched = hcl("scheduler.tf")
    inst = resource(sched, "aws_instance", "scheduler")
    assert value(inst["count"]) == "${var.scheduler_count}"
    assert value(inst["subnet_id"]) == "${aws_subnet.private[count.index % length(local.azs)].id}"
    assert "private_ip" not in inst  # hosts may come and go; the certificate names no address
    for tg, attachment in (("scheduler", "scheduler"), ("workers", "workers")):
        check = value(resource(sched, "aws_lb_target_group", tg)["health_check"])
        assert (value(check["protocol"]), value(check["port"]), value(check["path"])) == ("HTTP", "9091", "/readyz")
        att = resource(sched, "aws_lb_target_group_attachment", attachment)
        assert value(att["count"]) == "${var.scheduler_count}"
    internal = resource(sched, "aws_lb", "workers")
    assert value(internal["internal"]) is True and value(internal["subnets"]) == "${aws_subnet.private[*].id}"
    listener = resource(sched, "aws_lb_listener", "workers")
    assert (value(listener["port"]), value(listener["protocol"])) == (50051, "TCP")
    # The health check reaches the admin listener: not on loopback any more.
    for name in ("scheduler", "scheduler-single"):
        files = {f["path"]: f["content"] for f in cloud_config(rendered[name])["write_files"]}
        assert '"admin": { "listen": "0.0.0.0:9091"' in files["/etc/apus/scheduler.json"]
        assert "APUS_SLOTS_PER_WORKER=8" in files["/etc/apus/desired-workers.env"]


def test_step_scaling_bounds_cover_every_fleet_size():
    """autoscaling.tf's step formula, replayed: contiguous steps, at most 20, never below the
    desired value (up to max_workers) and never above max_workers."""
    import math
    for max_workers in (1, 2, 10, 19, 20, 37, 100, 500):
        count = min(max_workers, 19)
        bounds = list(dict.fromkeys(math.ceil(k * max_workers / count) for k in range(count + 1)))
        steps = [(bounds[i], bounds[i + 1], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
        steps.append((max_workers, None, max_workers))
        assert len(steps) <= 20 and bounds[0] == 0
        for desired in range(0, max_workers + 3):
            (lo, hi, cap), = [s for s in steps if s[0] <= desired and (s[1] is None or desired < s[1])]
            assert min(desired, max_workers) <= cap <= max_workers
            if max_workers <= 19:
                assert cap == min(desired, max_workers)


# --- the publisher against moto --------------------------------------------------------------

class FakeStatus:
    """A /status endpoint on loopback whose body the test sets."""

    def __init__(self):
        self.body = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = json.dumps(outer.body).encode()
                self.send_response(200 if self.path == "/status" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/status"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def status(**desired):
    return {"schema_version": 1, "ready": True, "schedulers": {
        name: {"queued": d * 4, "running": 0, "desired_workers": d, "platforms": [], "workers": []}
        for name, d in desired.items()}}


@pytest.fixture
def cloudwatch(tmp_path):
    moto = MotoServer(tmp_path).start()
    fake = FakeStatus()
    client = boto3.client("cloudwatch", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    yield moto, fake, client
    fake.close()
    moto.stop()


def publish(moto, fake, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ.update(CREDENTIALS, AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=moto.endpoint,
                   APUS_STATUS_URL=fake.url, APUS_METRIC_DIMENSION="apus-workers",
                   APUS_STATE_FILE=str(tmp_path / "state" / "history.json"))
    environ.update(env)
    return subprocess.run([sys.executable, str(PUBLISHER)], env=environ, capture_output=True, text=True, timeout=60)


def datapoints(client):
    now = time.time()
    res = client.get_metric_data(
        MetricDataQueries=[{"Id": "d", "MetricStat": {
            "Metric": {"Namespace": "Apus", "MetricName": "DesiredWorkers",
                       "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "apus-workers"}]},
            "Period": 60, "Stat": "Maximum"}}],
        StartTime=now - 600, EndTime=now + 600)
    return res["MetricDataResults"][0]["Values"]


def test_publisher_puts_desired_workers_into_cloudwatch(cloudwatch, tmp_path):
    moto, fake, client = cloudwatch
    fake.body = status(main=3)
    out = publish(moto, fake, tmp_path, APUS_SCHEDULER_NAME="main")
    assert out.returncode == 0, out.stderr
    assert "desired_workers=3 published=3" in out.stdout
    metrics = client.list_metrics(Namespace="Apus")["Metrics"]
    assert [(m["MetricName"], m["Dimensions"]) for m in metrics] == [
        ("DesiredWorkers", [{"Name": "AutoScalingGroupName", "Value": "apus-workers"}])]
    assert datapoints(client) == [3.0]


def test_publisher_sums_schedulers_and_delays_scale_in(cloudwatch, tmp_path):
    moto, fake, client = cloudwatch
    fake.body = status(a=2, b=5)
    out = publish(moto, fake, tmp_path)
    assert out.returncode == 0 and "desired_workers=7 published=7" in out.stdout, out.stderr
    fake.body = status(a=0, b=1)  # the queue drains: within the delay the fleet keeps its size
    out = publish(moto, fake, tmp_path)
    assert "desired_workers=1 published=7" in out.stdout, out.stdout + out.stderr
    out = publish(moto, fake, tmp_path, APUS_SCALE_IN_DELAY_SECONDS="0")  # delay over
    assert "desired_workers=1 published=1" in out.stdout, out.stdout + out.stderr


def test_publisher_puts_nothing_when_status_is_unreadable(cloudwatch, tmp_path):
    moto, fake, client = cloudwatch
    out = publish(moto, fake, tmp_path, APUS_STATUS_URL=fake.url.replace("/status", "/nope"))
    assert out.returncode == 1 and "cannot read" in out.stderr
    fake.body = status(main=2)
    out = publish(moto, fake, tmp_path, APUS_SCHEDULER_NAME="other")
    assert out.returncode == 1 and "no scheduler 'other'" in out.stderr
    out = publish(moto, fake, tmp_path, APUS_METRIC_DIMENSION="")
    assert out.returncode == 2
    assert client.list_metrics(Namespace="Apus")["Metrics"] == []


def test_publisher_counts_from_the_shared_queue_with_slots_per_worker(cloudwatch, tmp_path):
    """Two scheduler hosts on one PostgreSQL both see the whole queue but only their own
    workers: Apus's own desired_workers differs between them (a host without workers counts
    one slot each). With APUS_SLOTS_PER_WORKER both publish the same figure, per platform."""
    moto, fake, client = cloudwatch
    load = {"queued": 30, "running": 12, "platforms": [
        {"platform": {"OSFamily": "linux"}, "queued": 20, "running": 9, "desired_workers": 29},
        {"platform": {"OSFamily": "linux", "cpu_count": "16"}, "queued": 10, "running": 3, "desired_workers": 13}]}
    published = []
    for host, own in (("a", 42), ("b", 6)):  # b has the workers, a has none
        fake.body = {"schema_version": 1, "ready": True, "schedulers": {"main": dict(load, desired_workers=own)}}
        out = publish(moto, fake, tmp_path / host, APUS_SCHEDULER_NAME="main", APUS_SLOTS_PER_WORKER="8")
        assert out.returncode == 0, out.stderr
        published.append(out.stdout)
    # ceil(29 / 8) + ceil(13 / 8) = 4 + 2
    assert all("desired_workers=6 published=6" in o for o in published), published
    assert set(datapoints(client)) == {6.0}  # one or two datapoints (moto may not merge the minute)
    fake.body = status(main=3)  # no platform rows: the scheduler's totals (12 queued) / 8
    out = publish(moto, fake, tmp_path / "c", APUS_SLOTS_PER_WORKER="8")
    assert "desired_workers=2 published=2" in out.stdout, out.stdout + out.stderr
    out = publish(moto, fake, tmp_path / "d", APUS_SLOTS_PER_WORKER="eight")
    assert out.returncode == 2 and "APUS_SLOTS_PER_WORKER" in out.stderr
