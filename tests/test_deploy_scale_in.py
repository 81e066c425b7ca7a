"""Scale-in drains workers: the AWS lifecycle script (terraform/aws/lifecycle/apus-lifecycle.py)
and the Azure Scheduled Events script (terraform/azure/lifecycle/apus-scheduled-events.py)
run against a real apus scheduler + CAS process and a real apus worker process with its admin
listener, while the worker runs a 3-second action and a second action waits in the queue.

There is no instance metadata service here, so each cloud's is a stand-in HTTP server on
loopback serving exactly the documented documents: IMDSv2's session token, instance-id and
autoscaling/target-lifecycle-state; Azure's compute/name and scheduledevents (GET, and POST
with StartRequests), both requiring their headers. The AWS Auto Scaling group and its
termination hook are made in moto through boto3; moto 5.2.5 does not implement
CompleteLifecycleAction or RecordLifecycleActionHeartbeat, so those two requests go to a
loopback endpoint that checks each against moto's group, hook and instance and records it.
At the moment the lifecycle action is completed (or the event approved) the stand-ins take a
snapshot of the action cache and the scheduler, which is what the tests assert on.
"""
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import grpc
import pytest

from admin import http_get_json, wait_status
from conftest import ROOT, ApusProcess, free_port
from execution import Action
from reapi import re_grpc, re_pb2
from s3server import CREDENTIALS, MotoServer

TF = ROOT / "deployment-examples" / "terraform"
AWS_SCRIPT = TF / "aws" / "lifecycle" / "apus-lifecycle.py"
AZURE_SCRIPT = TF / "azure" / "lifecycle" / "apus-scheduled-events.py"
ACTION_SECONDS = 3
GROUP, HOOK = "apus-workers", "apus-worker-drain"
VM_NAME = "apus-workers_3"


class Stub:
    """An HTTP server on loopback answering with `respond(method, path, headers, body)` ->
    (status, content type, body bytes)."""

    def __init__(self, respond):
        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                code, content_type, data = respond(self.command, self.path, self.headers, body)
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def text(code, body):
    return code, "text/plain", body.encode()


class Cluster:
    """apus with the CAS, action cache and scheduler `main` (admin listener for the test), and
    a workers-only apus with one 1-slot worker and its own admin listener, as on a VM."""

    def __init__(self, tmp_path, worker_auth=None):
        (tmp_path / "server").mkdir()
        (tmp_path / "worker").mkdir()
        self.server_admin = f"http://127.0.0.1:{free_port()}"
        self.server = ApusProcess({
            "stores": {"cas": {"memory": {"max_bytes": 1 << 30}}, "ac": {"memory": {}}},
            "schedulers": {"main": {}},
            "servers": [{"listen": "127.0.0.1:PORT", "worker_api": "main",
                         "instances": {"": {"cas": "cas", "action_cache": "ac", "execution": "main"}}}],
            "admin": {"listen": self.server_admin.removeprefix("http://")},
            "global": {"shutdown_grace_seconds": 2},
        }, tmp_path / "server").start()
        url = f"grpc://127.0.0.1:{self.server.port}"
        self.worker_admin = f"http://127.0.0.1:{free_port()}"
        worker = {
            "workers": [{"scheduler": url, "cas": url, "work_directory": str(tmp_path / "worker" / "work"),
                         "cache_directory": str(tmp_path / "worker" / "cache"), "max_concurrent_actions": 1}],
            "admin": {"listen": self.worker_admin.removeprefix("http://")},
            "global": {"shutdown_grace_seconds": 30},
        }
        if worker_auth:
            worker["auth"] = worker_auth
        self.worker = ApusProcess(worker, tmp_path / "worker")
        try:
            self.worker.start_worker()
        except Exception:
            self.server.stop()
            raise
        self.channel = grpc.insecure_channel(self.server.address)
        self.streams = []

    def status(self):
        """The scheduler's view: queued, running and its connected workers."""
        return http_get_json(self.server_admin + "/status")["schedulers"]["main"]

    def execute(self, args):
        """Submits an action from a thread; returns (action, {"op": last operation, "done": time})."""
        action = Action(self.channel, args)
        out = {}
        stream = re_grpc.ExecutionStub(self.channel).Execute(
            re_pb2.ExecuteRequest(action_digest=action.digest), timeout=120)
        self.streams.append(stream)

        def run():
            try:
                out["op"] = list(stream)[-1]
                out["done"] = time.time()
            except grpc.RpcError as e:
                out["error"] = e

        threading.Thread(target=run, daemon=True).start()
        return action, out

    def cached(self, action):
        """The action's result in the action cache, or None."""
        try:
            return re_grpc.ActionCacheStub(self.channel).GetActionResult(
                re_pb2.GetActionResultRequest(action_digest=action.digest), timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            return None

    def busy_with_one_and_one_queued(self):
        """A: sleeps ACTION_SECONDS on the worker's only slot; B: queued behind it."""
        a = self.execute(["/bin/sh", "-c", f"sleep {ACTION_SECONDS}; echo finished"])
        wait_status(self.server_admin, lambda s: s["schedulers"]["main"]["running"] == 1, what="A running")
        b = self.execute(["/bin/sh", "-c", "echo later"])
        wait_status(self.server_admin, lambda s: s["schedulers"]["main"]["queued"] == 1, what="B queued")
        return a, b

    def snapshot(self, a_action):
        """What holds at the moment the lifecycle action completes."""
        s = self.status()
        result = self.cached(a_action)
        return {"a_cached": result is not None and result.exit_code == 0, "queued": s["queued"],
                "running": s["running"], "draining": [w["draining"] for w in s["workers"]]}

    def close(self):
        for s in self.streams:
            s.cancel()
        self.channel.close()
        self.worker.stop()
        self.server.stop()


def run_script(script, env, log, *args):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "APUS_", "AZURE_"))}
    environ.update(env)
    return subprocess.Popen([sys.executable, str(script), *args], env=environ, stdout=log, stderr=subprocess.STDOUT)


def assert_drained_after_a(cluster, a, b, proc, log, done):
    """The script completed the termination only after A finished and landed in the action
    cache, the worker drained, and B stayed queued (the draining worker did not take it)."""
    assert proc.wait(timeout=ACTION_SECONDS + 60) == 0, log.read_text()
    a_action, a_out = a
    snapshot = done["snapshot"]
    assert snapshot == {"a_cached": True, "queued": 1, "running": 0, "draining": [True]}, snapshot
    for _ in range(100):  # the Execute stream ends a moment after the result is stored
        if "op" in a_out:
            break
        time.sleep(0.05)
    response = re_pb2.ExecuteResponse()
    a_out["op"].response.Unpack(response)
    assert response.status.code == 0 and response.result.exit_code == 0, response
    assert response.result.stdout_raw == b"finished\n" or response.result.stdout_digest.size_bytes == 9
    assert done["time"] >= done["a_started"] + ACTION_SECONDS  # it waited for A
    time.sleep(1.5)  # still no taker for B
    s = cluster.status()
    assert (s["queued"], s["running"]) == (1, 0), s
    assert "op" not in b[1] and cluster.cached(b[0]) is None


# --- AWS --------------------------------------------------------------------------------

class AwsImds:
    """IMDSv2: PUT /latest/api/token (TTL header required), then GETs with the token."""

    def __init__(self, instance_id):
        self.instance_id = instance_id
        self.state = "InService"
        self.stub = Stub(self.respond)

    def respond(self, method, path, headers, body):
        if path == "/latest/api/token":
            if method != "PUT" or not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return text(400, "PUT with X-aws-ec2-metadata-token-ttl-seconds")
            return text(200, "imds-session-token")
        if method != "GET" or headers.get("X-aws-ec2-metadata-token") != "imds-session-token":
            return text(401, "")
        documents = {"/latest/meta-data/instance-id": self.instance_id,
                     "/latest/meta-data/autoscaling/target-lifecycle-state": self.state}
        return text(200, documents[path]) if path in documents else text(404, "")


class LifecycleApi:
    """CompleteLifecycleAction and RecordLifecycleActionHeartbeat (Query API, SigV4-signed),
    checked against the group, hook and instances in moto, and recorded."""

    def __init__(self, asg, on_complete):
        self.asg = asg
        self.on_complete = on_complete
        self.calls = []
        self.stub = Stub(self.respond)

    def respond(self, method, path, headers, body):
        params = dict(urllib.parse.parse_qsl(body.decode()))
        action = params.get("Action")

        def error(message):
            return 400, "text/xml", (f"<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
                                     f"<Message>{message}</Message></Error><RequestId>r</RequestId>"
                                     f"</ErrorResponse>").encode()

        if action not in ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat"):
            return error(f"unexpected action {action}")
        auth = headers.get("Authorization", "")
        if not auth.startswith(f"AWS4-HMAC-SHA256 Credential={CREDENTIALS['AWS_ACCESS_KEY_ID']}/"):
            return error("not signed")
        group = params.get("AutoScalingGroupName")
        hooks = self.asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
        if [(h["LifecycleHookName"], h["LifecycleTransition"]) for h in hooks] != [
                (params.get("LifecycleHookName"), "autoscaling:EC2_INSTANCE_TERMINATING")]:
            return error(f"no termination hook {params.get('LifecycleHookName')} on {group}")
        [g] = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
        if params.get("InstanceId") not in [i["InstanceId"] for i in g["Instances"]]:
            return error(f"instance {params.get('InstanceId')} is not in {group}")
        call = {"action": action, "params": params, "time": time.time()}
        if action == "CompleteLifecycleAction":
            call["snapshot"] = self.on_complete()
        self.calls.append(call)
        return 200, "text/xml", (f'<{action}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
                                 f"<{action}Result/><ResponseMetadata><RequestId>r</RequestId>"
                                 f"</ResponseMetadata></{action}Response>").encode()


@pytest.fixture
def aws(tmp_path):
    """moto with the worker group and its termination hook; the stand-in IMDS and API."""
    moto = MotoServer(tmp_path).start()
    kw = dict(endpoint_url=moto.endpoint, region_name="us-east-1", aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    boto3.client("ec2", **kw).create_launch_template(
        LaunchTemplateName="worker", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "c7g.2xlarge"})
    asg = boto3.client("autoscaling", **kw)
    asg.create_auto_scaling_group(AutoScalingGroupName=GROUP, MinSize=0, MaxSize=2, DesiredCapacity=1,
                                  LaunchTemplate={"LaunchTemplateName": "worker", "Version": "$Latest"},
                                  AvailabilityZones=["us-east-1a"])
    asg.put_lifecycle_hook(LifecycleHookName=HOOK, AutoScalingGroupName=GROUP, HeartbeatTimeout=3600,
                           LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", DefaultResult="CONTINUE")
    [instance] = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]["Instances"]
    state = {"on_complete": lambda: None}
    imds = AwsImds(instance["InstanceId"])
    api = LifecycleApi(asg, lambda: state["on_complete"]())
    yield imds, api, state
    imds.stub.close()
    api.stub.close()
    moto.stop()


def aws_env(imds, api, admin_url, **extra):
    env = dict(CREDENTIALS, AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=api.stub.url,
               APUS_IMDS_URL=imds.stub.url, APUS_ADMIN_URL=admin_url, APUS_AUTOSCALING_GROUP=GROUP,
               APUS_LIFECYCLE_HOOK=HOOK, APUS_POLL_SECONDS="0.2", APUS_HEARTBEAT_SECONDS="1")
    return dict(env, **extra)


def test_aws_scale_in_drains_the_worker_before_completing_the_lifecycle_action(aws, tmp_path):
    imds, api, state = aws
    cluster = Cluster(tmp_path)
    log = tmp_path / "lifecycle.log"
    try:
        a_started = time.time()  # A is submitted now and sleeps ACTION_SECONDS
        a, b = cluster.busy_with_one_and_one_queued()
        state["on_complete"] = lambda: cluster.snapshot(a[0])
        with open(log, "wb") as out:
            proc = run_script(AWS_SCRIPT, aws_env(imds, api, cluster.worker_admin), out)
        try:
            time.sleep(1.5)  # InService: nothing happens
            assert proc.poll() is None and api.calls == [], log.read_text()
            assert cluster.status()["workers"][0]["draining"] is False
            imds.state = "Terminated"
            proc.wait(timeout=ACTION_SECONDS + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
        completes = [c for c in api.calls if c["action"] == "CompleteLifecycleAction"]
        assert len(completes) == 1, (api.calls, log.read_text())
        [complete] = completes
        assert complete["params"]["LifecycleActionResult"] == "CONTINUE"
        assert complete["params"]["InstanceId"] == imds.instance_id
        beats = [c for c in api.calls if c["action"] == "RecordLifecycleActionHeartbeat"]
        assert beats and all(c["time"] < complete["time"] for c in beats), api.calls
        assert api.calls[-1] is complete
        assert_drained_after_a(cluster, a, b, proc, log, dict(complete, a_started=a_started))
        print(f"\nAWS: {len(beats)} heartbeat(s); lifecycle action completed "
              f"{complete['time'] - a_started:.1f} s after A was submitted ({ACTION_SECONDS} s action)")
    finally:
        cluster.close()


class FakeAdmin:
    """A worker admin listener that always runs one action (or answers nothing at all)."""

    def __init__(self):
        self.drains = 0
        self.stub = Stub(self.respond)

    def respond(self, method, path, headers, body):
        if (method, path) == ("POST", "/drain"):
            self.drains += 1
            return 202, "application/json", b'{"draining": true}'
        if (method, path) == ("GET", "/status"):
            return 200, "application/json", json.dumps(
                {"workers": [{"id": "w", "busy": 1, "draining": self.drains > 0}]}).encode()
        return text(404, "")


def test_aws_drain_wait_is_bounded_and_a_dead_worker_is_not_waited_for(aws, tmp_path):
    """An action that outlasts APUS_DRAIN_TIMEOUT_SECONDS is abandoned (heartbeats until then,
    then CONTINUE); a worker that does not answer means nothing to wait for."""
    imds, api, _ = aws
    imds.state = "Terminated"
    admin = FakeAdmin()
    try:
        log = tmp_path / "bounded.log"
        t = time.time()
        with open(log, "wb") as out:
            proc = run_script(AWS_SCRIPT, aws_env(imds, api, admin.stub.url, APUS_DRAIN_TIMEOUT_SECONDS="2",
                                                  APUS_HEARTBEAT_SECONDS="0.5"), out)
            assert proc.wait(timeout=30) == 0, log.read_text()
        elapsed = time.time() - t
        actions = [c["action"] for c in api.calls]
        assert admin.drains == 1 and actions[-1] == "CompleteLifecycleAction", actions
        assert 3 <= actions.count("RecordLifecycleActionHeartbeat") <= 6, actions
        assert 2 <= elapsed < 20, elapsed
        assert "gave up after 2 s with 1 action(s) running" in log.read_text()

        api.calls.clear()
        with open(tmp_path / "dead.log", "wb") as out:
            proc = run_script(AWS_SCRIPT, aws_env(imds, api, f"http://127.0.0.1:{free_port()}"), out)
            assert proc.wait(timeout=30) == 0
        assert [c["action"] for c in api.calls] == ["CompleteLifecycleAction"]
    finally:
        admin.stub.close()


def test_aws_lifecycle_script_refuses_missing_configuration(tmp_path):
    out = subprocess.run([sys.executable, str(AWS_SCRIPT)], env={"PATH": os.environ["PATH"]},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "APUS_AUTOSCALING_GROUP" in out.stdout


# --- Azure ------------------------------------------------------------------------------

class AzureImds:
    """Azure IMDS: compute/name and Scheduled Events (GET the document, POST StartRequests),
    both refusing requests without `Metadata: true`."""

    EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"

    def __init__(self, on_approve):
        self.on_approve = on_approve
        self.events = []
        self.incarnation = 1
        self.approvals = []
        self.stub = Stub(self.respond)

    def add(self, event_id, resources, not_before_seconds=900):
        self.events.append({"EventId": event_id, "EventType": "Terminate", "ResourceType": "VirtualMachine",
                            "Resources": resources, "EventStatus": "Scheduled",
                            "NotBefore": time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                       time.gmtime(time.time() + not_before_seconds)),
                            "Description": "Virtual machine is being deleted.", "EventSource": "Platform",
                            "DurationInSeconds": -1})
        self.incarnation += 1

    def respond(self, method, path, headers, body):
        if headers.get("Metadata") != "true":
            return 400, "application/json", b'{"error": "Bad request. Required metadata header not specified"}'
        if (method, path) == ("GET", "/metadata/instance/compute/name?api-version=2021-02-01&format=text"):
            return text(200, VM_NAME)
        if path != self.EVENTS:
            return text(404, "")
        if method == "GET":
            return 200, "application/json", json.dumps(
                {"DocumentIncarnation": self.incarnation, "Events": self.events}).encode()
        request = json.loads(body)
        ids = [r["EventId"] for r in request["StartRequests"]]
        self.approvals.append({"ids": ids, "time": time.time(), "snapshot": self.on_approve()})
        self.events = [e for e in self.events if e["EventId"] not in ids]
        return 200, "application/json", b""


def test_azure_scale_in_drains_the_worker_before_approving_the_terminate_event(tmp_path):
    # The worker's admin listener as in deployment-examples/systemd/config/worker.json: an
    # `ops` token required; `setup` (run by cloud-init at first boot) adds the drain's own.
    tokens = tmp_path / "tokens"
    tokens.write_text("# apus token --principal ops lines\n")
    token_file = tmp_path / "lifecycle-token"
    env = {"APUS_TOKENS": str(tokens), "APUS_ADMIN_TOKEN_FILE": str(token_file)}
    state = {"on_approve": lambda: None}
    imds = AzureImds(lambda: state["on_approve"]())
    cluster = Cluster(tmp_path, worker_auth={"tokens": str(tokens), "admin": ["ops"]})
    log = tmp_path / "scheduled-events.log"
    try:
        setup = subprocess.run([sys.executable, str(AZURE_SCRIPT), "setup"], env=dict(os.environ, **env),
                               capture_output=True, text=True, timeout=30)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        a_started = time.time()  # A is submitted now and sleeps ACTION_SECONDS
        a, b = cluster.busy_with_one_and_one_queued()
        state["on_approve"] = lambda: cluster.snapshot(a[0])
        with open(log, "wb") as out:
            proc = run_script(AZURE_SCRIPT, dict(env, AZURE_IMDS_URL=imds.stub.url, APUS_POLL_SECONDS="0.2",
                                                 APUS_ADMIN_URL=cluster.worker_admin), out)
        try:
            # Another VM's deletion is not this worker's business.
            imds.add("other-vm-event", ["apus-workers_1"])
            time.sleep(1.5)
            assert proc.poll() is None and imds.approvals == [], log.read_text()
            assert cluster.status()["workers"][0]["draining"] is False
            imds.add("A1B2C3D4-0000-4000-8000-000000000003", ["apus-workers_1", VM_NAME])
            proc.wait(timeout=ACTION_SECONDS + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert [x["ids"] for x in imds.approvals] == [["A1B2C3D4-0000-4000-8000-000000000003"]], log.read_text()
        [approval] = imds.approvals
        assert_drained_after_a(cluster, a, b, proc, log, dict(approval, a_started=a_started))
        print(f"\nAzure: Terminate event approved {approval['time'] - a_started:.1f} s after A was submitted "
              f"({ACTION_SECONDS} s action)")
    finally:
        cluster.close()
        imds.stub.close()


def test_azure_setup_makes_one_token_and_its_hash_line_once(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("aa" * 32 + " ci")  # no final newline
    env = dict(os.environ, APUS_TOKENS=str(tokens), APUS_ADMIN_TOKEN_FILE=str(tmp_path / "t"))
    for _ in range(2):
        out = subprocess.run([sys.executable, str(AZURE_SCRIPT), "setup"], env=env, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
    token = (tmp_path / "t").read_text().strip()
    assert len(token) >= 40 and (tmp_path / "t").stat().st_mode & 0o777 == 0o600
    assert tokens.read_text() == f"{'aa' * 32} ci\n{hashlib.sha256(token.encode()).hexdigest()} ops\n"
    missing = subprocess.run([sys.executable, str(AZURE_SCRIPT), "setup"], capture_output=True, text=True,
                             env=dict(env, APUS_TOKENS=str(tmp_path / "none")), timeout=30)
    assert missing.returncode == 1 and "install the worker first" in missing.stdout


# --- what Terraform sets up ------------------------------------------------------------------

def test_terraform_wires_the_hooks_to_the_scripts():
    """The AWS hook is a termination hook defaulting to CONTINUE whose names reach the worker;
    the worker role may complete only its group's lifecycle actions; the Azure scale set
    sends termination notifications that a forced delete would skip."""
    workers = (TF / "aws" / "workers.tf").read_text()
    hook = workers[workers.index('resource "aws_autoscaling_lifecycle_hook" "worker_drain"'):]
    for line in ('lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"',
                 'default_result         = "CONTINUE"',
                 "heartbeat_timeout      = min(var.worker_drain_timeout_seconds, 7200)",
                 "name                   = local.worker_drain_hook"):
        assert line in hook
    assert "lifecycle_hook        = local.worker_drain_hook" in workers
    iam = (TF / "aws" / "iam.tf").read_text()
    statement = iam[iam.index('sid       = "ScaleInDrain"'):]
    statement = statement[:statement.index("}")]
    assert '["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]' in statement
    assert "resources = [aws_autoscaling_group.workers.arn]" in statement
    template = (TF / "aws" / "cloud-init" / "worker.yaml.tftpl").read_text()
    for key in ("APUS_AUTOSCALING_GROUP=${autoscaling_group}", "APUS_LIFECYCLE_HOOK=${lifecycle_hook}",
                "apus-lifecycle.service]"):
        assert key in template
    azure = (TF / "azure" / "workers.tf").read_text()
    assert 'timeout = "PT${var.worker_drain_timeout_minutes}M"' in azure
    assert "force_deletion_enabled = false" in azure
    assert "apus-scheduled-events.service]" in (TF / "azure" / "cloud-init" / "worker.yaml.tftpl").read_text()
