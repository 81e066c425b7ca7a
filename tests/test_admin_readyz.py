"""/readyz follows the stores' backends (README "Health: /healthz and /readyz").

apus runs with an `s3` store on a moto server; moto is frozen (SIGSTOP: connections accepted,
nothing answers) or killed and started again. A store that needs the bucket makes the process
unready (503, the store under `not_ready`) within the probe's cache and timeout bounds, and
ready again once moto answers; a store that reaches the bucket only as the slow tier of a
`fast_slow` is listed under `degraded` and the process stays ready. `/healthz` answers 200
throughout.
"""
import json
import re
import time
import urllib.error
import urllib.request

import grpc

from conftest import cache_config, free_port
from reapi import digest, download, re_grpc, re_pb2, upload
from s3server import moto, s3_spec  # noqa: F401

BUCKET = "ready"
# A probe result is cached 5 s and a probe gives up after 2 s: a change shows within ~7 s.
NOTICE_SECONDS = 10


def get(port, path):
    """(status, decoded JSON body); 503 is an answer too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def s3_store(moto):
    return s3_spec(moto, BUCKET, "cas/", connect_timeout_seconds=1, first_byte_timeout_seconds=2, max_attempts=1)


def start(apus_factory, moto, cas_store):
    moto.make_bucket(BUCKET)
    admin = free_port()
    config = cache_config(cas_store)
    config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    return admin, apus_factory(config)


def watch(admin, until, timeout):
    """Polls /readyz (and /healthz) every 0.2 s until `until(status, body)` holds; returns the
    seconds it took, the (status, body) that satisfied it, and every /readyz status seen."""
    started = time.monotonic()
    seen = []
    while True:
        status, body = get(admin, "/readyz")
        seen.append(status)
        assert get(admin, "/healthz") == (200, {"status": "ok"})
        if until(status, body):
            return time.monotonic() - started, (status, body), seen
        assert time.monotonic() - started < timeout, f"/readyz still {status} {body} after {timeout} s"
        time.sleep(0.2)


def components(findings):
    return {f["component"]: f["reason"] for f in findings}


def test_readyz_follows_a_bucket_the_store_needs(moto, apus_factory):
    admin, _ = start(apus_factory, moto, s3_store(moto))
    _, (status, body), _ = watch(admin, lambda s, b: s == 200, timeout=NOTICE_SECONDS)
    assert body == {"ready": True, "draining": False, "not_ready": [], "degraded": []}

    # A frozen S3: connections are accepted and never answered.
    moto.freeze()
    took, (status, body), _ = watch(admin, lambda s, b: s == 503, timeout=NOTICE_SECONDS)
    print(f"frozen S3 noticed after {took:.1f} s")
    assert body["ready"] is False and body["draining"] is False
    cas = components(body["not_ready"])
    assert "store cas" in cas, body
    assert f"s3 {moto.endpoint}/{BUCKET}" in cas["store cas"], body
    assert "store ac" not in cas  # memory: always there
    assert body["degraded"] == []

    moto.resume()
    took, (status, body), _ = watch(admin, lambda s, b: s == 200, timeout=NOTICE_SECONDS)
    print(f"resumed S3 noticed after {took:.1f} s")
    assert body["not_ready"] == []

    # A crashed S3: connections refused until it is started again on the same port.
    moto.kill()
    took, (status, body), _ = watch(admin, lambda s, b: s == 503, timeout=NOTICE_SECONDS)
    print(f"killed S3 noticed after {took:.1f} s")
    assert "store cas" in components(body["not_ready"])
    moto.start()
    moto.make_bucket(BUCKET)
    took, _, _ = watch(admin, lambda s, b: s == 200, timeout=NOTICE_SECONDS)
    print(f"restarted S3 noticed after {took:.1f} s")


def test_a_slow_tier_outage_is_degraded_not_unready(moto, apus_factory):
    tiered = {"fast_slow": {"fast": {"memory": {"max_bytes": 64 << 20}}, "slow": s3_store(moto)}}
    admin, _ = start(apus_factory, moto, tiered)
    _, (status, body), _ = watch(admin, lambda s, b: s == 200, timeout=NOTICE_SECONDS)
    assert body["degraded"] == [] and body["not_ready"] == []

    moto.kill()
    took, (status, body), seen = watch(admin, lambda s, b: "store cas" in components(b["degraded"]),
                                       timeout=NOTICE_SECONDS)
    print(f"slow tier outage noticed after {took:.1f} s")
    assert set(seen) == {200}, seen
    assert body["ready"] is True and body["not_ready"] == []
    reason = components(body["degraded"])["store cas"]
    assert reason.startswith(f"slow tier unavailable (s3 {moto.endpoint}/{BUCKET}"), reason
    assert reason.endswith("serving from the fast tier"), reason

    # Still ready a while later, and back to plain ready once S3 returns.
    deadline = time.monotonic() + 3
    _, _, seen = watch(admin, lambda s, b: time.monotonic() >= deadline, timeout=NOTICE_SECONDS)
    assert set(seen) == {200}, seen
    moto.start()
    moto.make_bucket(BUCKET)
    watch(admin, lambda s, b: b["degraded"] == [], timeout=NOTICE_SECONDS)


def series(text, name, **labels):
    """The value of the series `name` with exactly `labels` (in any order) in Prometheus text."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if found == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return None


def scrape(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        return r.read().decode()


def test_store_and_s3_metrics(moto, apus_factory):
    """The same setup scraped: the named store's hits, misses, bytes and size, the S3 requests
    it made, and its breaker's gauge."""
    tiered = {"fast_slow": {"fast": {"memory": {"max_bytes": 64 << 20}}, "slow": s3_store(moto)}}
    admin, apus = start(apus_factory, moto, tiered)
    cas = {"store": "cas"}
    before = scrape(admin)
    blob = bytes(range(256)) * 400  # 102400 bytes
    absent = digest(b"not uploaded")
    with grpc.insecure_channel(apus.address) as ch:
        response, d = upload(ch, blob)
        assert response.committed_size == len(blob)
        mid = scrape(admin)
        missing = re_grpc.ContentAddressableStorageStub(ch).FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(blob_digests=[d, absent])).missing_blob_digests
        assert list(missing) == [absent]
        assert download(ch, d) == blob
    after = scrape(admin)

    def delta(name, text_a, text_b, **labels):
        return (series(text_b, name, **labels) or 0) - (series(text_a, name, **labels) or 0)

    assert delta("apus_store_written_bytes_total", before, mid, **cas) == len(blob)
    assert delta("apus_store_hits_total", mid, after, **cas) == 2  # FindMissing found d, the read found it
    assert delta("apus_store_misses_total", mid, after, **cas) == 1  # FindMissing did not find `absent`
    assert delta("apus_store_read_bytes_total", mid, after, **cas) == len(blob)
    assert series(after, "apus_store_errors_total", operation="read", **cas) in (None, 0)
    # Held by the fast tier, sampled at scrape time.
    assert series(after, "apus_store_entries", **cas) == 1
    assert series(after, "apus_store_bytes", **cas) == len(blob)
    assert series(after, "apus_store_entries", store="ac") == 0
    # The slow tier's requests: one PUT of the blob; the bucket probes are HEADs.
    assert series(after, "apus_s3_requests_total", verb="PUT", status="200") == 1
    assert series(after, "apus_s3_request_duration_seconds_count", verb="PUT") == 1
    assert series(after, "apus_s3_requests_total", verb="HEAD", status="200") >= 1
    assert series(after, "apus_circuit_breaker_open", backend=f"s3 {moto.endpoint}/{BUCKET}") == 0
    for family in ["apus_store_hits_total", "apus_store_bytes", "apus_s3_requests_total", "apus_circuit_breaker_open"]:
        assert f"# HELP {family} " in after, family

    # Kill S3 and make the store's calls fail until the breaker opens: the gauge follows.
    moto.kill()
    with grpc.insecure_channel(apus.address) as ch:
        stub = re_grpc.ContentAddressableStorageStub(ch)
        deadline = time.monotonic() + 30
        while series(scrape(admin), "apus_circuit_breaker_open", backend=f"s3 {moto.endpoint}/{BUCKET}") != 1:
            assert time.monotonic() < deadline, "the breaker did not open"
            stub.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(blob_digests=[absent]))
        text = scrape(admin)
    assert series(text, "apus_s3_requests_total", verb="HEAD", status="error") >= 1
    status, body = get(admin, "/status")
    assert body["stores"]["cas"] == {"entries": 1, "bytes": len(blob)}
