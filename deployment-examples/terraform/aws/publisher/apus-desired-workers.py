#!/usr/bin/env python3
"""Publishes Apus's desired worker count to CloudWatch, for the worker Auto Scaling Group.

Run once a minute by apus-desired-workers.timer on each scheduler host. Reads /status
(schema version 1), takes schedulers.NAME.desired_workers (NAME empty: the sum over all
schedulers), and puts it as the custom metric Apus/DesiredWorkers with the dimension
AutoScalingGroupName=APUS_METRIC_DIMENSION.

With APUS_SLOTS_PER_WORKER set (the group's max_concurrent_actions), the count is computed
here instead, per platform: ceil((queued + running) / slots), summed. Apus divides by the
slots of the workers connected to this process, and counts one slot per worker while none
is: right for one scheduler, but with several sharing a queue in PostgreSQL each sees the
whole queue and only its own workers, and a host without workers would ask for a worker per
action. Every host computing the same figure from the shared queue, and the alarm taking
the Maximum, gives the group one value however many hosts publish.

Scale-in is delayed here, not in the scaling policy: the value published is the largest
desired_workers seen in the last APUS_SCALE_IN_DELAY_SECONDS (kept in APUS_STATE_FILE), so
the fleet grows at once and shrinks only after the queue has stayed short that long.

Environment:
  APUS_STATUS_URL               default http://127.0.0.1:9091/status
  APUS_STATUS_TOKEN_FILE        optional bearer token for /status (with auth, no anonymous_read)
  APUS_SCHEDULER_NAME           default: every scheduler, summed
  APUS_METRIC_DIMENSION         the Auto Scaling Group's name (required)
  APUS_SCALE_IN_DELAY_SECONDS   default 600
  APUS_SLOTS_PER_WORKER         optional: compute the count from queued + running (above)
  APUS_STATE_FILE               default /var/lib/apus-desired-workers/history.json
  AWS_DEFAULT_REGION, AWS_ENDPOINT_URL (tests: moto) and the usual AWS credentials

Exit status 0 when the datum was put; 1 when /status could not be read (nothing is put, so
the alarm sees missing data and the fleet stays as it is); 2 on bad configuration.
"""
import json
import os
import sys
import time
import urllib.request

NAMESPACE = "Apus"
METRIC = "DesiredWorkers"


def read_status(url, token_file):
    req = urllib.request.Request(url)
    if token_file:
        with open(token_file) as f:
            req.add_header("Authorization", "Bearer " + f.read().strip())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def workers_for(entry, slots):
    """A scheduler's desired workers: its own figure, or from its load at `slots` per worker."""
    if not slots:
        return int(entry.get("desired_workers", 0))
    platforms = entry.get("platforms")
    loads = platforms if platforms else [entry]  # no per-platform rows: the scheduler's totals
    return sum(-(-(int(p.get("queued", 0)) + int(p.get("running", 0))) // slots) for p in loads)


def desired_from_status(status, scheduler, slots=0):
    schedulers = status.get("schedulers") or {}
    if scheduler:
        if scheduler not in schedulers:
            raise KeyError(f"no scheduler {scheduler!r} in /status (have: {sorted(schedulers)})")
        return workers_for(schedulers[scheduler], slots)
    return sum(workers_for(s, slots) for s in schedulers.values())


def smoothed(value, now, state_file, delay):
    """The largest value seen within `delay` seconds, including this one; the history is kept
    in `state_file` (missing or unreadable: starts afresh)."""
    history = []
    try:
        with open(state_file) as f:
            history = [(float(t), int(v)) for t, v in json.load(f)]
    except (OSError, ValueError, TypeError):
        pass
    history = [(t, v) for t, v in history if now - t < delay] + [(now, value)]
    os.makedirs(os.path.dirname(state_file) or ".", exist_ok=True)
    tmp = state_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(history, f)
    os.replace(tmp, state_file)
    return max(v for _, v in history)


def main():
    env = os.environ
    dimension = env.get("APUS_METRIC_DIMENSION")
    if not dimension:
        print("apus-desired-workers: APUS_METRIC_DIMENSION (the Auto Scaling Group name) is not set", file=sys.stderr)
        return 2
    url = env.get("APUS_STATUS_URL", "http://127.0.0.1:9091/status")
    try:
        slots = int(env.get("APUS_SLOTS_PER_WORKER") or 0)
        if slots < 0:
            raise ValueError
    except ValueError:
        print("apus-desired-workers: APUS_SLOTS_PER_WORKER must be a whole number of slots", file=sys.stderr)
        return 2
    try:
        desired = desired_from_status(read_status(url, env.get("APUS_STATUS_TOKEN_FILE")),
                                      env.get("APUS_SCHEDULER_NAME", ""), slots)
    except Exception as e:  # noqa: BLE001 - any failure means "no datum this minute"
        print(f"apus-desired-workers: cannot read {url}: {e}", file=sys.stderr)
        return 1
    now = time.time()
    value = smoothed(desired, now, env.get("APUS_STATE_FILE", "/var/lib/apus-desired-workers/history.json"),
                     float(env.get("APUS_SCALE_IN_DELAY_SECONDS", "600")))

    import boto3  # imported late: reading /status must not need it
    # boto3 before 1.28 (Debian 12 ships 1.26) ignores AWS_ENDPOINT_URL, so pass it on.
    client = boto3.client("cloudwatch", endpoint_url=env.get("AWS_ENDPOINT_URL") or None)
    client.put_metric_data(Namespace=NAMESPACE, MetricData=[{
        "MetricName": METRIC,
        "Dimensions": [{"Name": "AutoScalingGroupName", "Value": dimension}],
        "Value": float(value),
        "Unit": "Count",
    }])
    print(f"apus-desired-workers: desired_workers={desired} published={value} ({dimension})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
