"""The Grafana dashboard's PromQL (promtool, documented names) and a real Prometheus scraping
apus's admin listener while real Bazel builds through it."""
import json
import os
import re
import time
from types import SimpleNamespace

import grpc
import pytest

from conftest import ApusProcess, free_port, missing_bazel
from execution import exec_config
from reapi import digest, re_grpc, re_pb2
from prometheus import (DASHBOARD, PROMETHEUS, PROMTOOL, PrometheusServer, dashboard_exprs,
                        documented_metrics, http_get, metric_names, panels, promtool, substitute,
                        variable_selectors)


def require(*tools):
    """Skips when a tool is missing, except under CI=true, where that fails the test."""
    missing = [t for t in tools if not os.path.exists(t)]
    if not missing:
        return
    message = "needs " + " and ".join(missing) + " (scripts/setup.sh --test installs prometheus)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail("CI=true but " + message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


def all_queries(dashboard):
    """(where, expr): every panel target, and every query variable's series selector."""
    return ([(f"panel {title!r}", expr) for title, expr in dashboard_exprs(dashboard)]
            + [(f"variable ${name}", sel) for name, sel in variable_selectors(dashboard)])


# ------------------------------------------------------------------ the dashboard, statically

def test_dashboard_is_an_importable_grafana_dashboard(dashboard):
    assert dashboard["title"] == "Apus" and dashboard["uid"] and 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), ids
    occupied = set()
    for p in panels(dashboard):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"{p['title']} overlaps another panel"
        occupied |= cells
        if p["type"] == "row":
            continue
        # Every query goes to the data source the importer picks.
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']} has no unit"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, v["name"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Cache hit ratios", "gRPC", "Stores", "S3", "Execution", "Workers",
                    "Process"]


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{job=~"x", code!="b_c"}[1m])))'
            ' / on (instance) group_left (version) b_total offset 5m > bool 1e-9 + count(c:rule)')
    assert metric_names(expr) == {"a_bucket", "b_total", "c:rule"}


def test_dashboard_queries_pass_promtool_check_rules(dashboard, tmp_path):
    require(PROMTOOL)
    queries = all_queries(dashboard)
    assert len(queries) >= 60, len(queries)
    rules = [{"record": f"panel_{i}", "expr": substitute(expr)} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=2))
    code, out = promtool("check", "rules", str(path))
    assert code == 0, out
    assert f"SUCCESS: {len(rules)} rules found" in out, out


def test_dashboard_variables_are_only_in_regex_matchers(dashboard):
    for where, expr in all_queries(dashboard):
        assert "$" not in substitute(expr), f"{where}: a variable outside an =~ matcher: {expr}"
        assert "datasource" not in expr, where


def test_dashboard_reads_only_documented_metrics(dashboard):
    documented = documented_metrics()
    assert len(documented) >= 50, sorted(documented)
    used = set()
    for where, expr in all_queries(dashboard):
        names = metric_names(substitute(expr))
        assert names, f"{where}: reads no metric: {expr}"
        assert names <= documented.keys(), f"{where}: undocumented {sorted(names - documented.keys())}"
        used |= names
    # Counters are read through rate/increase, histograms through their buckets.
    for where, expr in all_queries(dashboard):
        for name in metric_names(substitute(expr)):
            if documented[name] == "counter" and not where.startswith("variable"):
                assert re.search(rf"(rate|increase)\(\s*{name}\b", expr), f"{where}: raw counter {name}"
    # Every documented family has a panel.
    base = {re.sub(r"_(bucket|sum|count)$", "", n) if documented[n] == "histogram" else n for n in documented}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) if documented[n] == "histogram" else n for n in used}
    assert sorted(base - shown) == [], "documented but not on the dashboard"


# ------------------------------------------------------------------ a real Prometheus

def admin_config(tmp_path, admin_port):
    """Cache + scheduler + one local worker like configs/default.json, data under tmp_path."""
    config = exec_config(tmp_path, workers=1)
    data = tmp_path / "data"
    config["stores"] = {"cas": {"filesystem": {"path": str(data / "cas"), "max_bytes": 1 << 30}},
                        "ac": {"filesystem": {"path": str(data / "ac"), "max_bytes": 64 << 20}}}
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    return config


def wait_healthy(apus, admin_port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http_get(f"http://127.0.0.1:{admin_port}/healthz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        if apus.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"no /healthz on 127.0.0.1:{admin_port}: " + apus.read_log()[-4000:])


def families(text):
    """{family: type} from the `# TYPE` lines of a Prometheus text exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))


@pytest.mark.timeout(300)
def test_prometheus_scrapes_the_admin_listener(tmp_path, dashboard):
    """Also pins down what the dashboard's per-REAPI-instance panel relies on: the REAPI
    instance name is the `instance_name` label, apart from Prometheus's target `instance`;
    the default instance "" carries none (Prometheus drops empty labels)."""
    require(PROMETHEUS, PROMTOOL)
    admin_port = free_port()
    config = admin_config(tmp_path, admin_port)
    instances = config["servers"][0]["instances"]
    instances["team/a"] = instances[""]
    apus = ApusProcess(config, tmp_path).start()
    prom = None
    try:
        apus.wait_for_workers(1)
        wait_healthy(apus, admin_port)
        prom = PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{admin_port}", free_port()).wait_ready()
        prom.wait_scraped(time.time())
        assert prom.value('up{job="apus"}') == 1
        assert prom.value('sum(apus_build_info{job="apus"})') == 1
        assert 0 < prom.value('max(apus_uptime_seconds{job="apus"})') < 300
        # Two rounds of action-cache misses with a scrape between, so rates are defined.
        with grpc.insecure_channel(f"127.0.0.1:{apus.port}") as channel:
            stub = re_grpc.ActionCacheStub(channel)
            for names in (("team/a", ""), ("team/a", "team/a", "")):
                for name in names:
                    with pytest.raises(grpc.RpcError) as e:
                        stub.GetActionResult(re_pb2.GetActionResultRequest(
                            instance_name=name, action_digest=digest(name.encode() + b"absent")), timeout=10)
                    assert e.value.code() == grpc.StatusCode.NOT_FOUND
                prom.wait_scraped(time.time() + prom.interval)
        target = f"127.0.0.1:{admin_port}"
        misses = {(m.get("instance"), m.get("instance_name")): v for m, v in prom.query(
            'apus_action_cache_lookups_total{job="apus", result="miss"}')}
        assert misses == {(target, "team/a"): 3, (target, None): 2}
        # The panel shows both instance names, at 0 % (misses only) rather than no data.
        panel = next(expr for title, expr in dashboard_exprs(dashboard)
                     if title == "Action-cache hit ratio per REAPI instance name")
        ratios = {m.get("instance_name", ""): v for m, v in prom.query(substitute(panel))}
        assert ratios == {"team/a": 0.0, "": 0.0}
        status, text = http_get(f"http://127.0.0.1:{admin_port}/metrics")
        assert status == 200
        code, out = promtool("check", "metrics", stdin=text)
        assert code == 0, out
    finally:
        if prom:
            assert prom.stop() == 0, prom.read_log()[-4000:]
        assert apus.stop() == 0


HITS = 'sum(apus_action_cache_lookups_total{job="apus", result="hit"})'
COMPLETED = 'sum(apus_scheduler_actions_total{job="apus", outcome="completed"})'
WORKER_COMPLETED = 'sum(apus_worker_actions_total{job="apus", outcome="completed"})'
MISSES = 'sum(apus_action_cache_lookups_total{job="apus", result="miss"})'
# Families a cache + scheduler + local worker with filesystem stores records during a remote
# execution build. S3, breakers, resets, GOAWAYs, retries, evictions, store errors and
# write-behind need other set-ups (their families may be exported at 0). Not here either:
# apus_scheduler_actions_queued, whose series appear only once a scrape finds work queued
# for a platform, which a 1 s scrape of a 4 s build may or may not do.
EXERCISED = {
    "apus_grpc_requests_total", "apus_grpc_request_duration_seconds", "apus_grpc_received_bytes_total",
    "apus_grpc_sent_bytes_total", "apus_grpc_in_flight_requests", "apus_grpc_connections",
    "apus_store_hits_total", "apus_store_misses_total", "apus_store_read_bytes_total",
    "apus_store_written_bytes_total", "apus_store_entries", "apus_store_bytes",
    "apus_action_cache_lookups_total", "apus_scheduler_actions_running",
    "apus_scheduler_actions_total", "apus_scheduler_queue_wait_seconds", "apus_scheduler_execution_seconds",
    "apus_scheduler_workers", "apus_scheduler_slots", "apus_scheduler_slots_busy",
    "apus_scheduler_desired_workers", "apus_worker_actions_total", "apus_worker_input_fetch_bytes_total",
    "apus_worker_input_fetch_seconds", "apus_worker_input_cache_hits_total",
    "apus_worker_input_cache_misses_total", "apus_worker_output_upload_bytes_total",
    "apus_worker_output_upload_seconds", "apus_build_info", "apus_uptime_seconds",
    "apus_process_resident_memory_bytes", "apus_process_open_fds", "apus_process_cpu_seconds_total",
}


@pytest.fixture(scope="module")
def scraped_builds(tmp_path_factory):
    """apus (cache + scheduler + one worker, admin listener) scraped every second by Prometheus
    while Bazel builds the example with --remote_executor, cleans, and builds again. Holds each
    build's summary and Prometheus's scrape instants before, after the first and after the
    second build."""
    missing = missing_bazel() + [t for t in (PROMETHEUS, PROMTOOL) if not os.path.exists(t)]
    if missing:
        message = "needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("CI=true but " + message, pytrace=False)
        pytest.skip(message)
    from test_bazel_remote_cache import Bazel
    from test_bazel_remote_execution import run_remote

    tmp_path = tmp_path_factory.mktemp("scraped")
    admin_port = free_port()
    apus = ApusProcess(admin_config(tmp_path, admin_port), tmp_path)
    prom = bazel = None
    try:
        apus.start().wait_for_workers(1)
        wait_healthy(apus, admin_port)
        prom = PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{admin_port}", free_port()).wait_ready()
        run = SimpleNamespace(prom=prom, apus=apus, admin_port=admin_port, builds=[], instants=[],
                              seconds=[])
        run.instants.append(prom.wait_scraped(time.time()))
        bazel = Bazel(tmp_path)
        for i in range(2):
            if i:
                bazel.clean()
            started = time.time()
            run.builds.append(run_remote(bazel, apus.port))
            run.seconds.append(time.time() - started)
            # A scrape that began a full interval after Bazel returned holds the build's counts.
            run.instants.append(prom.wait_scraped(time.time() + prom.interval))
        run.metrics = http_get(f"http://127.0.0.1:{admin_port}/metrics")[1]
        (tmp_path / "metrics.txt").write_text(run.metrics)  # for a failing test's reader
        print(f"builds took {run.seconds[0]:.1f} s and {run.seconds[1]:.1f} s: "
              f"{run.builds[0][2]!r}, {run.builds[1][2]!r}")
        yield run
    finally:
        if bazel:
            bazel.shutdown()
        if prom:
            prom.stop()
        apus.stop()


def increase(run, expr, build):
    """The counter expression's increase from before to after build `build` (0 or 1), read from
    Prometheus at the scrape instants around it."""
    return run.prom.value(expr, at=run.instants[build + 1]) - run.prom.value(expr, at=run.instants[build])


BAZEL_TIMEOUT = pytest.mark.timeout(1800)  # the builds run in the first test that needs them


@BAZEL_TIMEOUT
def test_action_cache_hits_match_bazel_remote_cache_hits(scraped_builds):
    run = scraped_builds
    first, second = run.builds
    assert first[1].get("remote", 0) > 0, first[2]
    assert second[1].get("remote cache hit", 0) == second[0] - second[1].get("internal", 0) > 0, second[2]
    assert (increase(run, HITS, 0), increase(run, HITS, 1)) == (
        first[1].get("remote cache hit", 0), second[1]["remote cache hit"]), (first[2], second[2])


@BAZEL_TIMEOUT
def test_completed_actions_match_bazel_remote_actions(scraped_builds):
    run = scraped_builds
    first, second = run.builds
    assert (increase(run, COMPLETED, 0), increase(run, COMPLETED, 1)) == (
        first[1]["remote"], second[1].get("remote", 0)), (first[2], second[2])
    # The worker's count agrees, and each executed action was first a lookup that missed.
    assert (increase(run, WORKER_COMPLETED, 0), increase(run, WORKER_COMPLETED, 1)) == (
        first[1]["remote"], second[1].get("remote", 0)), (first[2], second[2])
    assert (increase(run, MISSES, 0), increase(run, MISSES, 1)) == (first[1]["remote"], 0)


@BAZEL_TIMEOUT
def test_metrics_after_builds_pass_promtool_check_metrics(scraped_builds):
    code, out = promtool("check", "metrics", stdin=scraped_builds.metrics)
    assert code == 0, out


@BAZEL_TIMEOUT
def test_exported_families_are_the_documented_ones(scraped_builds):
    documented = documented_metrics()
    exported = {n: k for n, k in families(scraped_builds.metrics).items() if n.startswith("apus_")}
    wrong = {n: (k, documented.get(n)) for n, k in exported.items() if documented.get(n) != k}
    assert not wrong, f"exported (type, documented type): {wrong}"
    missing = sorted(EXERCISED - exported.keys())
    assert not missing, "documented, exercised by the build, not exported: " + ", ".join(missing)


@BAZEL_TIMEOUT
def test_every_dashboard_query_runs_on_prometheus(scraped_builds, dashboard):
    run = scraped_builds
    empty = []
    for where, expr in all_queries(dashboard):
        result = run.prom.query(substitute(expr), at=run.instants[-1])  # asserts status success
        names = {re.sub(r"_(bucket|sum|count)$", "", n) for n in metric_names(expr)}
        if not result and names <= EXERCISED:
            empty.append(f"{where}: {expr}")
    assert not empty, "queries on exercised metrics returned nothing:\n" + "\n".join(empty)
