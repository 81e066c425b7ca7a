#!/usr/bin/env python3
"""Posts Apus's desired_workers to Azure Monitor as custom metrics (run by a systemd timer).

Reads the scheduler's /status, sums schedulers.*.desired_workers and the workers connected
to them, and posts two metrics in namespace "apus" against the VM (AZURE_METRICS_URL, i.e.
https://REGION.monitoring.azure.com/RESOURCE_ID/metrics):
  desired_workers  the fleet size the scheduler asks for
  worker_gap       desired_workers minus connected workers (what the autoscale rules use)
The bearer token comes from the VM's managed identity (IMDS). Standard library only.

Environment: APUS_STATUS_URL (default http://127.0.0.1:9091/status), APUS_STATUS_TOKEN_FILE
(optional: a token of an `admin` principal), AZURE_METRICS_URL (required),
AZURE_TOKEN_URL (default: the IMDS managed-identity endpoint for monitoring.azure.com).
"""
import datetime
import json
import os
import sys
import urllib.request

IMDS_TOKEN_URL = ("http://169.254.169.254/metadata/identity/oauth2/token"
                  "?api-version=2018-02-01&resource=https%3A%2F%2Fmonitoring.azure.com%2F")
NAMESPACE = "apus"
TIMEOUT = 10


def get_json(url, headers):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as r:
        return json.load(r)


def read_status(url, token_file):
    headers = {}
    if token_file:
        with open(token_file, encoding="utf-8") as f:
            headers["Authorization"] = "Bearer " + f.read().strip()
    return get_json(url, headers)


def fleet(status):
    """(desired_workers, connected_workers) summed over the schedulers in /status."""
    desired = connected = 0
    for scheduler in (status.get("schedulers") or {}).values():
        desired += int(scheduler.get("desired_workers", 0))
        connected += len(scheduler.get("workers") or [])
    return desired, connected


def metric_body(name, value, now):
    """One Azure Monitor custom-metric document (one series, no dimensions)."""
    return {
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"baseData": {
            "metric": name,
            "namespace": NAMESPACE,
            "series": [{"min": value, "max": value, "sum": value, "count": 1}],
        }},
    }


def post(url, token, body):
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Authorization": "Bearer " + token,
        "Content-Type": "application/json",
    })
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return r.status


def main():
    metrics_url = os.environ.get("AZURE_METRICS_URL")
    if not metrics_url:
        print("apus-metrics-publisher: AZURE_METRICS_URL is not set", file=sys.stderr)
        return 2
    status = read_status(os.environ.get("APUS_STATUS_URL", "http://127.0.0.1:9091/status"),
                         os.environ.get("APUS_STATUS_TOKEN_FILE"))
    desired, connected = fleet(status)
    token = get_json(os.environ.get("AZURE_TOKEN_URL", IMDS_TOKEN_URL), {"Metadata": "true"})["access_token"]
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, value in (("desired_workers", desired), ("worker_gap", desired - connected)):
        post(metrics_url, token, metric_body(name, value, now))
    print(f"apus-metrics-publisher: desired_workers={desired} connected={connected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
