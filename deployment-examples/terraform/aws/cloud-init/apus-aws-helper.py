#!/usr/bin/env python3
"""AWS chores for an Apus host, installed by cloud-init as /usr/local/libexec/apus/aws-helper.

  aws-helper write FILE              write the instance role's credentials as an environment
                                     file (AWS_ACCESS_KEY_ID=...), mode 0600, for the s3 store
  aws-helper check FILE UNIT         restart UNIT when FILE's credentials expire within 30 min
                                     and the instance metadata already has newer ones
  aws-helper fetch-release URL DEST  download https://... or s3://bucket/key to DEST
  aws-helper get-parameter NAME      print an SSM parameter, decrypted

Apus's s3 store reads credentials from its config or the environment only, so the scheduler
unit gets them from this script (ExecStartPre) and is restarted before they lapse.
"""
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime, timedelta, timezone

IMDS = "http://169.254.169.254/latest"


def imds(path, token=None):
    if token is None:
        req = urllib.request.Request(IMDS + "/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        token = urllib.request.urlopen(req, timeout=5).read().decode()
    req = urllib.request.Request(IMDS + path, headers={"X-aws-ec2-metadata-token": token})
    return urllib.request.urlopen(req, timeout=5).read().decode(), token


def role_credentials():
    role, token = imds("/meta-data/iam/security-credentials/")
    body, _ = imds("/meta-data/iam/security-credentials/" + role.strip().splitlines()[0], token)
    return json.loads(body)


def parse_time(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def write(path):
    c = role_credentials()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(f"AWS_ACCESS_KEY_ID={c['AccessKeyId']}\n"
                f"AWS_SECRET_ACCESS_KEY={c['SecretAccessKey']}\n"
                f"AWS_SESSION_TOKEN={c['Token']}\n"
                f"APUS_AWS_EXPIRATION={c['Expiration']}\n")
    os.replace(tmp, path)
    print(f"aws-helper: credentials valid until {c['Expiration']} in {path}")


def check(path, unit):
    current = None
    with open(path) as f:
        for line in f:
            if line.startswith("APUS_AWS_EXPIRATION="):
                current = parse_time(line.split("=", 1)[1].strip())
    fresh = parse_time(role_credentials()["Expiration"])
    if current is None or (current - datetime.now(timezone.utc) < timedelta(minutes=30) and fresh > current):
        print(f"aws-helper: credentials expire {current}, new ones until {fresh}: restarting {unit}")
        subprocess.run(["systemctl", "try-restart", unit], check=True)


def region():
    return os.environ.get("AWS_DEFAULT_REGION") or imds("/meta-data/placement/region")[0]


def fetch_release(url, dest):
    if url.startswith("s3://"):
        import boto3
        bucket, key = url[5:].split("/", 1)
        boto3.client("s3", region_name=region()).download_file(bucket, key, dest)
    else:
        subprocess.run(["curl", "-fsSL", "--retry", "5", "-o", dest, url], check=True)


def get_parameter(name):
    import boto3
    print(boto3.client("ssm", region_name=region()).get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])


def main(argv):
    commands = {"write": (write, 1), "check": (check, 2), "fetch-release": (fetch_release, 2),
                "get-parameter": (get_parameter, 1)}
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = commands[argv[1]]
    fn(*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
