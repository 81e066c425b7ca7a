/// The status page the admin listener serves at `GET /`: one self-contained HTML document
/// (inline CSS and JS, no external resources) that polls the relative URL `status` every 2 s.
///
/// It holds no data itself, so it is served without credentials; when `/status` answers 401
/// or 403 it asks for a bearer token and keeps it in `sessionStorage`. The DOM is built with
/// `textContent` only, because worker ids, platform values and log messages come from clients.
enum StatusPage {
  static let html: String = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Apus status</title>
<style>
:root{--bg:#f5f6f8;--fg:#1d2330;--mut:#5f6673;--card:#fff;--line:#dde1e6;--ok:#1a7f37;--warn:#a85400;--bad:#c62828}
@media(prefers-color-scheme:dark){:root{--bg:#121519;--fg:#e4e7eb;--mut:#9aa1ad;--card:#1b1f26;--line:#2c323c;--ok:#2f8f46;--warn:#b7791f;--bad:#d9443b}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.3rem 1rem;align-items:center;padding:.7rem 1rem;background:var(--card);border-bottom:1px solid var(--line)}
h1{font-size:1.2rem;margin:0}
h2{font-size:1rem;margin:1rem .2rem .3rem}
h3{font-size:1rem;margin:0 0 .4rem;overflow-wrap:anywhere}
main{max-width:1100px;margin:0 auto;padding:.3rem .5rem 2rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.6rem .8rem;margin:.5rem 0}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(7rem,1fr));gap:.4rem}
.stat{display:flex;flex-direction:column}
.label,.muted{color:var(--mut);font-size:.8rem}
.value{font-size:1.3rem;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin-top:.4rem}
th,td{text-align:left;padding:.25rem .45rem;border-bottom:1px solid var(--line);vertical-align:top}
td{overflow-wrap:anywhere;font-variant-numeric:tabular-nums}
th{color:var(--mut);font-weight:600}
.nw{white-space:nowrap;overflow-wrap:normal}
@media(max-width:600px){body{font-size:14px}table{font-size:.8rem}th,td{padding:.2rem .3rem}main{padding:.2rem .3rem 2rem}.card{padding:.5rem}}
#state{padding:.1rem .6rem;border-radius:1rem;color:#fff;font-size:.85rem;font-weight:600;background:var(--mut)}
#state.ok{background:var(--ok)}#state.warn{background:var(--warn)}#state.bad{background:var(--bad)}
.lvl-error,.lvl-critical{color:var(--bad)}.lvl-warning{color:var(--warn)}
body.stale main{opacity:.55}
form{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
input,button{font:inherit;padding:.3rem .5rem}
input{min-width:0;flex:1 1 12rem}
[hidden]{display:none!important}
</style>
</head>
<body>
<header>
<h1>Apus</h1>
<span id="state">loading</span>
<span class="muted">version <span id="version">–</span></span>
<span class="muted">up <span id="uptime">–</span></span>
<span class="muted" id="updated">no update yet</span>
</header>
<main>
<form id="auth" class="card" hidden>
<label for="token">Bearer token for <code>/status</code></label>
<input id="token" type="password" autocomplete="off">
<button type="submit">Use token</button>
<span id="auth-msg" class="muted"></span>
</form>
<p class="muted" id="summary"></p>
<h2>Schedulers</h2>
<div id="schedulers"></div>
<h2>Stores</h2>
<div class="card" id="stores"></div>
<h2>Action cache</h2>
<div class="card" id="action-cache"></div>
<h2>Local workers</h2>
<div class="card" id="local-workers"></div>
<h2>Recent errors</h2>
<div class="card" id="errors"></div>
</main>
<script>
"use strict";
(function () {
  const $ = id => document.getElementById(id);
  const KEY = "apus-status-token";
  let token = "", lastGood = null, timer = 0;
  try { token = sessionStorage.getItem(KEY) || ""; } catch (e) { /* storage disabled */ }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }
  const num = v => (typeof v === "number" && isFinite(v) ? v : null);
  const obj = v => (v && typeof v === "object" && !Array.isArray(v) ? v : {});
  const arr = v => (Array.isArray(v) ? v : []);
  const str = v => (v == null ? "–" : String(v));
  const int = v => (num(v) == null ? "–" : String(v));
  const yes = v => (v === true ? "yes" : v === false ? "no" : "–");
  function dur(v) {
    v = num(v);
    if (v == null) return "–";
    if (v < 60) return v.toFixed(1) + " s";
    v = Math.floor(v);
    const d = Math.floor(v / 86400), h = Math.floor(v % 86400 / 3600), m = Math.floor(v % 3600 / 60), s = v % 60;
    return d ? d + "d " + h + "h " + m + "m" : h ? h + "h " + m + "m " + s + "s" : m + "m " + s + "s";
  }
  function bytes(v) {
    v = num(v);
    if (v == null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + " " + u[i];
  }
  function platform(p) {
    const o = obj(p), keys = Object.keys(o).sort();
    if (!keys.length) return "none";
    return keys.map(k => k + "=" + (Array.isArray(o[k]) ? o[k].join("|") : String(o[k]))).join(", ");
  }
  // A horizontally scrollable table. rows: {cells, id, cls}; a cell is text or a DOM node;
  // columns listed in `nowrap` never wrap (times, levels, numbers).
  function table(cols, rows, rowClass, nowrap) {
    const wrap = el("div", "scroll"), t = el("table"), head = el("tr"), body = el("tbody");
    cols.forEach(c => head.appendChild(el("th", null, c)));
    t.appendChild(el("thead")).appendChild(head);
    rows.forEach(r => {
      const tr = el("tr", rowClass + (r.cls ? " " + r.cls : ""));
      if (r.id != null) tr.dataset.id = String(r.id);
      r.cells.forEach((c, i) => {
        const td = tr.appendChild(el("td", nowrap && nowrap.includes(i) ? "nw" : null));
        if (c instanceof Node) td.appendChild(c); else td.textContent = String(c);
      });
      body.appendChild(tr);
    });
    if (!rows.length) {
      const td = el("td", "muted", "none");
      td.colSpan = cols.length;
      body.appendChild(el("tr", "empty")).appendChild(td);
    }
    t.appendChild(body);
    wrap.appendChild(t);
    return wrap;
  }
  // An ISO time as local time of day (with the date when it is not today); the original as tooltip.
  function when(v) {
    const d = new Date(typeof v === "string" ? v : NaN), span = el("span", null, str(v));
    if (isNaN(d)) return span;
    span.title = v;
    span.textContent = (d.toDateString() === new Date().toDateString() ? "" : d.toLocaleDateString() + " ") +
      d.toLocaleTimeString();
    return span;
  }
  function stat(label, value, id) {
    const d = el("div", "stat"), v = el("span", "value", value);
    if (id) v.id = id;
    d.appendChild(el("span", "label", label));
    d.appendChild(v);
    return d;
  }

  function scheduler(name, x) {
    const sec = el("section", "card scheduler");
    sec.dataset.name = name;
    sec.appendChild(el("h3", null, name || "(unnamed)"));
    const stats = el("div", "stats");
    stats.appendChild(stat("queued", int(x.queued), "queued-" + name));
    stats.appendChild(stat("running", int(x.running), "running-" + name));
    stats.appendChild(stat("oldest queued", dur(x.oldest_queued_seconds), "oldest-" + name));
    stats.appendChild(stat("busy / slots", int(x.busy) + " / " + int(x.slots), "busy-" + name));
    stats.appendChild(stat("desired workers", int(x.desired_workers), "desired-" + name));
    sec.appendChild(stats);
    sec.appendChild(table(["platform", "queued", "running", "oldest", "slots/w", "desired"],
      arr(x.platforms).map(obj).map(p => ({ cells: [platform(p.platform), int(p.queued), int(p.running),
        dur(p.oldest_queued_seconds), str(num(p.slots_per_worker) == null ? null : +p.slots_per_worker.toFixed(2)),
        int(p.desired_workers)] })), "platform-row", [1, 2, 3, 4, 5]));
    sec.appendChild(table(["worker", "platform", "slots", "busy", "drain", "keep-alive"],
      arr(x.workers).map(obj).map(w => ({ id: w.id, cells: [str(w.id), platform(w.platform), int(w.slots), int(w.busy),
        yes(w.draining), dur(w.last_keepalive_seconds) + (num(w.last_keepalive_seconds) == null ? "" : " ago")] })),
      "worker-row", [2, 3, 4, 5]));
    return sec;
  }

  function render(s) {
    $("version").textContent = str(s.version);
    $("uptime").textContent = dur(s.uptime_seconds);
    if (s.draining === true) setState("draining", "warn");
    else if (s.ready === true) setState("ready", "ok");
    else if (s.ready === false) setState("not ready", "bad");
    else setState("unknown", "");
    const g = obj(s.grpc), roles = arr(s.roles).map(String);
    $("summary").textContent = "roles: " + (roles.length ? roles.join(", ") : "–") +
      " · gRPC: " + int(g.requests) + " requests, " + int(g.errors) + " errors";

    const sch = obj(s.schedulers), names = Object.keys(sch).sort();
    $("schedulers").replaceChildren(...names.map(n => scheduler(n, obj(sch[n]))));
    if (!names.length) $("schedulers").appendChild(el("p", "card muted", "No scheduler in this process."));

    const stores = obj(s.stores);
    $("stores").replaceChildren(table(["store", "entries", "size"],
      Object.keys(stores).sort().map(k => ({ id: k, cells: [k, int(obj(stores[k]).entries), bytes(obj(stores[k]).bytes)] })),
      "store-row", [1, 2]));

    const ac = obj(s.action_cache);
    $("action-cache").replaceChildren(table(["instance", "hits", "misses", "hit rate"],
      Object.keys(ac).sort().map(k => {
        const h = num(obj(ac[k]).hits), m = num(obj(ac[k]).misses);
        const rate = h == null || m == null ? "–" : h + m === 0 ? "no lookups" : (100 * h / (h + m)).toFixed(1) + " %";
        return { id: k, cells: [k === "" ? "(default)" : k, int(h), int(m), rate] };
      }), "ac-row", [1, 2, 3]));

    $("local-workers").replaceChildren(table(["worker", "scheduler", "reg.", "slots", "busy", "drain"],
      arr(s.workers).map(obj).map(w => ({ id: w.id, cells: [str(w.id), str(w.scheduler), yes(w.registered), int(w.slots),
        int(w.busy), yes(w.draining)] })), "local-worker-row", [2, 3, 4, 5]));

    const errs = arr(s.recent_errors).map(obj).reverse();
    $("errors").replaceChildren(table(["time", "level", "message"], errs.map(e => {
      const msg = el("div", null, str(e.message)), meta = obj(e.metadata), keys = Object.keys(meta).sort();
      if (keys.length) msg.appendChild(el("div", "muted", keys.map(k => k + "=" + String(meta[k])).join(" ")));
      return { cls: "lvl-" + String(e.level || "").replace(/[^a-z]/g, ""), cells: [when(e.time), str(e.level), msg] };
    }), "error-row", [0, 1]));
  }

  function setState(text, cls) {
    $("state").textContent = text;
    $("state").className = cls;
  }
  function unreachable(why) {
    setState("unreachable", "bad");
    document.body.classList.add("stale");
    $("updated").textContent = why + " · last good update: " + (lastGood ? lastGood.toLocaleTimeString() : "never");
  }
  function askToken(status) {
    $("auth").hidden = false;
    $("auth-msg").textContent = status === 403 ? "This token lacks the admin permission."
      : token ? "The token was rejected." : "/status needs a token.";
    setState(status === 403 ? "forbidden" : "needs token", "warn");
  }

  async function poll() {
    let res = null;
    try {
      const headers = { Accept: "application/json" };
      if (token) headers.Authorization = "Bearer " + token;
      res = await fetch("status", { headers, cache: "no-store" });
    } catch (e) {
      unreachable("unreachable");
    }
    if (res && (res.status === 401 || res.status === 403)) askToken(res.status);
    else if (res && !res.ok) unreachable("HTTP " + res.status);
    else if (res) {
      try {
        const s = await res.json();
        render(obj(s));
        lastGood = new Date();
        $("auth").hidden = true;
        document.body.classList.remove("stale");
        $("updated").textContent = "updated " + lastGood.toLocaleTimeString();
      } catch (e) {
        unreachable("unreadable answer");
      }
    }
    schedule(2000);
  }
  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  $("auth").addEventListener("submit", ev => {
    ev.preventDefault();
    token = $("token").value.trim();
    try { sessionStorage.setItem(KEY, token); } catch (e) { /* storage disabled */ }
    schedule(0);
  });
  poll();
})();
</script>
</body>
</html>
"""#
}
