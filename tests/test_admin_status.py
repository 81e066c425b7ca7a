"""`/status` (schema version 1, docs/operations.md) during a run with a long queue: the
documented fields and types, queued/running counts, and `desired_workers` rising with the
queue and falling to 0 when idle."""
import json
import time
import urllib.request

import grpc
import pytest

from admin import (SleepingQueue, admin_exec_config, desired_workers, http_get, http_get_json, wait_ready,
                   wait_status)
from execution import Action, response_of
from reapi import re_grpc, re_pb2

SLOTS = 2
ACTIONS = 10
SLEEP = 2


def is_int(v):
    return type(v) is int


def is_number(v):
    return type(v) in (int, float)


def check_platform(platform, values_are_lists):
    assert isinstance(platform, dict), platform
    for key, value in platform.items():
        assert isinstance(key, str)
        if values_are_lists:
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), platform
        else:
            assert isinstance(value, str), platform


def check_schema(s):
    """Every documented field of /status, with its type."""
    assert s["schema_version"] == 1 and is_int(s["schema_version"])
    assert isinstance(s["version"], str) and s["version"]
    assert is_number(s["uptime_seconds"]) and s["uptime_seconds"] >= 0
    assert isinstance(s["roles"], list) and all(isinstance(r, str) for r in s["roles"])
    assert {"cas", "action_cache", "execution", "worker"} <= set(s["roles"]), s["roles"]
    assert type(s["ready"]) is bool and type(s["draining"]) is bool
    assert list(s["schedulers"]) == ["main"]
    sched = s["schedulers"]["main"]
    for key in ("queued", "running", "slots", "busy", "desired_workers"):
        assert is_int(sched[key]) and sched[key] >= 0, (key, sched)
    assert sched.get("oldest_queued_seconds") is None or is_number(sched["oldest_queued_seconds"]), sched
    assert isinstance(sched["platforms"], list)
    for p in sched["platforms"]:
        check_platform(p["platform"], values_are_lists=False)
        for key in ("queued", "running", "desired_workers"):
            assert is_int(p[key]) and p[key] >= 0, (key, p)
        assert is_number(p["slots_per_worker"]) and p["slots_per_worker"] > 0, p
        assert p.get("oldest_queued_seconds") is None or is_number(p["oldest_queued_seconds"]), p
    assert isinstance(sched["workers"], list)
    for w in sched["workers"]:
        assert isinstance(w["id"], str) and w["id"]
        check_platform(w["platform"], values_are_lists=True)
        assert is_int(w["slots"]) and is_int(w["busy"]) and 0 <= w["busy"] <= w["slots"], w
        assert type(w["draining"]) is bool
        assert is_number(w["last_keepalive_seconds"]) and 0 <= w["last_keepalive_seconds"] < 60, w
    assert isinstance(s["stores"], dict)
    for name, store in s["stores"].items():
        assert is_int(store["entries"]) and is_int(store["bytes"]), (name, store)
    assert isinstance(s["action_cache"], dict)
    for instance, counts in s["action_cache"].items():
        assert is_int(counts["hits"]) and is_int(counts["misses"]), (instance, counts)
    assert isinstance(s["workers"], list)
    for w in s["workers"]:
        assert isinstance(w["id"], str) and isinstance(w["scheduler"], str)
        assert type(w["registered"]) is bool and type(w["draining"]) is bool
        assert is_int(w["slots"]) and is_int(w["busy"])
    assert is_int(s["grpc"]["requests"]) and is_int(s["grpc"]["errors"])
    assert isinstance(s["recent_errors"], list) and len(s["recent_errors"]) <= 50
    for e in s["recent_errors"]:
        assert isinstance(e["time"], str) and isinstance(e["level"], str) and isinstance(e["message"], str), e


def check_desired(sched):
    """docs/operations.md: per platform ceil((queued + running) / slots_per_worker), 0 when
    idle; the scheduler's is the sum over its platforms."""
    for p in sched["platforms"]:
        assert p["desired_workers"] == desired_workers(p["queued"], p["running"], p["slots_per_worker"]), p
    assert sched["desired_workers"] == sum(p["desired_workers"] for p in sched["platforms"]), sched
    assert sched["queued"] == sum(p["queued"] for p in sched["platforms"]), sched
    assert sched["running"] == sum(p["running"] for p in sched["platforms"]), sched


def lookup(ch, action):
    """GetActionResult: True on a hit, False on NOT_FOUND."""
    try:
        re_grpc.ActionCacheStub(ch).GetActionResult(re_pb2.GetActionResultRequest(action_digest=action.digest))
        return True
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return False


@pytest.fixture
def executor(apus_factory, tmp_path):
    config, admin_port = admin_exec_config(tmp_path, SLOTS, ac_store={"filesystem": {"path": str(tmp_path / "ac")}})
    apus = apus_factory(config).wait_for_workers(1)
    apus.admin_url = f"http://127.0.0.1:{admin_port}"
    wait_ready(apus.admin_url)
    return apus


def test_status_through_a_long_queue(executor):
    """Scheduler `main`: queued/running, per-platform entry, connected worker, and
    desired_workers = ceil((queued + running) / slots_per_worker) rising with the queue
    and back to 0 when idle."""
    url = executor.admin_url
    idle = http_get_json(url + "/status")
    check_schema(idle)
    main = idle["schedulers"]["main"]
    assert idle["ready"] is True and idle["draining"] is False
    assert (main["queued"], main["running"], main["busy"], main["desired_workers"]) == (0, 0, 0, 0), main
    assert main["slots"] == SLOTS
    [worker] = main["workers"]
    assert (worker["slots"], worker["busy"], worker["draining"]) == (SLOTS, 0, False), worker

    with grpc.insecure_channel(executor.address) as ch:
        queue = SleepingQueue(ch, ACTIONS, SLEEP)
        started = time.time()
        queue.start()
        try:
            # All submitted: SLOTS running, the rest queued.
            busy = wait_status(url, lambda s: s["schedulers"]["main"]["queued"] + s["schedulers"]["main"]["running"]
                               == ACTIONS and s["schedulers"]["main"]["running"] == SLOTS,
                               timeout=30, what=f"{ACTIONS} actions queued or running")
            submitted = time.time() - started
            check_schema(busy)
            main = busy["schedulers"]["main"]
            check_desired(main)
            assert (main["queued"], main["running"], main["busy"], main["slots"]) == (ACTIONS - SLOTS, SLOTS, SLOTS, SLOTS)
            assert main["desired_workers"] == desired_workers(ACTIONS - SLOTS, SLOTS, SLOTS) == 5
            assert is_number(main["oldest_queued_seconds"]) and 0 <= main["oldest_queued_seconds"] < 60, main
            [platform] = main["platforms"]
            assert platform["platform"] == {} and platform["slots_per_worker"] == SLOTS, platform
            assert (platform["queued"], platform["running"], platform["desired_workers"]) == (ACTIONS - SLOTS, SLOTS, 5)
            [worker] = main["workers"]
            assert (worker["slots"], worker["busy"]) == (SLOTS, SLOTS), worker

            # As the queue drains, desired_workers follows it (still counting what runs).
            later = wait_status(url, lambda s: 0 < s["schedulers"]["main"]["queued"] < ACTIONS - SLOTS,
                                timeout=30, what="the queue shrinking")
            main = later["schedulers"]["main"]
            check_desired(main)
            assert 1 <= main["desired_workers"] < 5, main
            assert main["oldest_queued_seconds"] >= 0, main

            assert queue.join(timeout=ACTIONS / SLOTS * SLEEP + 60), "actions did not finish"
            elapsed = time.time() - started
        finally:
            queue.cancel()
        assert not queue.errors, queue.errors
        assert all(response_of(op).result.exit_code == 0 for op in queue.responses)

    done = http_get_json(url + "/status")
    check_schema(done)
    main = done["schedulers"]["main"]
    assert (main["queued"], main["running"], main["busy"], main["desired_workers"]) == (0, 0, 0, 0), main
    assert all(p["desired_workers"] == 0 for p in main["platforms"]), main["platforms"]
    assert main.get("oldest_queued_seconds") is None, main
    print(f"\n{ACTIONS} actions x {SLEEP} s on {SLOTS} slots: all queued/running after {submitted:.2f} s, "
          f"done after {elapsed:.1f} s")


def test_status_reports_stores_lookups_and_local_workers(executor):
    """`stores` (memory CAS, filesystem AC), `action_cache` lookups per instance, and the
    local worker, which is the scheduler's connected worker."""
    url = executor.admin_url
    with grpc.insecure_channel(executor.address) as ch:
        actions = [Action(ch, ["/bin/sh", "-c", f"echo {i}"]) for i in range(3)]
        assert lookup(ch, actions[0]) is False  # GetActionResult: a miss for instance ""
        for a in actions:
            _, r = a.execute()
            assert r.status.code == 0 and r.result.exit_code == 0 and not r.cached_result
        assert lookup(ch, actions[0]) is True  # a hit
        _, cached = actions[1].execute()  # Execute answered from the cache: a hit
        assert cached.cached_result

        s = http_get_json(url + "/status")
        check_schema(s)
        # Execute's own cache misses are not lookups.
        assert s["action_cache"] == {"": {"hits": 2, "misses": 1}}, s["action_cache"]
        stores = s["stores"]
        assert set(stores) == {"cas", "ac"}, stores
        assert stores["ac"]["entries"] == len(actions) and stores["ac"]["bytes"] > 0, stores
        # Each action and command, and the outputs (stdout may be inlined, so not counted).
        assert stores["cas"]["entries"] >= 2 * len(actions), stores
        assert stores["cas"]["bytes"] >= sum(len(a.bytes) for a in actions), stores

        [connected] = s["schedulers"]["main"]["workers"]
        [local] = s["workers"]
        assert local == {"id": connected["id"], "scheduler": f"grpc://127.0.0.1:{executor.port}",
                         "registered": True, "slots": SLOTS, "busy": 0, "draining": False}, local

        # A running action shows as busy on both sides.
        queue = SleepingQueue(ch, 1, SLEEP).start()
        try:
            running = wait_status(url, lambda s: s["schedulers"]["main"]["running"] == 1, timeout=30,
                                  what="one action running")
            assert running["workers"][0]["busy"] == 1 and running["schedulers"]["main"]["workers"][0]["busy"] == 1
            assert queue.join(timeout=SLEEP + 60)
        finally:
            queue.cancel()


def test_status_content_type_and_unknown_paths(executor):
    status, headers, body = http_get(executor.admin_url + "/status")
    assert status == 200 and headers["content-type"].startswith("application/json"), (status, headers)
    status, headers, body = http_get(executor.admin_url + "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8", (status, headers)
    assert b"<!doctype html>" in body[:100] and b"fetch(\"status\"" in body


def test_drain_finishes_running_actions_and_takes_no_new_ones(tmp_path, apus_factory):
    """POST /drain: /readyz turns 503 at once, the local worker finishes what it runs and
    takes nothing new (a later action stays queued), and the process keeps serving."""
    config, admin_port = admin_exec_config(tmp_path, slots=1)
    apus = apus_factory(config)
    admin = f"http://127.0.0.1:{admin_port}"
    wait_ready(admin)
    with grpc.insecure_channel(apus.address) as ch:
        first = SleepingQueue(ch, 1, 2).start()
        wait_status(admin, lambda s: s["schedulers"]["main"]["running"] == 1, what="the action running")
        request = urllib.request.Request(admin + "/drain", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 202 and json.loads(r.read())["draining"] is True
        status, _, body = http_get(admin + "/readyz")
        assert status == 503 and json.loads(body)["draining"] is True
        assert first.join(30) and not first.errors
        assert response_of(first.responses[0]).result.exit_code == 0
        later = Action(ch, ["/bin/sh", "-c", "echo later"])
        stream = re_grpc.ExecutionStub(ch).Execute(re_pb2.ExecuteRequest(action_digest=later.digest), timeout=60)
        next(stream)  # accepted and queued
        s = wait_status(admin, lambda s: s["schedulers"]["main"]["queued"] == 1, what="the later action queued")
        time.sleep(2)
        s = http_get_json(admin + "/status")
        assert s["schedulers"]["main"]["queued"] == 1 and s["schedulers"]["main"]["running"] == 0
        assert s["draining"] is True and s["workers"][0]["draining"] is True and s["workers"][0]["registered"]
        assert s["schedulers"]["main"]["workers"][0]["draining"] is True
        stream.cancel()
