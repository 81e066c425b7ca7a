"""Static checks of deployment-examples/terraform/azure (no Terraform CLI or Azure here).

hcl2 parsing and checkov run in .venv-deploy (subprocesses). The variable/output listing
comes from the shared deployment-examples/terraform/inspect.py when it exists, else from a
private fallback below that prints the same JSON; the README tables are checked by the
shared tables.py --check when it exists, else by the fallback check here. The metrics
publisher is run against a fake /status, a fake IMDS token endpoint and a fake Azure
Monitor endpoint on loopback.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "deployment-examples" / "terraform"
AZ = TF / "azure"
DEPLOY_PY = ROOT / ".venv-deploy" / "bin" / "python"
CHECKOV = ROOT / ".venv-deploy" / "bin" / "checkov"
PUBLISHER = AZ / "publisher" / "apus-metrics-publisher.py"

needs_deploy_venv = pytest.mark.skipif(not DEPLOY_PY.exists(), reason="no .venv-deploy (setup installs it)")

# Same output as deployment-examples/terraform/inspect.py DIR, for before that script exists.
FALLBACK_INSPECT = r'''
import json, re, sys
from pathlib import Path
import hcl2
def unquote(v):
    # python-hcl2 wraps attribute values in one-item lists and may keep literals' quotes.
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v
d = Path(sys.argv[1]); variables = {}; outputs = {}; refs = set()
for f in sorted(d.rglob("*.tf")):
    text = f.read_text()
    doc = hcl2.loads(text)
    for block in doc.get("variable", []):
        for name, body in block.items():
            variables[unquote(name)] = {"description": unquote(body.get("description")),
                                        "default": unquote(body.get("default")), "has_default": "default" in body}
    for block in doc.get("output", []):
        for name, body in block.items():
            outputs[unquote(name)] = {"description": unquote(body.get("description"))}
    refs.update(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", text))
print(json.dumps({"variables": variables, "outputs": outputs, "var_refs": sorted(refs)}, default=str))
'''


def inspect_tree():
    script = TF / "inspect.py"
    cmd = [str(DEPLOY_PY), str(script), str(AZ)] if script.exists() else [str(DEPLOY_PY), "-c", FALLBACK_INSPECT, str(AZ)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def tree():
    return inspect_tree()


def tf_files():
    return sorted(AZ.glob("*.tf"))


@needs_deploy_venv
def test_every_tf_file_parses_with_hcl2():
    code = "import sys, hcl2\nfor p in sys.argv[1:]:\n    hcl2.loads(open(p).read())\n"
    out = subprocess.run([str(DEPLOY_PY), "-c", code, *map(str, tf_files())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in tf_files()} >= {"versions.tf", "variables.tf", "outputs.tf", "network.tf",
                                            "scheduler.tf", "workers.tf", "autoscaling.tf", "keyvault.tf"}


@needs_deploy_venv
def test_variables_declared_and_described(tree):
    declared = set(tree["variables"])
    undeclared = set(tree["var_refs"]) - declared
    assert not undeclared, f"var.X used but not declared: {sorted(undeclared)}"
    unused = declared - set(tree["var_refs"])
    assert not unused, f"declared but never used: {sorted(unused)}"
    for name, v in tree["variables"].items():
        assert v.get("description"), f"variable {name} has no description"
    for name, o in tree["outputs"].items():
        assert o.get("description"), f"output {name} has no description"


def test_versions_pinned():
    text = (AZ / "versions.tf").read_text()
    assert re.search(r'required_version\s*=\s*">=\s*1\.5"', text)
    assert re.search(r'source\s*=\s*"hashicorp/azurerm"\s*\n\s*version\s*=\s*"~>\s*[34]\.\d+"', text)


@needs_deploy_venv
def test_readme_mentions_only_existing_outputs_and_variables(tree):
    readme = (AZ / "README.md").read_text()
    for name in re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", readme):
        assert name in tree["outputs"], f"README uses output {name}, which does not exist"
    for name in re.findall(r"^\s*([a-z_]+)\s+=\s", readme, re.M):
        if name in ("terraform",):
            continue
        assert name in tree["variables"], f"README's tfvars sets {name}, which is not a variable"


@needs_deploy_venv
def test_readme_tables(tree):
    tables = TF / "tables.py"
    if tables.exists():
        out = subprocess.run([str(DEPLOY_PY), str(tables), "--check", str(AZ)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return
    # Fallback until the shared tables.py lands: every variable and output is a row of the
    # generated section, with its description, and nothing else is.
    readme = (AZ / "README.md").read_text()
    m = re.search(r"<!-- BEGIN_TF_DOCS -->(.*)<!-- END_TF_DOCS -->", readme, re.S)
    assert m, "README has no BEGIN_TF_DOCS/END_TF_DOCS section"
    rows = {r.group(1): r.group(2) for r in re.finditer(r"^\| `([a-z0-9_]+)` \| (.*?) \|", m.group(1), re.M)}
    expected = {**{k: v["description"] for k, v in tree["variables"].items()},
                **{k: v["description"] for k, v in tree["outputs"].items()}}
    assert set(rows) == set(expected)
    for name, desc in expected.items():
        assert rows[name] == desc.replace("|", "\\|"), name


@needs_deploy_venv
def test_checkov_passes_with_explained_skips():
    out = subprocess.run([str(CHECKOV), "-d", str(AZ), "--quiet", "--compact", "--skip-download", "-o", "json"],
                         capture_output=True, text=True, timeout=180)
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = {"passed": 0, "failed": 0, "skipped": 0}
    for r in reports:
        for k in summary:
            summary[k] += r["summary"][k]
    failed = [f"{c['check_id']} {c['resource']}" for r in reports for c in r["results"].get("failed_checks", [])]
    assert not failed, failed
    assert summary["passed"] > 40, summary
    # Every skip is a `#checkov:skip=ID:reason` comment with a real reason.
    skips = re.findall(r"#checkov:skip=([A-Z0-9_]+):(.*)", "".join(p.read_text() for p in tf_files()))
    assert len(skips) == summary["skipped"]
    for check, reason in skips:
        assert len(reason.strip()) > 30, check


def test_shellcheck_scripts():
    if not shutil.which("shellcheck"):
        pytest.skip("no shellcheck")
    scripts = sorted((AZ / "scripts").glob("*.sh"))
    assert scripts
    out = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_yamllint_cloud_init():
    if not shutil.which("yamllint"):
        pytest.skip("no yamllint")
    files = sorted((AZ / "cloud-init").glob("*.yaml.tftpl"))
    assert len(files) == 2
    # `#cloud-config` is a header cloud-init requires, not a comment missing its space.
    conf = ("{extends: default, rules: {line-length: {max: 120}, document-start: disable,"
            " comments: {require-starting-space: false}}}")
    out = subprocess.run(["yamllint", "-s", "-d", conf, *map(str, files)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    for f in files:
        assert f.read_text().startswith("#cloud-config\n"), f


def test_templates_get_every_variable_they_use():
    """Each templatefile() call passes exactly the names its template interpolates."""
    sources = "".join(p.read_text() for p in tf_files())
    for tpl in sorted((AZ / "cloud-init").glob("*.tftpl")):
        used = set(re.findall(r"\$\{([a-z_]+)\}", tpl.read_text()))
        pattern = r'templatefile\("\$\{path\.module\}/cloud-init/' + re.escape(tpl.name) + '", '
        calls = [m.end() for m in re.finditer(pattern, sources)]
        assert calls, f"{tpl.name} is never rendered"
        for i in calls:
            assert sources[i] == "{"
            # Walk the object literal (braces balance, `${...}` included); keys at depth 1.
            depth, keys, j = 0, set(), i
            while True:
                c = sources[j]
                if depth == 1 and (j == i + 1 or sources[j - 1] == "\n"):
                    key = re.match(r"\s*([a-z_]+)\s*=", sources[j:])
                    if key:
                        keys.add(key.group(1))
                depth += {"{": 1, "}": -1}.get(c, 0)
                if depth == 0:
                    break
                j += 1
            assert used == keys, (tpl.name, sorted(used ^ keys))


class _Recorder(BaseHTTPRequestHandler):
    requests = []
    status = {}

    def log_message(self, *args):
        pass

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append(("GET", self.path, dict(self.headers), None))
        if self.path == "/status":
            if self.headers.get("Authorization") != "Bearer ops-secret":
                return self._reply(401, {"error": "unauthenticated"})
            return self._reply(200, self.status)
        if self.path.startswith("/metadata/identity/oauth2/token"):
            if self.headers.get("Metadata") != "true":
                return self._reply(400, {"error": "Metadata header missing"})
            return self._reply(200, {"access_token": "fake-monitor-token", "token_type": "Bearer"})
        self._reply(404, {})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append(("POST", self.path, dict(self.headers), json.loads(body)))
        self._reply(200, {})


def test_publisher_posts_desired_workers_and_gap(tmp_path):
    _Recorder.requests = []
    _Recorder.status = {
        "schema_version": 1,
        "schedulers": {
            "main": {"queued": 30, "running": 8, "desired_workers": 5,
                     "workers": [{"id": "w1", "slots": 8}, {"id": "w2", "slots": 8}]},
            "other": {"queued": 0, "running": 0, "desired_workers": 1, "workers": []},
        },
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    token_file = tmp_path / "ops-token"
    token_file.write_text("ops-secret\n")
    resource = "/subscriptions/s/resourceGroups/apus-rg/providers/Microsoft.Compute/virtualMachines/apus-server"
    env = {
        "PATH": os.environ["PATH"],
        "APUS_STATUS_URL": base + "/status",
        "APUS_STATUS_TOKEN_FILE": str(token_file),
        "AZURE_TOKEN_URL": base + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
        "AZURE_METRICS_URL": base + resource + "/metrics",
    }
    try:
        out = subprocess.run([sys.executable, str(PUBLISHER)], env=env, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    assert "desired_workers=6 connected=2" in out.stdout
    posts = [r for r in _Recorder.requests if r[0] == "POST"]
    assert [p[1] for p in posts] == [resource + "/metrics"] * 2
    for _, _, headers, _ in posts:
        assert headers["Authorization"] == "Bearer fake-monitor-token"
        assert headers["Content-Type"] == "application/json"
    bodies = {p[3]["data"]["baseData"]["metric"]: p[3] for p in posts}
    assert set(bodies) == {"desired_workers", "worker_gap"}
    for name, value in (("desired_workers", 6), ("worker_gap", 4)):
        body = bodies[name]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["time"])
        assert body["data"]["baseData"]["namespace"] == "apus"
        assert body["data"]["baseData"]["series"] == [{"min": value, "max": value, "sum": value, "count": 1}]
    # The autoscale rules read the metric the publisher posts, in its namespace, on that VM.
    autoscale = (AZ / "autoscaling.tf").read_text()
    assert autoscale.count('metric_name        = "worker_gap"') == 2
    assert autoscale.count('metric_namespace   = "apus"') == 2


def test_publisher_fails_without_metrics_url():
    out = subprocess.run([sys.executable, str(PUBLISHER)], env={"PATH": os.environ["PATH"]},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "AZURE_METRICS_URL" in out.stderr


def test_scale_in_drain_script_compiles_and_its_unit_passes_systemd_analyze(tmp_path):
    """lifecycle/: apus-scheduled-events.py (exercised in test_deploy_scale_in.py) and its
    unit: verify clean, security exposure <= 2.5 (a dynamic user with the token as a credential)."""
    script = AZ / "lifecycle" / "apus-scheduled-events.py"
    compile(script.read_text(), str(script), "exec")
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "apus-scheduled-events.service"
    # verify wants ExecStart's program to exist on this machine.
    unit.write_text((AZ / "lifecycle" / unit.name).read_text().replace(
        "/usr/bin/python3 /usr/local/libexec/apus-scheduled-events", "/usr/bin/true"))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    out = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout).group(1))
    print(f"systemd-analyze security apus-scheduled-events.service: {score}")
    assert score <= 2.5
