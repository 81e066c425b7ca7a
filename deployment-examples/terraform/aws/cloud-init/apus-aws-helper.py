#!/usr/bin/env python3
"""AWS chores for an Apus host, installed by cloud-init as /usr/local/libexec/apus/aws-helper.

  aws-helper fetch-release URL DEST  download https://... or s3://bucket/key to DEST
  aws-helper get-parameter NAME      print an SSM parameter, decrypted

Apus itself needs none of this: its s3 store reads the instance role's credentials from the
instance metadata service and renews them (`"credentials": "instance"` in scheduler.json).
"""
import os
import subprocess
import sys
import urllib.request

IMDS = "http://169.254.169.254/latest"


def imds(path):
    """An instance metadata value, IMDSv2 (token first)."""
    req = urllib.request.Request(IMDS + "/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    token = urllib.request.urlopen(req, timeout=5).read().decode()
    req = urllib.request.Request(IMDS + path, headers={"X-aws-ec2-metadata-token": token})
    return urllib.request.urlopen(req, timeout=5).read().decode()


def region():
    return os.environ.get("AWS_DEFAULT_REGION") or imds("/meta-data/placement/region")


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
    commands = {"fetch-release": (fetch_release, 2), "get-parameter": (get_parameter, 1)}
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = commands[argv[1]]
    fn(*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
