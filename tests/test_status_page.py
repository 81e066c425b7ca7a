"""The status page at the admin listener's `/`, loaded in headless Chromium: it renders a
live queue and its workers from `/status`, logs no errors, fits a phone screen, asks for a
token, survives an outage, and shows client-controlled strings as text."""
import http.server
import json
import os
import threading
import time

import grpc
import pytest

from admin import SleepingQueue, admin_exec_config, http_get, http_get_json, wait_ready
from conftest import ApusProcess, cache_config, free_port
from test_auth import new_token

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian chromium, chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def busy_apus(tmp_path_factory):
    """apus with one 1-slot worker and six distinct 5 s actions: one runs, five wait."""
    tmp_path = tmp_path_factory.mktemp("status_page")
    config, admin_port = admin_exec_config(tmp_path, slots=1)
    apus = ApusProcess(config, tmp_path).start().wait_for_workers(1)
    apus.admin_url = f"http://127.0.0.1:{admin_port}"
    channel = grpc.insecure_channel(apus.address)
    queue = None
    try:
        wait_ready(apus.admin_url)
        queue = SleepingQueue(channel, 6, 5).start()
        yield apus
    finally:
        if queue:
            queue.cancel()
        channel.close()
        apus.stop()


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield d
    d.quit()


def severe(entries):
    return [e for e in entries if e["level"] == "SEVERE"]


def load(driver, url):
    """Loads the page and waits (≤ 15 s) until it shows a worker and a non-empty queue."""
    started = time.time()
    driver.get(url)
    WebDriverWait(driver, 15).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".worker-row")
        and d.find_element(By.ID, "queued-main").text.isdigit()
        and int(d.find_element(By.ID, "queued-main").text) > 0)
    return time.time() - started


def test_page_shows_the_queue_and_workers(busy_apus, driver):
    driver.set_window_size(1280, 900)
    elapsed = load(driver, busy_apus.admin_url + "/")
    status = http_get_json(busy_apus.admin_url + "/status")
    [worker] = status["schedulers"]["main"]["workers"]
    rows = driver.find_elements(By.CSS_SELECTOR, ".worker-row")
    assert [r.get_attribute("data-id") for r in rows] == [worker["id"]]
    assert rows[0].find_elements(By.TAG_NAME, "td")[2].text == "1"  # slots
    assert driver.find_element(By.ID, "running-main").text == "1"
    assert driver.find_element(By.ID, "state").text == "ready"
    assert driver.find_element(By.ID, "version").text == status["version"]
    assert int(driver.find_element(By.ID, "desired-main").text) >= 1
    # Stores and local workers as /status has them (test_admin_status checks their content).
    assert sorted(r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, ".store-row")) \
        == sorted(status["stores"])
    assert [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, ".local-worker-row")] \
        == [w["id"] for w in status["workers"]]
    assert len(driver.find_elements(By.CSS_SELECTOR, ".error-row")) == len(status["recent_errors"])
    # A later poll (every 2 s) updates the page in place.
    first = driver.find_element(By.ID, "updated").text
    WebDriverWait(driver, 6).until(lambda d: d.find_element(By.ID, "updated").text != first)
    assert severe(driver.get_log("browser")) == []
    print(f"\npage showed the queue {elapsed:.2f} s after load")


def test_page_fits_a_phone(busy_apus, driver):
    driver.set_window_size(390, 844)
    load(driver, busy_apus.admin_url + "/")
    width, inner = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"horizontal scrollbar: content {width} px wide in a {inner} px window"
    assert driver.execute_script(
        "return document.querySelector('meta[name=viewport]').content") == "width=device-width, initial-scale=1"
    assert severe(driver.get_log("browser")) == []


def script_errors(entries):
    """SEVERE browser-log entries other than the network's own report of a failed or
    refused fetch (which the page expects and handles)."""
    return [e for e in severe(entries) if e.get("source") != "network"]


def test_page_asks_for_a_token_when_status_needs_one(tmp_path, driver):
    tokens = {name: new_token(name) for name in ("root", "reader")}
    (tmp_path / "tokens").write_text("".join(line + "\n" for _, line in tokens.values()))
    config = cache_config({"memory": {}})
    config["auth"] = {"tokens": str(tmp_path / "tokens"), "admin": ["root"],
                      "instances": {"*": {"reader": ["read"], "root": ["read"]}}}
    admin_port = free_port()
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    apus = ApusProcess(config, tmp_path).start()
    try:
        url = f"http://127.0.0.1:{admin_port}"
        wait_ready(url)
        driver.set_window_size(1280, 900)
        driver.get(url + "/")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "auth").is_displayed())
        assert driver.find_element(By.ID, "state").text == "needs token"
        assert driver.find_elements(By.CSS_SELECTOR, ".store-row") == []

        field = driver.find_element(By.ID, "token")
        field.send_keys(tokens["reader"][0] + "\n")  # valid, but no `admin` permission
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "state").text == "forbidden")
        field.clear()
        field.send_keys(tokens["root"][0] + "\n")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "state").text == "ready")
        assert not driver.find_element(By.ID, "auth").is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('apus-status-token')") == tokens["root"][0]
        # The token survives a reload (same tab): no form this time.
        driver.refresh()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "state").text == "ready")
        assert not driver.find_element(By.ID, "auth").is_displayed()
        assert script_errors(driver.get_log("browser")) == []
    finally:
        apus.stop()


def test_page_shows_unreachable_with_the_last_good_update(tmp_path, driver):
    config = cache_config({"memory": {}})
    admin_port = free_port()
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    apus = ApusProcess(config, tmp_path).start()
    try:
        url = f"http://127.0.0.1:{admin_port}"
        wait_ready(url)
        driver.get(url + "/")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "state").text == "ready")
        good = driver.find_element(By.ID, "updated").text
        assert good.startswith("updated ")
    finally:
        apus.stop()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "state").text == "unreachable")
    assert driver.find_element(By.ID, "updated").text == "unreachable · last good update: " + good[len("updated "):]
    # The last data stays on the page, dimmed.
    assert driver.find_element(By.ID, "version").text not in ("", "–")
    assert "stale" in driver.find_element(By.TAG_NAME, "body").get_attribute("class")
    assert script_errors(driver.get_log("browser")) == []


HOSTILE = "<img src=x onerror=\"window.pwned=1\">"
FEED = {
    "schema_version": 1, "version": "9.9.9", "uptime_seconds": 90061, "ready": True, "draining": False,
    "schedulers": {"main": {
        "queued": 3, "running": 1, "oldest_queued_seconds": 75.5, "slots": 2, "busy": 1, "desired_workers": 2,
        "platforms": [{"platform": {"OSFamily": "linux"}, "queued": 3, "running": 1, "slots_per_worker": 2,
                       "desired_workers": 2}, None, "junk"],
        "workers": [{"id": HOSTILE, "platform": {"OSFamily": ["linux"], "pool": ["a", "b"]}, "slots": 2, "busy": 1,
                     "draining": False, "last_keepalive_seconds": 0.8}, {"id": "partial"}],
    }, "broken": None},
    "stores": {"cas": {"entries": 1042, "bytes": 88123456}, "ac": {"entries": 0, "bytes": 0}},
    "action_cache": {"": {"hits": 120, "misses": 40}, "team/a": {"hits": 0, "misses": 0}},
    "workers": "not a list",
    "recent_errors": [
        {"time": "2026-11-27T20:41:07Z", "level": "warning", "message": "<script>window.pwned=2</script>",
         "metadata": {"path": "<b>bold</b>"}},
        {"time": "not a time", "level": "error", "message": "second"}],
    "a_field_from_the_future": {"x": 1},
}


@pytest.fixture
def fake_admin(busy_apus):
    """Serves apus's own page with a hand-written, hostile and partly malformed feed."""
    status, _, page = http_get(busy_apus.admin_url + "/")
    assert status == 200

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body, kind = (page, "text/html; charset=utf-8") if self.path == "/" else \
                (json.dumps(FEED).encode(), "application/json")
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_page_shows_client_strings_as_text_and_tolerates_bad_fields(fake_admin, driver):
    driver.set_window_size(1280, 900)
    driver.get(fake_admin + "/")
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error-row"))
    assert driver.execute_script("return window.pwned === undefined && document.images.length === 0")
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1
    rows = driver.find_elements(By.CSS_SELECTOR, ".worker-row")
    assert [r.get_attribute("data-id") for r in rows] == [HOSTILE, "partial"]
    assert [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")] \
        == [HOSTILE, "OSFamily=linux, pool=a|b", "2", "1", "no", "0.8 s ago"]
    assert [td.text for td in rows[1].find_elements(By.TAG_NAME, "td")] == ["partial", "none", "–", "–", "–", "–"]
    errors = driver.find_elements(By.CSS_SELECTOR, ".error-row")  # newest first
    assert errors[0].find_elements(By.TAG_NAME, "td")[2].text == "second"
    assert errors[1].find_elements(By.TAG_NAME, "td")[2].text == "<script>window.pwned=2</script>\npath=<b>bold</b>"
    assert driver.find_element(By.ID, "uptime").text == "1d 1h 1m"
    assert driver.find_element(By.ID, "oldest-main").text == "1m 15s"
    assert driver.find_element(By.ID, "queued-broken").text == "–"
    stores = {r.get_attribute("data-id"): [td.text for td in r.find_elements(By.TAG_NAME, "td")]
              for r in driver.find_elements(By.CSS_SELECTOR, ".store-row")}
    assert stores == {"cas": ["cas", "1042", "84.0 MiB"], "ac": ["ac", "0", "0 B"]}
    rates = {r.get_attribute("data-id"): r.find_elements(By.TAG_NAME, "td")[3].text
             for r in driver.find_elements(By.CSS_SELECTOR, ".ac-row")}
    assert rates == {"": "75.0 %", "team/a": "no lookups"}  # hits / (hits + misses)
    assert driver.find_elements(By.CSS_SELECTOR, ".local-worker-row") == []
    assert severe(driver.get_log("browser")) == []
