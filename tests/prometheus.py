"""Helpers for the Prometheus tests: the dashboard's PromQL, the documented metric names, and a
real Debian `prometheus` scraping apus on loopback."""
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deployment-examples" / "grafana" / "apus.json"
OPERATIONS = ROOT / "docs" / "operations.md"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# What Grafana puts in place of its interval variables when it sends a query.
INTERVALS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
# PromQL words that are neither metric names nor functions.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "offset", "bool", "inf", "nan"}


def panels(dashboard):
    """Every panel, including those nested in collapsed rows."""
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(dashboard):
    """(panel title, raw expr) for every query target of every panel."""
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])
            if t.get("expr")]


def variable_selectors(dashboard):
    """(variable name, the series selector inside its `label_values(SELECTOR, label)` query)."""
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip(), re.S)
        assert m, f"variable {v['name']}: not a label_values(SELECTOR, label) query: {q}"
        out.append((v["name"], m.group(1)))
    return out


def substitute(expr):
    """The expr as Prometheus would get it from Grafana with every label variable set to All:
    interval variables become `1m`/`1h`, `$name`/`${name}` inside a `=~"…"` matcher `.*`.
    A variable anywhere else (an `=` matcher, a duration, a bare word) is left in place, which
    makes the expression invalid, so promtool reports it."""
    for name, value in INTERVALS.items():
        expr = expr.replace(name, value)
    return re.sub(r'(=~\s*")([^"]*)"',
                  lambda m: m.group(1) + re.sub(r"\$\{?\w+\}?", ".*", m.group(2)) + '"', expr)


def metric_names(expr):
    """The metric names an expression reads: string literals, label matchers, grouping clauses
    and range durations removed, what remains that is neither a function call, a keyword nor a
    number."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        follows = e[m.end():].lstrip()
        if follows.startswith("(") or word.lower() in KEYWORDS:
            continue
        if re.fullmatch(r"\d", e[m.start() - 1:m.start()] or " "):  # 1e-9, 0x1f
            continue
        names.add(word)
    return names


def documented_metrics(text=None):
    """{name: type} from the metric tables of docs/operations.md (rows whose first cell names
    `apus_…` families, the type in the second); a histogram also yields its `_bucket`, `_sum`
    and `_count` series."""
    text = text if text is not None else OPERATIONS.read_text()
    names = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2 or not re.search(r"`apus_\w+`", cells[0]):
            continue
        kind = next((k for k in ("histogram", "counter", "gauge") if k in cells[1]), None)
        assert kind, f"no type in row: {line}"
        for name in re.findall(r"`(apus_\w+)`", cells[0]):
            names[name] = kind
            if kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    names[name + suffix] = "histogram"
    return names


def promtool(*args, stdin=None):
    p = subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


class PrometheusServer:
    """Debian's prometheus scraping one target every `interval` seconds; stopped by PID."""

    def __init__(self, workdir, target, port, interval=1):
        self.dir = Path(workdir)
        self.port = port
        self.interval = interval
        self.dir.mkdir(parents=True, exist_ok=True)
        config = {  # JSON is YAML
            "global": {"scrape_interval": f"{interval}s", "evaluation_interval": f"{interval}s"},
            "scrape_configs": [{"job_name": "apus", "scrape_interval": f"{interval}s",
                                "scrape_timeout": f"{interval}s", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.log = open(self.dir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self.log, stderr=self.log)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def read_log(self):
        return (self.dir / "prometheus.log").read_text(errors="replace")

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.read_log()}")
            try:
                if http_get(self.url + "/-/ready", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus not ready: " + self.read_log())

    def api(self, path, **params):
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=30)
        data = json.loads(body)
        assert data["status"] == "success", data
        return data["data"]

    def query(self, expr, at=None):
        """The instant vector `expr` at time `at` (now by default) as [(labels, float)]."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, expr, at=None):
        """A single-valued query's value; an empty result (no series yet) is 0."""
        result = self.query(expr, at)
        assert len(result) <= 1, result
        return result[0][1] if result else 0.0

    def last_scrape(self):
        """The start time of the target's latest scrape (the timestamp of its `up` sample), 0 if
        none yet."""
        return self.value('timestamp(up{job="apus"})')

    def wait_scraped(self, after, timeout=60):
        """Waits for a successful scrape that started at least `after`; returns its time."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.last_scrape() >= after and self.value('up{job="apus"}') == 1:
                return self.last_scrape()
            time.sleep(self.interval / 4)
        raise RuntimeError(f"no successful scrape after {after}: {self.api('targets')}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
