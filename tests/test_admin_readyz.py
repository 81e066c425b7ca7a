"""/readyz follows the stores' backends (README "Health: /healthz and /readyz").

apus runs with an `s3` store on a moto server; moto is frozen (SIGSTOP: connections accepted,
nothing answers) or killed and started again. A store that needs the bucket makes the process
unready (503, the store under `not_ready`) within the probe's cache and timeout bounds, and
ready again once moto answers; a store that reaches the bucket only as the slow tier of a
`fast_slow` is listed under `degraded` and the process stays ready. `/healthz` answers 200
throughout.
"""
import json
import time
import urllib.error
import urllib.request

from conftest import cache_config, free_port
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
    apus_factory(config)
    return admin


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
    admin = start(apus_factory, moto, s3_store(moto))
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
    admin = start(apus_factory, moto, tiered)
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
