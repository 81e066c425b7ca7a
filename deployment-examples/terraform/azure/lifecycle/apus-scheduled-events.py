#!/usr/bin/env python3
"""Drains this worker before its scale set deletes the VM (Azure Scheduled Events).

  apus-scheduled-events            the service (apus-scheduled-events.service)
  apus-scheduled-events setup      once, as root, at first boot: a random admin token for the
                                   worker's loopback admin listener (APUS_ADMIN_TOKEN_FILE, 0600)
                                   and its hash line for principal "ops" in APUS_TOKENS

The service polls the instance metadata service's Scheduled Events every APUS_POLL_SECONDS.
With the scale set's termination notification on, a scale-in (or a delete) first posts a
`Terminate` event naming the VMs it removes and waits until its NotBefore (the notification
timeout). For an event naming this VM the service POSTs the worker's /drain (stop taking
actions, finish the running ones), polls /status until no worker in the process is busy,
and then approves the event (StartRequests), so the VM goes at once instead of at NotBefore.
Past NotBefore Azure deletes the VM anyway: actions still running then are run again by the
scheduler elsewhere (max_job_retries).

Environment:
  APUS_ADMIN_URL          the worker's admin listener, default http://127.0.0.1:9092
  APUS_ADMIN_TOKEN_FILE   its bearer token (principal ops); under systemd, the credential
                          admin-token (LoadCredential); default /etc/apus/lifecycle-token
  APUS_TOKENS             setup: the worker's token file, default /etc/apus/tokens
  APUS_POLL_SECONDS       default 5
  AZURE_IMDS_URL          default http://169.254.169.254 (tests: a stand-in)

Exit status 0 once the event is approved (the VM is going away); 2 on bad configuration.
"""
import email.utils
import hashlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request

EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
NAME = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"


def log(message):
    print(f"apus-scheduled-events: {message}", flush=True)


def imds(base, path, body=None):
    req = urllib.request.Request(base + path, headers={"Metadata": "true"},
                                 data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode()


def setup(env):
    """A token only this machine knows, accepted by the worker's admin listener (which needs
    principal ops: actions share its network namespace, so it cannot be open). Apus rereads
    the token file within a second of a change."""
    token_file = env.get("APUS_ADMIN_TOKEN_FILE", "/etc/apus/lifecycle-token")
    tokens = env.get("APUS_TOKENS", "/etc/apus/tokens")
    if not os.path.exists(tokens):
        log(f"{tokens} does not exist: install the worker first (systemd/install.sh makes it)")
        return 1
    if os.path.exists(token_file):
        with open(token_file) as f:
            token = f.read().strip()
    else:
        token = secrets.token_urlsafe(32)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    line = f"{hashlib.sha256(token.encode()).hexdigest()} ops"
    with open(tokens, "r+") as f:
        text = f.read()
        if line not in text.splitlines():
            f.write(("" if text == "" or text.endswith("\n") else "\n") + line + "\n")
    log(f"admin token in {token_file}, its hash in {tokens}")
    return 0


class Admin:
    """The worker's admin listener: /drain and /status."""

    def __init__(self, url, token_file):
        self.url = url.rstrip("/")
        with open(token_file) as f:
            self.headers = {"Authorization": "Bearer " + f.read().strip()}

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


def drain_and_wait(admin, deadline, poll):
    """POST /drain, then wait until nothing runs or the wall-clock `deadline` passes. A worker
    that does not answer at all is not running anything worth waiting for."""
    drained = False
    while True:
        busy = None
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
            hint = " (is the token's line missing from the tokens file? run setup again)" if e.code == 401 else ""
            log(f"admin listener answered {e.code}{hint}: {e.read()[:200]!r}")
        except OSError as e:
            log(f"admin listener unreachable ({e}): the worker is not running, nothing to wait for")
            return True
        if time.time() >= deadline:
            log(f"NotBefore reached with {busy} action(s) running: the scheduler runs them again")
            return False
        time.sleep(min(poll, max(0.0, deadline - time.time())))


def not_before(event, fallback):
    """The event's NotBefore (RFC 1123, e.g. "Mon, 19 Sep 2016 18:29:47 GMT") as a timestamp;
    `fallback` when it is empty (the event may start at once) or unreadable."""
    try:
        return email.utils.parsedate_to_datetime(event.get("NotBefore") or "").timestamp()
    except (TypeError, ValueError):
        return fallback


def main():
    env = os.environ
    if sys.argv[1:] == ["setup"]:
        return setup(env)
    if sys.argv[1:]:
        log(f"unknown arguments {sys.argv[1:]}: none (the service) or `setup`")
        return 2
    base = env.get("AZURE_IMDS_URL", "http://169.254.169.254").rstrip("/")
    try:
        poll = float(env.get("APUS_POLL_SECONDS", "5"))
        credentials = env.get("CREDENTIALS_DIRECTORY")
        token_file = env.get("APUS_ADMIN_TOKEN_FILE") or (
            os.path.join(credentials, "admin-token") if credentials else "/etc/apus/lifecycle-token")
        admin = Admin(env.get("APUS_ADMIN_URL", "http://127.0.0.1:9092"), token_file)
    except (ValueError, OSError) as e:
        log(f"bad configuration: {e}")
        return 2

    vm = None
    while True:
        try:
            # The scale set instance's name (e.g. apus-workers_3): how events name their VMs.
            vm = vm or imds(base, NAME).strip()
            doc = json.loads(imds(base, EVENTS))
            mine = [e for e in doc.get("Events", []) if e.get("EventType") == "Terminate"
                    and vm in e.get("Resources", []) and e.get("EventStatus") == "Scheduled"]
            if mine:
                break
        except (OSError, ValueError) as e:
            log(f"scheduled events: {e}")
        time.sleep(poll)

    event = mine[0]
    log(f"{vm}: Terminate event {event.get('EventId')} (NotBefore {event.get('NotBefore') or 'now'}): draining")
    drain_and_wait(admin, not_before(event, time.time()), poll)
    for attempt in range(10):
        try:
            imds(base, EVENTS, {"StartRequests": [{"EventId": event["EventId"]}]})
            log("event approved: the VM is deleted now")
            return 0
        except OSError as e:
            log(f"approving the event failed ({e}), retrying")
            time.sleep(min(2 ** attempt, 10))
    log("could not approve the event: Azure deletes the VM at NotBefore")
    return 1


if __name__ == "__main__":
    sys.exit(main())
