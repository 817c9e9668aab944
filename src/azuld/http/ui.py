"""The dashboard: one self-contained page at `/ui` that polls `/api/azuld/v1/plugins`.

No build step and no external resources: the CSS and the vanilla JS are inline below, and the
Content-Security-Policy allows exactly those two blocks (by hash), so text that clients control
(plugin names, error messages) can never become markup or script even if a bug let it through.
The JS only inserts text with DOM text nodes and `setAttribute`, never `innerHTML`.
"""

from __future__ import annotations

import base64
import hashlib

from quart import Response

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE", "dashboard"]

_STYLE = """
:root {
  --bg: #f5f6f8; --panel: #ffffff; --text: #1c222a; --muted: #68727e; --line: #e2e5e9;
  --head: #fafbfc; --chip: #eef1f5; --accent: #2f6fdf; --ok: #2e9d5b; --bad: #d1453b;
  --warn: #b7791f; --hover: rgba(120, 130, 140, 0.16);
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171b; --panel: #1c2026; --text: #e4e7eb; --muted: #98a2ae; --line: #2d333b;
    --head: #21262d; --chip: #272d35; --accent: #6ea0ff; --ok: #4cc17c; --bad: #ff6b61;
    --warn: #e0a84a; --hover: rgba(200, 210, 220, 0.12);
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
}
header {
  display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap;
  padding: 14px 24px; background: var(--panel); border-bottom: 1px solid var(--line);
}
header h1 { font-size: 18px; margin: 0; letter-spacing: 0.01em; }
header .sub { color: var(--muted); }
#status { margin-left: auto; color: var(--muted); font-size: 13px; }
#status .dot {
  display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  background: var(--muted); margin-right: 6px; vertical-align: 1px;
}
#status.ok .dot { background: var(--ok); }
#status.bad { color: var(--bad); }
#status.bad .dot { background: var(--bad); }
main { padding: 8px 24px 32px; max-width: 1440px; margin: 0 auto; }
section { margin-top: 20px; }
h2 {
  font-size: 12px; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--muted); margin: 0 0 8px; font-weight: 600;
}
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px; }
.tile {
  background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
}
.tile .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .l { color: var(--muted); font-size: 12px; }
.tile.bad .v { color: var(--bad); }
.tile.warn .v { color: var(--warn); }
.panel {
  background: var(--panel); border: 1px solid var(--line); border-radius: 8px; overflow-x: auto;
}
table { border-collapse: collapse; width: 100%; }
th, td {
  padding: 8px 12px; text-align: left; border-bottom: 1px solid var(--line); vertical-align: top;
}
th {
  font-size: 12px; color: var(--muted); font-weight: 600; background: var(--head);
  white-space: nowrap;
}
tbody tr:last-child td { border-bottom: 0; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.nowrap { white-space: nowrap; }
.name { font-weight: 600; }
.muted { color: var(--muted); }
code, pre, .key, .line {
  font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
}
.key { display: block; color: var(--muted); font-size: 11px; word-break: break-all; }
.badge {
  font-size: 11px; border: 1px solid var(--line); border-radius: 4px; padding: 0 5px;
  color: var(--muted); margin-left: 6px; white-space: nowrap;
}
.lane {
  display: inline-block; background: var(--chip); border-radius: 10px; padding: 1px 8px;
  margin: 1px 4px 1px 0; font-size: 12px; white-space: nowrap;
}
.lane b { font-variant-numeric: tabular-nums; }
.lane.behind b { color: var(--warn); }
.pill-bad {
  display: inline-block; min-width: 22px; text-align: center; color: #fff;
  background: var(--bad); border-radius: 10px; padding: 0 7px; font-weight: 600;
}
.empty { text-align: center; color: var(--muted); padding: 22px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.cards > .empty { grid-column: 1 / -1; margin: 0; }
.card {
  background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px;
}
.card-head { display: flex; justify-content: space-between; gap: 8px; align-items: baseline; }
.card-head .totals { color: var(--muted); font-size: 12px; text-align: right; }
.card-head .totals .bad { color: var(--bad); font-weight: 600; }
.chart { display: block; width: 100%; height: 64px; margin-top: 8px; }
.strip { display: block; width: 100%; height: 12px; margin-top: 3px; }
.quiet {
  height: 64px; margin-top: 8px; border: 1px dashed var(--line); border-radius: 6px;
  display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 12px;
}
.bar-done { fill: var(--ok); }
.bar-failed { fill: var(--bad); }
.bar-rate { fill: var(--bad); }
.strip-bg { fill: var(--chip); }
.line-fetched { fill: none; stroke: var(--accent); stroke-width: 1.5; stroke-linejoin: round; }
.baseline { stroke: var(--line); stroke-width: 1; }
.hover { fill: transparent; }
.hover:hover { fill: var(--hover); }
.axis { display: flex; justify-content: space-between; font-size: 11px; color: var(--muted); }
.legend {
  display: flex; gap: 12px; flex-wrap: wrap; margin-top: 4px; font-size: 12px; color: var(--muted);
}
.sw {
  display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 4px; vertical-align: -1px;
}
.sw.done { background: var(--ok); }
.sw.failed { background: var(--bad); }
.sw.fetched { background: var(--accent); height: 2px; vertical-align: 3px; }
.sw.rate { background: linear-gradient(to top, var(--bad) 50%, var(--chip) 50%); }
.plot { position: relative; }
.ymax {
  position: absolute; top: -2px; left: 0; font-size: 10px; line-height: 1; color: var(--muted);
  background: var(--panel); padding: 0 3px 1px 0;
}
.sha {
  display: inline-block; max-width: 17ch; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; vertical-align: bottom; font-size: 12px;
}
.status-bad { color: var(--bad); font-weight: 600; white-space: nowrap; }
.message { min-width: 280px; word-break: break-word; }
.err-name { font-weight: 600; margin-right: 6px; }
.line { font-size: 12px; }
details summary { cursor: pointer; }
pre {
  white-space: pre-wrap; word-break: break-word; margin: 6px 0 0; padding: 8px 10px;
  background: var(--chip); border-radius: 6px; max-height: 260px; overflow: auto; font-size: 12px;
}
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
footer code { font-size: 12px; }
"""

_SCRIPT = r"""
"use strict";
(() => {
  const POLL_MS = 5000;
  const MINUTES = 60;
  const SVG_NS = "http://www.w3.org/2000/svg";
  // The API sits next to /ui, also behind a reverse proxy that adds a path prefix.
  const API = location.pathname.replace(/\/ui\/?$/, "/") + "api/azuld/v1/plugins";
  const numbers = new Intl.NumberFormat();
  const openFailures = new Set();  // expanded failure messages survive the refresh
  let skewMs = 0;  // server clock minus this browser's, when they disagree by more than 2 s
  let lastOk = 0;

  // Every element is built here: values become attributes or text nodes, never markup.
  function build(ns, tag, attrs, children) {
    const el = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) {
        el.setAttribute(name, String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }
  const h = (tag, attrs, ...children) => build(null, tag, attrs, children);
  const svg = (tag, attrs, ...children) => build(SVG_NS, tag, attrs, children);
  const $ = (id) => document.getElementById(id);
  const num = (value) => numbers.format(Number(value) || 0);
  const sum = (values) => values.reduce((total, v) => total + (Number(v) || 0), 0);
  const nowSeconds = () => (Date.now() + skewMs) / 1000;
  const pad = (n) => String(n).padStart(2, "0");
  const percent = (part, whole) => `${Math.round((100 * part) / whole)}%`;

  function hhmm(seconds) {
    const d = new Date(seconds * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const time = `${hhmm(seconds)}:${pad(d.getSeconds())}`;
    if (d.toDateString() === new Date(nowSeconds() * 1000).toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function ago(seconds) {
    if (!seconds) return "never";
    const delta = Math.max(0, nowSeconds() - seconds);
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (delta >= size) return `${Math.floor(delta / size)}${unit} ago`;
    }
    return `${Math.floor(delta)}s ago`;
  }

  function lastLine(text) {
    const lines = String(text || "").split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    return lines.length ? lines[lines.length - 1] : "";
  }

  function tiles(plugins) {
    const lag = sum(plugins.map((p) => sum(Object.values(p.lag || {}))));
    const errors = sum(plugins.map((p) => p.errors_last_hour));
    const totals = [
      ["plugin keys", plugins.length, ""],
      ["waiting (lag)", lag, lag ? "warn" : ""],
      ["queued", sum(plugins.map((p) => p.queued)), ""],
      ["in flight", sum(plugins.map((p) => p.in_flight)), ""],
      ["done", sum(plugins.map((p) => sum(Object.values(p.finished || {})))), ""],
      ["errors, last hour", errors, errors ? "bad" : ""],
    ];
    $("tiles").replaceChildren(...totals.map(([label, value, tone]) =>
      h("div", {class: tone ? `tile ${tone}` : "tile"},
        h("div", {class: "v"}, num(value)), h("div", {class: "l"}, label))));
  }

  function lanes(plugin) {
    const lag = plugin.lag || {};
    const names = [...(plugin.lanes || [])];
    for (const lane of Object.keys(lag)) if (!names.includes(lane)) names.push(lane);
    if (!names.length) return h("span", {class: "muted"}, "\u2013");
    return names.map((lane) => {
      const known = Object.prototype.hasOwnProperty.call(lag, lane);
      const behind = known ? Number(lag[lane]) || 0 : 0;
      return h("span", {
        class: behind ? "lane behind" : "lane",
        title: known ? `${lane}: ${behind} event(s) not finished yet` : `${lane}: lag unknown`,
      }, `${lane} `, h("b", {}, known ? num(behind) : "\u2013"));
    });
  }

  function row(p) {
    const finished = p.finished || {};
    const breakdown = Object.entries(finished).map(([state, n]) => `${state} ${n}`).join(", ");
    const errors = Number(p.errors_last_hour) || 0;
    const tags = [];
    if (p.model && p.model !== "binary") tags.push(p.model);
    if (!p.active) tags.push("passive");
    return h("tr", {class: "plugin-row", "data-key": p.key},
      h("td", {},
        h("span", {class: "name"}, p.name),
        tags.map((tag) => h("span", {class: "badge"}, tag)),
        h("span", {class: "key"}, p.key)),
      h("td", {}, p.version),
      h("td", {}, lanes(p)),
      h("td", {class: "num"}, num(p.in_flight)),
      h("td", {class: "num", title: `fetched ${num(p.fetched)}; ${breakdown || "none finished"}`},
        num(sum(Object.values(finished)))),
      h("td", {class: "num"}, errors ? h("span", {class: "pill-bad"}, num(errors)) : "0"),
      h("td", {class: "nowrap", title: p.last_seen ? clock(p.last_seen) : null}, ago(p.last_seen)));
  }

  // The last hour, one slot a minute (the API leaves out minutes with nothing in them).
  function minutes(history) {
    const last = Math.floor(nowSeconds() / 60) * 60;
    const first = last - (MINUTES - 1) * 60;
    const slots = Array.from({length: MINUTES},
      (_, i) => ({minute: first + i * 60, fetched: 0, done: 0, failed: 0}));
    for (const point of history || []) {
      const i = Math.round((Number(point.minute) - first) / 60);
      if (!(i >= 0 && i < MINUTES)) continue;
      for (const what of ["fetched", "done", "failed"]) slots[i][what] += Number(point[what]) || 0;
    }
    return slots;
  }

  function card(p) {
    const slots = minutes(p.history);
    const fetched = sum(slots.map((s) => s.fetched));
    const done = sum(slots.map((s) => s.done));
    const failed = sum(slots.map((s) => s.failed));
    const ended = done + failed;
    const totals = h("span", {class: "totals"},
      `${num(fetched)} fetched \u00b7 ${num(ended)} finished \u00b7 `,
      ended ? h("span", {class: failed ? "bad" : ""}, `${percent(failed, ended)} errors`)
        : "no errors");
    const head = h("div", {class: "card-head"},
      h("span", {},
        h("span", {class: "name"}, p.name), " ", h("span", {class: "muted"}, p.version)),
      totals);
    if (!fetched && !ended) {
      return h("div", {class: "card", "data-key": p.key}, head,
        h("div", {class: "quiet"}, "no activity in the last hour"),
        h("div", {class: "axis"}, h("span", {}, "60 min ago"), h("span", {}, "now")));
    }
    const W = 240, H = 60, R = 12, step = W / MINUTES;
    const peak = Math.max(1, ...slots.map((s) => Math.max(s.done + s.failed, s.fetched)));
    const scale = (H - 4) / peak;
    const chart = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: "none", role: "img",
      "aria-label": `${p.name}: jobs per minute over the last hour`});
    const strip = svg("svg", {class: "strip", viewBox: `0 0 ${W} ${R}`,
      preserveAspectRatio: "none", role: "img",
      "aria-label": `${p.name}: error rate per minute over the last hour`});
    chart.append(svg("line", {class: "baseline", x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5,
      "vector-effect": "non-scaling-stroke"}));
    const hovers = [];
    slots.forEach((s, i) => {
      const x = i * step + 0.4, w = step - 0.8;
      const doneH = s.done * scale, failedH = s.failed * scale;
      if (doneH) chart.append(svg("rect", {class: "bar-done", x, y: H - doneH, width: w,
        height: doneH}));
      if (failedH) chart.append(svg("rect", {class: "bar-failed", x, y: H - doneH - failedH,
        width: w, height: failedH}));
      const finishedHere = s.done + s.failed;
      const rate = finishedHere ? s.failed / finishedHere : 0;
      const tip = `${hhmm(s.minute)}: ${s.fetched} fetched, ${s.done} done, ${s.failed} failed` +
        (finishedHere ? ` (${percent(s.failed, finishedHere)} errors)` : "");
      if (finishedHere) {
        strip.append(svg("rect", {class: "strip-bg", x, y: 0, width: w, height: R}));
        if (rate) strip.append(svg("rect", {class: "bar-rate", x, y: R - rate * R, width: w,
          height: rate * R}, svg("title", {}, tip)));
      }
      hovers.push(svg("rect", {class: "hover", x: i * step, y: 0, width: step, height: H},
        svg("title", {}, tip)));
    });
    if (fetched) {
      const points = slots.map((s, i) => `${(i + 0.5) * step},${H - 0.5 - s.fetched * scale}`);
      chart.append(svg("polyline", {class: "line-fetched", points: points.join(" "),
        "vector-effect": "non-scaling-stroke"}));
    }
    chart.append(...hovers);
    const plot = h("div", {class: "plot"}, chart,
      h("span", {class: "ymax", title: "the chart's scale: its busiest minute"},
        `${num(peak)}/min`));
    return h("div", {class: "card", "data-key": p.key}, head, plot, strip,
      h("div", {class: "axis"}, h("span", {}, "60 min ago"), h("span", {}, "30"),
        h("span", {}, "now")),
      h("div", {class: "legend"},
        h("span", {}, h("span", {class: "sw done"}), "done"),
        h("span", {}, h("span", {class: "sw failed"}), "failed"),
        h("span", {}, h("span", {class: "sw fetched"}), "fetched"),
        h("span", {}, h("span", {class: "sw rate"}), "error rate")));
  }

  function failures(plugins) {
    const all = [];
    for (const plugin of plugins) {
      for (const failure of plugin.recent_failures || []) all.push({plugin, failure});
    }
    all.sort((a, b) => (Number(b.failure.at) || 0) - (Number(a.failure.at) || 0));
    const seen = new Set();
    const rows = all.slice(0, 50).map(({plugin, failure}) => {
      const id = `${plugin.key}|${failure.at}|${failure.sha256}`;
      seen.add(id);
      const message = String(failure.message || "").trim();
      const line = lastLine(message) || "(no message)";
      const error = String(failure.error || "");
      const name = error && error !== line ? h("span", {class: "err-name"}, error) : null;
      let what;
      if (message.includes("\n")) {
        what = h("details", {open: openFailures.has(id)},
          h("summary", {}, name, h("span", {class: "line"}, line)), h("pre", {}, message));
        what.addEventListener("toggle", () => {
          if (what.open) openFailures.add(id); else openFailures.delete(id);
        });
      } else {
        what = h("div", {}, name, h("span", {class: "line"}, line));
      }
      return h("tr", {class: "failure-row", "data-key": plugin.key},
        h("td", {class: "nowrap", title: ago(failure.at)}, clock(failure.at)),
        h("td", {}, h("span", {class: "name"}, plugin.name), " ",
          h("span", {class: "muted"}, plugin.version)),
        h("td", {}, h("span", {class: "status-bad"}, failure.status)),
        h("td", {}, h("code", {class: "sha", title: failure.sha256}, failure.sha256)),
        h("td", {class: "message"}, what));
    });
    for (const id of [...openFailures]) if (!seen.has(id)) openFailures.delete(id);
    $("failure-rows").replaceChildren(...(rows.length ? rows
      : [h("tr", {}, h("td", {colspan: 5, class: "empty"}, "no failures recorded"))]));
  }

  function render(plugins) {
    tiles(plugins);
    $("plugin-rows").replaceChildren(...(plugins.length ? plugins.map(row)
      : [h("tr", {}, h("td", {colspan: 7, class: "empty"},
        "no plugins yet \u2013 a plugin key appears here after its first fetch"))]));
    $("charts").replaceChildren(...(plugins.length ? plugins.map(card)
      : [h("p", {class: "empty"}, "no plugins yet")]));
    failures(plugins);
  }

  function setStatus(ok, text) {
    $("status").className = ok ? "ok" : "bad";
    $("status-text").textContent = text;
  }

  async function load() {
    const response = await fetch(API, {cache: "no-store", headers: {Accept: "application/json"}});
    const served = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(served)) {
      const skew = served - Date.now();
      skewMs = Math.abs(skew) > 2000 ? skew : 0;
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        detail = body.detail || body.title || detail;
      } catch (_) { /* not JSON: keep the status text */ }
      throw new Error(`HTTP ${response.status} ${detail}`);
    }
    const body = await response.json();
    return Array.isArray(body.plugins) ? body.plugins : [];
  }

  async function poll() {
    try {
      let plugins;
      try {
        plugins = await load();
      } catch (error) {
        const since = lastOk ? `; showing data from ${clock(lastOk)}` : "";
        setStatus(false, `cannot reach azuld (${error.message})${since}`);
        return;
      }
      try {
        render(plugins);
      } catch (error) {
        setStatus(false, `cannot show the data: ${error.message}`);
        return;
      }
      lastOk = nowSeconds();
      setStatus(true, `updated ${clock(lastOk)} \u00b7 every ${POLL_MS / 1000} s`);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
"""

_BODY = """
<header>
  <h1>azuld</h1>
  <span class="sub">dispatcher dashboard</span>
  <span id="status"><span class="dot"></span><span id="status-text">loading&hellip;</span></span>
</header>
<main>
  <section class="tiles" id="tiles" aria-label="totals"></section>
  <section>
    <h2>Plugins</h2>
    <div class="panel">
      <table id="plugins">
        <thead>
          <tr>
            <th>Plugin</th><th>Version</th><th>Lanes (lag)</th><th class="num">In flight</th>
            <th class="num">Done</th><th class="num">Errors 1h</th><th>Last seen</th>
          </tr>
        </thead>
        <tbody id="plugin-rows">
          <tr><td colspan="7" class="empty">loading&hellip;</td></tr>
        </tbody>
      </table>
    </div>
  </section>
  <section>
    <h2>Throughput and errors, last hour</h2>
    <div class="cards" id="charts"></div>
  </section>
  <section>
    <h2>Recent failures</h2>
    <div class="panel">
      <table id="failures">
        <thead>
          <tr><th>Time</th><th>Plugin</th><th>Status</th><th>sha256</th><th>Message</th></tr>
        </thead>
        <tbody id="failure-rows"></tbody>
      </table>
    </div>
  </section>
  <footer>
    This instance's plugin keys, from <code>/api/azuld/v1/plugins</code>, refreshed every 5 s.
    Hover a chart for per-minute counts; click a message for the whole text.
  </footer>
  <noscript><p class="empty">This dashboard needs JavaScript.</p></noscript>
</main>
"""


def _csp_source(block: str) -> str:
    digest = hashlib.sha256(block.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>azuld dashboard</title>\n"
    '<link rel="icon" href="data:,">\n'
    f"<style>{_STYLE}</style>\n</head>\n<body>{_BODY}<script>{_SCRIPT}</script>\n"
    "</body>\n</html>\n"
)

# Only the two inline blocks above may run or style; nothing may be loaded but the API.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_csp_source(_SCRIPT)}; style-src {_csp_source(_STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


async def dashboard() -> Response:
    """The dashboard page (it fetches its data itself, from `/api/azuld/v1/plugins`)."""
    return Response(
        PAGE,
        content_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
