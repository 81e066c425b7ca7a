"""Every GOAWAY and RST_STREAM apus sends because of a limit or a protocol error shows in its
log with the reason and the peer, and in /metrics; `global.log_format: json` writes one JSON
object per line. Raw HTTP/2 clients (rawh2) misbehave on purpose against a real apus."""
import json
import re
import time
import urllib.request

import pytest

from conftest import ApusProcess, cache_config, free_port
from rawh2 import (DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, RST_STREAM, RawConnection, frame, grpc_headers,
                   hpack)

WRITE = "/google.bytestream.ByteStream/Write"
CAPABILITIES = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"
CANCEL = (8).to_bytes(4, "big")
PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 1, 11


def pump_until(conn, predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.pump()
        if predicate(conn.frames()) or conn.closed:
            break
        time.sleep(0.05)
    return predicate(conn.frames())


def goaway_codes(frames):
    return [int.from_bytes(f[3][4:8], "big") for f in frames if f[0] == GOAWAY]


def peer(conn):
    """How apus names this connection's peer in its log."""
    return f"127.0.0.1:{conn.sock.getsockname()[1]}"


def wait_for_log(apus, pattern, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        m = re.search(pattern, apus.read_log(since_launch=True), re.M)
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"no log line matches {pattern!r}:\n{apus.read_log(since_launch=True)[-3000:]}")


def test_protocol_error_goaway_is_logged_with_reason_and_peer(apus_factory):
    apus = apus_factory(cache_config({"memory": {}}))
    c = RawConnection(apus.port)
    c.send(frame(RST_STREAM, 0, 0, CANCEL))  # RST_STREAM on stream 0: a connection error
    assert pump_until(c, lambda fs: any(f[0] == GOAWAY for f in fs))
    assert goaway_codes(c.frames()) == [PROTOCOL_ERROR]
    line = wait_for_log(apus, r"^.*\bwarning\b.*sent GOAWAY$")[0]
    assert "code=PROTOCOL_ERROR" in line and "reason=protocol_error" in line, line
    assert "detail=RST_STREAM: stream_id == 0" in line, line
    assert f"peer={peer(c)}" in line, line
    c.close()


def test_a_flood_of_bad_clients_does_not_flood_the_log(apus_factory):
    """One warning per bad connection, but at most a burst of 20 and then 2 a second for all
    of them together; the next line written says how many were left out."""
    apus = apus_factory(cache_config({"memory": {}}))
    start = time.monotonic()
    for _ in range(80):
        c = RawConnection(apus.port)
        c.send(frame(RST_STREAM, 0, 0, CANCEL))
        assert pump_until(c, lambda fs: any(f[0] == GOAWAY for f in fs))
        c.close()
    elapsed = time.monotonic() - start
    time.sleep(1.5)
    c = RawConnection(apus.port)
    c.send(frame(RST_STREAM, 0, 0, CANCEL))
    assert pump_until(c, lambda fs: any(f[0] == GOAWAY for f in fs))
    wait_for_log(apus, rf"^.*peer={peer(c)} .*sent GOAWAY$")
    lines = [line for line in apus.read_log(since_launch=True).splitlines() if line.endswith("sent GOAWAY")]
    assert 20 <= len(lines) <= 20 + 2 * (elapsed + 2) and len(lines) < 81, (len(lines), elapsed)
    # Every line left out is accounted for by a later one (the last connection's at the latest).
    assert sum(int(m) for m in re.findall(r"lines_skipped=(\d+)", "\n".join(lines))) == 81 - len(lines)
    c.close()


def test_stalled_upload_reset_is_logged_with_peer(apus_factory):
    apus = apus_factory(cache_config({"memory": {}}, limits={"upload_idle_timeout_seconds": 1}))
    c = RawConnection(apus.port)
    c.send(frame(HEADERS, END_HEADERS, 1, grpc_headers(WRITE, apus.port)))
    assert pump_until(c, lambda fs: any(f[0] == RST_STREAM for f in fs))
    assert [(f[2], f[3]) for f in c.frames() if f[0] == RST_STREAM] == [(1, CANCEL)]
    line = wait_for_log(apus, r"^.*cancelling calls whose request sent nothing$")[0]
    assert " info " in line and "calls=1" in line and "seconds=1" in line, line
    assert f"peer={peer(c)}" in line, line
    c.close()


def test_rapid_reset_gets_enhance_your_calm_and_one_log_line(apus_factory):
    """CVE-2023-44487: the answer is GOAWAY ENHANCE_YOUR_CALM (not nghttp2's INTERNAL_ERROR),
    logged once with the peer, and the connection ends."""
    apus = apus_factory(cache_config({"memory": {}}))
    c = RawConnection(apus.port)
    burst = bytearray()
    for i in range(10000):
        burst += frame(HEADERS, END_HEADERS, 2 * i + 1, grpc_headers(WRITE, apus.port))
        burst += frame(RST_STREAM, 0, 2 * i + 1, CANCEL)
    c.send_all(bytes(burst))  # the server may close before the whole burst is written
    assert pump_until(c, lambda fs: False, seconds=10) is False and c.closed, "the connection was not closed"
    assert goaway_codes(c.frames()) == [ENHANCE_YOUR_CALM]
    line = wait_for_log(apus, r"^.*sent GOAWAY$")[0]
    assert " warning " in line and "code=ENHANCE_YOUR_CALM" in line and "reason=too_many_resets" in line, line
    assert f"peer={peer(c)}" in line, line
    time.sleep(0.5)
    assert apus.read_log(since_launch=True).count("sent GOAWAY") == 1


def test_a_client_cancelling_many_calls_is_not_cut_off(apus_factory):
    """Bazel interrupted: every call in flight is cancelled, twice. nghttp2's own guard
    answered the 1001st RST_STREAM with GOAWAY INTERNAL_ERROR; 2 × 900 must pass."""
    apus = apus_factory(cache_config({"memory": {}}))
    c = RawConnection(apus.port)
    sid = 1
    for _ in range(2):
        ids = list(range(sid, sid + 2 * 900, 2))
        sid = ids[-1] + 2
        c.send_all(b"".join(frame(HEADERS, END_HEADERS, i, grpc_headers(WRITE, apus.port)) for i in ids))
        time.sleep(0.5)  # the calls are running
        c.send_all(b"".join(frame(RST_STREAM, 0, i, CANCEL) for i in ids))
        time.sleep(0.3)
    c.send(frame(HEADERS, END_HEADERS, sid, grpc_headers(CAPABILITIES, apus.port)) +
           frame(DATA, END_STREAM, sid, b"\x00\x00\x00\x00\x00"))
    assert pump_until(c, lambda fs: any(f[0] == HEADERS and f[2] == sid and f[1] & END_STREAM for f in fs)), \
        "the connection stopped serving"
    assert not any(f[0] == GOAWAY for f in c.frames()), goaway_codes(c.frames())
    assert " warning " not in apus.read_log(since_launch=True)
    c.close()


def test_stream_protocol_errors_are_logged_once_per_connection_then_counted(apus_factory):
    apus = apus_factory(cache_config({"memory": {}}))
    c = RawConnection(apus.port)
    bad = hpack([(":method", "POST"), (":scheme", "http"), (":path", WRITE), (":authority", "x"),
                 ("content-type", "application/grpc"), ("X-Upper-Case", "not allowed in HTTP/2")])
    for sid in range(1, 13, 2):
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, bad))
    assert pump_until(c, lambda fs: sum(f[0] == RST_STREAM for f in fs) == 6)
    assert {int.from_bytes(f[3], "big") for f in c.frames() if f[0] == RST_STREAM} == {PROTOCOL_ERROR}
    assert not any(f[0] == GOAWAY for f in c.frames())  # a stream error, not a connection error
    line = wait_for_log(apus, r"^.*sent RST_STREAM$")[0]
    assert " info " in line and "code=PROTOCOL_ERROR" in line and "reason=protocol_error" in line, line
    assert "stream=1 " in line and "detail=Invalid HTTP header field was received" in line, line
    assert f"peer={peer(c)}" in line, line
    name = peer(c)
    c.close()  # the other five are summed up when the connection closes
    line = wait_for_log(apus, r"^.*sent more RST_STREAM frames on the connection$")[0]
    assert "count=5" in line and "reason=protocol_error" in line and f"peer={name}" in line, line
    assert apus.read_log(since_launch=True).count("sent RST_STREAM") == 1


def metric(text, name, labels=""):
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m[1]) if m else None


def test_goaways_resets_and_connections_are_counted(apus_factory):
    config = cache_config({"memory": {}}, limits={"upload_idle_timeout_seconds": 1})
    port = free_port()
    config["admin"] = {"listen": f"127.0.0.1:{port}"}
    apus = apus_factory(config)
    stalled = RawConnection(apus.port)
    stalled.send(frame(HEADERS, END_HEADERS, 1, grpc_headers(WRITE, apus.port)))
    assert pump_until(stalled, lambda fs: any(f[0] == RST_STREAM for f in fs))
    bad = RawConnection(apus.port)
    bad.send(frame(RST_STREAM, 0, 0, CANCEL))
    assert pump_until(bad, lambda fs: any(f[0] == GOAWAY for f in fs))
    assert pump_until(bad, lambda fs: False, seconds=5) is False and bad.closed
    time.sleep(0.3)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert metric(text, "apus_grpc_stream_resets_total", '{reason="upload_stalled"}') == 1, text
    assert metric(text, "apus_grpc_goaways_total", '{reason="protocol_error"}') == 1, text
    assert metric(text, "apus_grpc_goaways_total", '{reason="too_many_resets"}') == 0, text
    assert metric(text, "apus_grpc_connections") == 1, text  # `stalled` is still open
    stalled.close()


class JSONLogApus(ApusProcess):
    """apus with `log_format: json`: the bound port comes from the `listening` record."""

    def records(self):
        return [json.loads(line) for line in self.read_log(since_launch=True).splitlines() if line.strip()]

    def _wait_listening(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            for r in self.records():
                if r["message"] == "listening":
                    return int(r["address"].rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        raise RuntimeError("apus did not log `listening`: " + self.read_log())


@pytest.fixture
def json_apus(tmp_path):
    config = cache_config({"memory": {}})
    config["global"]["log_format"] = "json"
    p = JSONLogApus(config, tmp_path)
    yield p.start()
    p.stop()


def test_json_log_lines(json_apus):
    c = RawConnection(json_apus.port)
    c.send(frame(RST_STREAM, 0, 0, CANCEL))
    assert pump_until(c, lambda fs: any(f[0] == GOAWAY for f in fs))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(r["message"] == "sent GOAWAY" for r in json_apus.records()):
        time.sleep(0.1)
    records = json_apus.records()  # every line parses as one JSON object
    for r in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]), r
        assert r["level"] in ("trace", "debug", "info", "notice", "warning", "error", "critical"), r
        assert r["label"] == "apus" and r["source"].startswith("Apus"), r
    listening = next(r for r in records if r["message"] == "listening")
    assert listening["level"] == "info" and listening["address"].endswith(f":{json_apus.port}"), listening
    goaway = next(r for r in records if r["message"] == "sent GOAWAY")
    assert goaway["level"] == "warning" and goaway["source"] == "ApusRPC", goaway
    assert goaway["code"] == "PROTOCOL_ERROR" and goaway["reason"] == "protocol_error", goaway
    assert goaway["detail"] == "RST_STREAM: stream_id == 0", goaway
    assert goaway["peer"] == peer(c), goaway
    c.close()
