#!/usr/bin/env python3
"""Drains this worker before its Auto Scaling Group terminates it.

Run by apus-lifecycle.service on each worker. Polls IMDSv2
/latest/meta-data/autoscaling/target-lifecycle-state every APUS_POLL_SECONDS; when it reads
`Terminated` (scale-in, instance refresh, health replacement: the group holds the instance in
Terminating:Wait through its lifecycle hook), it POSTs the local worker's /drain (stop taking
actions, finish the running ones), polls /status until no worker in the process is busy,
sending RecordLifecycleActionHeartbeat every APUS_HEARTBEAT_SECONDS meanwhile, and then
CompleteLifecycleAction(CONTINUE) so the termination goes on. The wait is bounded by
APUS_DRAIN_TIMEOUT_SECONDS: past it the actions still running are abandoned (the scheduler
runs them again elsewhere, max_job_retries) and the termination goes on anyway.

Environment:
  APUS_AUTOSCALING_GROUP       the worker group's name (required)
  APUS_LIFECYCLE_HOOK          the EC2_INSTANCE_TERMINATING hook's name (required)
  APUS_ADMIN_URL               the worker's admin listener, default http://127.0.0.1:9092
  APUS_ADMIN_TOKEN_FILE        optional bearer token for /drain and /status (with auth)
  APUS_DRAIN_TIMEOUT_SECONDS   longest wait for running actions, default 3600
  APUS_HEARTBEAT_SECONDS       default 60 (the hook's heartbeat timeout is longer)
  APUS_POLL_SECONDS            default 5
  APUS_IMDS_URL                default http://169.254.169.254 (tests: a stand-in)
  AWS_DEFAULT_REGION, AWS_ENDPOINT_URL and the usual AWS credentials (on EC2: the role's)

Exit status 0 once the lifecycle action is completed (the instance is going away); 2 on bad
configuration. Transient errors (IMDS, AWS API) are logged and retried.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request


def log(message):
    print(f"apus-lifecycle: {message}", flush=True)


class Imds:
    """IMDSv2: a session token (PUT /latest/api/token), renewed before its 6 hours are up."""

    TTL = 21600

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.token = None
        self.expires = 0.0

    def get(self, path):
        if self.token is None or time.monotonic() > self.expires:
            req = urllib.request.Request(self.base + "/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.TTL)})
            with urllib.request.urlopen(req, timeout=5) as resp:
                self.token = resp.read().decode()
            self.expires = time.monotonic() + self.TTL - 60
        req = urllib.request.Request(self.base + "/latest/meta-data/" + path,
                                     headers={"X-aws-ec2-metadata-token": self.token})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode().strip()


class Admin:
    """The worker's admin listener: /drain and /status."""

    def __init__(self, url, token_file):
        self.url = url.rstrip("/")
        self.headers = {}
        if token_file:
            with open(token_file) as f:
                self.headers["Authorization"] = "Bearer " + f.read().strip()

    def drain(self):
        req = urllib.request.Request(self.url + "/drain", method="POST", data=b"", headers=self.headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def busy(self):
        """Actions running in this process's workers, and whether all of them are draining."""
        req = urllib.request.Request(self.url + "/status", headers=self.headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            workers = json.load(resp).get("workers") or []
        return sum(int(w.get("busy", 0)) for w in workers), all(w.get("draining") for w in workers)


def drain_and_wait(admin, timeout, heartbeat_every, heartbeat, poll):
    """POST /drain, then wait until nothing runs (or `timeout`), calling `heartbeat()` every
    `heartbeat_every` seconds while actions run. A worker that does not answer at all is not
    running anything this instance needs to wait for."""
    deadline = time.monotonic() + timeout
    last_beat = None
    drained = False
    while True:
        try:
            if not drained:
                admin.drain()
                drained = True
                log("drain requested")
            busy, all_draining = admin.busy()
            if busy == 0 and all_draining:
                log("no action running")
                return True
        except urllib.error.HTTPError as e:
            log(f"admin listener answered {e.code}: {e.read()[:200]!r}")
            busy = None
        except OSError as e:
            log(f"admin listener unreachable ({e}): the worker is not running, nothing to wait for")
            return True
        now = time.monotonic()
        if now >= deadline:
            log(f"gave up after {timeout:.0f} s with {busy} action(s) running: the scheduler runs them again")
            return False
        if last_beat is None or now - last_beat >= heartbeat_every:
            try:
                heartbeat()
                last_beat = now
                log(f"{busy} action(s) running: heartbeat sent")
            except Exception as e:  # noqa: BLE001 - a missed heartbeat is retried next poll
                log(f"heartbeat failed: {e}")
        time.sleep(min(poll, max(0.0, deadline - now)))


def main():
    env = os.environ
    group, hook = env.get("APUS_AUTOSCALING_GROUP"), env.get("APUS_LIFECYCLE_HOOK")
    if not group or not hook:
        log("APUS_AUTOSCALING_GROUP and APUS_LIFECYCLE_HOOK must be set")
        return 2
    try:
        timeout = float(env.get("APUS_DRAIN_TIMEOUT_SECONDS", "3600"))
        heartbeat_every = float(env.get("APUS_HEARTBEAT_SECONDS", "60"))
        poll = float(env.get("APUS_POLL_SECONDS", "5"))
        admin = Admin(env.get("APUS_ADMIN_URL", "http://127.0.0.1:9092"), env.get("APUS_ADMIN_TOKEN_FILE"))
    except (ValueError, OSError) as e:
        log(f"bad configuration: {e}")
        return 2
    imds = Imds(env.get("APUS_IMDS_URL", "http://169.254.169.254"))

    # Wait for the group to mark this instance for termination.
    instance = None
    while True:
        try:
            instance = instance or imds.get("instance-id")
            state = imds.get("autoscaling/target-lifecycle-state")
            if state == "Terminated":
                break
        except OSError as e:
            log(f"instance metadata: {e}")
        time.sleep(poll)
    log(f"{instance} is leaving {group}: draining the worker")

    import boto3  # imported late: the wait above must not need it
    # boto3 before 1.28 (Debian 12 ships 1.26) ignores AWS_ENDPOINT_URL, so pass it on.
    client = boto3.client("autoscaling", endpoint_url=env.get("AWS_ENDPOINT_URL") or None)
    ids = {"LifecycleHookName": hook, "AutoScalingGroupName": group, "InstanceId": instance}
    drain_and_wait(admin, timeout, heartbeat_every, lambda: client.record_lifecycle_action_heartbeat(**ids), poll)
    for attempt in range(10):
        try:
            client.complete_lifecycle_action(LifecycleActionResult="CONTINUE", **ids)
            log("lifecycle action completed: the instance terminates")
            return 0
        except Exception as e:  # noqa: BLE001 - retried; the hook's timeout is the fallback
            log(f"complete-lifecycle-action failed ({e}), retrying")
            time.sleep(min(2 ** attempt, 30))
    log("could not complete the lifecycle action: the hook's heartbeat timeout ends it (CONTINUE)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
