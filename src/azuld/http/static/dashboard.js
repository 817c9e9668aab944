"use strict";
(() => {
  const POLL_MS = 5000;
  const MINUTES = 60;
  const SVG_NS = "http://www.w3.org/2000/svg";
  // The API sits next to /ui, also behind a reverse proxy that adds a path prefix.
  const API = location.pathname.replace(/\/ui\/?$/, "/") + "api/azuld/v1/";
  const numbers = new Intl.NumberFormat();
  const openFailures = new Set();  // expanded failure messages survive the refresh
  const openMembers = new Set();  // members whose partitions are shown: survive it too
  const reoffers = new Map();  // job id -> {state: "busy" | "ok" | "bad", text}: survive it too
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

  function duration(seconds) {
    const s = Math.max(0, Math.floor(Number(seconds) || 0));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  }

  function lastLine(text) {
    const lines = String(text || "").split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    return lines.length ? lines[lines.length - 1] : "";
  }

  function tiles(all, cluster) {
    const plugins = all.filter((p) => !p.ephemeral);  // watchers are no plugins
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
    if (cluster.shared) totals.push(["instances", (cluster.members || []).length, ""]);
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
    if (p.ephemeral) {
      tags.push("watcher");
    } else {
      if (p.model && p.model !== "binary") tags.push(p.model);
      if (!p.active) tags.push("passive");
    }
    // Jobs answered from the replay cache finish without being fetched.
    const cached = Number(p.replayed) || 0;
    const done = sum(Object.values(finished));
    return h("tr", {class: "plugin-row", "data-key": p.key},
      h("td", {},
        h("span", {class: "name"}, p.name),
        tags.map((tag) => h("span", {class: "badge"}, tag)),
        h("span", {class: "key"}, p.key)),
      h("td", {}, p.version),
      h("td", {}, lanes(p)),
      h("td", {class: "num"}, num(p.in_flight)),
      h("td", {class: "num", title: `fetched ${num(p.fetched)}; ${breakdown || "none finished"}`},
        num(done), cached ? h("span", {class: "cached",
          title: `${num(cached)} answered from the replay cache (never fetched), ` +
            `saving ${duration(p.replay_saved_seconds)} of plugin time`},
        `${num(cached)} cached`) : null),
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
        h("td", {class: "message"}, what),
        h("td", {class: "nowrap"}, reofferCell(failure.job_id)));
    });
    for (const id of [...openFailures]) if (!seen.has(id)) openFailures.delete(id);
    $("failure-rows").replaceChildren(...(rows.length ? rows
      : [h("tr", {}, h("td", {colspan: 6, class: "empty"}, "no failures recorded"))]));
  }

  // A failed job can be put back in front of its plugin key (POST /api/azuld/v1/reoffer).
  function reofferCell(jobId) {
    if (!jobId) return h("span", {class: "muted", title: "no job id: not an azuld job"}, "\u2013");
    const done = reoffers.get(jobId);
    if (done && done.state !== "bad") {
      return h("span", {class: `reoffer-${done.state}`, title: done.title || null}, done.text);
    }
    const button = h("button", {type: "button", class: "reoffer", "data-job": jobId,
      title: "offer this job to its plugin key again, ahead of its other work"}, "Re-offer");
    button.addEventListener("click", () => reoffer(jobId));
    if (!done) return button;
    return [button, h("span", {class: "reoffer-bad", title: done.title || null}, done.text)];
  }

  async function reoffer(jobId) {
    reoffers.set(jobId, {state: "busy", text: "re-offering\u2026"});
    refreshFailures();
    try {
      const response = await fetch(API + "reoffer", {
        method: "POST",
        cache: "no-store",
        headers: {"Content-Type": "application/json", Accept: "application/json"},
        body: JSON.stringify({job_ids: [jobId]}),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(`HTTP ${response.status} ${body.detail || ""}`.trim());
      const outcome = (body.reoffered || [])[0] || {};
      reoffers.set(jobId, outcome.ok
        ? {state: "ok", text: "\u2713 re-offered", title: `to ${outcome.plugin_key}`}
        : {state: "bad", text: `not re-offered: ${outcome.reason || "no answer"}`});
    } catch (error) {
      reoffers.set(jobId, {state: "bad", text: `not re-offered (${error.message})`});
    }
    refreshFailures();
  }

  let lastPlugins = [];
  function refreshFailures() {
    failures(lastPlugins);
  }

  function jobs(view) {
    const all = view.jobs || [];
    const total = Number(view.total) || 0;
    $("jobs-count").textContent = total > all.length
      ? `(the ${num(all.length)} longest-running of ${num(total)})` : `(${num(total)})`;
    const rows = all.map((job) => h("tr", {class: "job-row", "data-job": job.job_id},
      h("td", {},
        job.filename ? h("span", {class: "filename"}, job.filename) : null,
        h("code", {class: "sha", title: job.sha256}, job.sha256),
        job.source ? h("span", {class: "key"}, job.source) : null),
      h("td", {}, h("span", {class: "name"}, job.plugin), " ",
        h("span", {class: "muted"}, job.version), h("span", {class: "key"}, job.plugin_key)),
      h("td", {}, h("span", {class: "lane"}, job.lane)),
      h("td", {class: "num"}, Number(job.attempt) ? h("span", {class: "retry",
        title: "offered before: a lease ran out, or its dispatcher stopped"},
      num(Number(job.attempt) + 1)) : "1"),
      h("td", {class: "num"}, duration(job.age_seconds)),
      h("td", {class: "num"}, duration(job.lease_left_seconds)),
      h("td", {}, h("span", {class: "key"}, job.instance))));
    $("job-rows").replaceChildren(...(rows.length ? rows
      : [h("tr", {}, h("td", {colspan: 7, class: "empty"}, "no jobs in flight"))]));
  }

  // Topics without the `azul.<prefix>.` every one of them starts with.
  const shortTopic = (topic) => topic.startsWith("azul.")
    ? topic.split(".").slice(2).join(".") : topic;

  function topicList(topics) {
    return Object.entries(topics || {}).map(([topic, partitions]) =>
      h("div", {class: "owns"}, h("code", {title: topic}, shortTopic(topic)),
        h("span", {class: "parts"}, partitions.join(", "))));
  }

  function ownedTopics(member) {
    const count = Object.keys(member.topics || {}).length;
    if (count <= 4) return topicList(member.topics);
    const details = h("details", {open: openMembers.has(member.instance)},
      h("summary", {}, `${num(count)} topics`), topicList(member.topics));
    details.addEventListener("toggle", () => {
      if (details.open) openMembers.add(member.instance);
      else openMembers.delete(member.instance);
    });
    return details;
  }

  function cluster(view) {
    const members = view.members || [];
    const given = num((view.leases_handed_over || {}).given);
    const taken = num((view.leases_handed_over || {}).taken);
    const line = [
      view.shared
        ? `Kafka: ${num(members.length)} instance${members.length === 1 ? "" : "s"} share the log`
        : "Embedded log: this instance alone owns every partition",
      ` \u00b7 this instance `, h("code", {}, view.instance),
      ` \u00b7 ${num(view.rebalances)} rebalance${Number(view.rebalances) === 1 ? "" : "s"}`,
      ` \u00b7 leases handed over ${given}, taken over ${taken}`,
    ];
    if (view.problem) line.push(h("span", {class: "bad"}, ` \u00b7 ${view.problem}`));
    $("cluster-line").replaceChildren(...line);
    const rows = members.map((m) =>
      h("tr", {class: m.this ? "member-row this" : "member-row", "data-instance": m.instance},
        h("td", {}, h("code", {}, m.instance), m.this ? h("span", {class: "badge"}, "this") : null),
        h("td", {}, m.host),
        h("td", {class: "num"}, num(m.partitions)),
        h("td", {class: "topics"}, ownedTopics(m))));
    $("member-rows").replaceChildren(...(rows.length ? rows
      : [h("tr", {}, h("td", {colspan: 4, class: "empty"}, "members unknown right now"))]));
    const moves = (view.recent || []).map((move) => h("tr", {class: "move-row"},
      h("td", {class: "nowrap", title: ago(move.at)}, clock(move.at)),
      h("td", {}, move.kind === "took-over" ? "took over leases" : "handed over"),
      h("td", {class: "num"}, num(move.partitions)),
      h("td", {class: "num"}, num(move.leases)),
      h("td", {}, move.kind === "took-over"
        ? [h("code", {title: move.partition}, shortTopic(move.partition)), " of ",
          h("span", {class: "name"}, move.plugin_key),
          " from ", h("code", {}, move.peer)]
        : h("span", {class: "muted"}, "a rebalance took these partitions"))));
    $("move-rows").replaceChildren(...(moves.length ? moves
      : [h("tr", {}, h("td", {colspan: 5, class: "empty"},
        view.shared ? "no partitions have moved since this instance started"
          : "nothing moves on the embedded log"))]));
  }

  function render(plugins, clusterView, jobsView) {
    lastPlugins = plugins;
    tiles(plugins, clusterView);
    $("plugin-rows").replaceChildren(...(plugins.length ? plugins.map(row)
      : [h("tr", {}, h("td", {colspan: 7, class: "empty"},
        "no plugins yet \u2013 a plugin key appears here after its first fetch"))]));
    $("charts").replaceChildren(...(plugins.length ? plugins.map(card)
      : [h("p", {class: "empty"}, "no plugins yet")]));
    failures(plugins);
    jobs(jobsView);
    cluster(clusterView);
  }

  function setStatus(ok, text) {
    $("status").className = ok ? "ok" : "bad";
    $("status-text").textContent = text;
  }

  async function load(what) {
    const response = await fetch(API + what,
      {cache: "no-store", headers: {Accept: "application/json"}});
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
    return response.json();
  }

  async function poll() {
    try {
      let plugins, clusterView, jobsView;
      try {
        const [pluginsBody, ...rest] = await Promise.all(
          [load("plugins"), load("cluster"), load("jobs")]);
        plugins = Array.isArray(pluginsBody.plugins) ? pluginsBody.plugins : [];
        [clusterView, jobsView] = rest;
      } catch (error) {
        const since = lastOk ? `; showing data from ${clock(lastOk)}` : "";
        setStatus(false, `cannot reach azuld (${error.message})${since}`);
        return;
      }
      try {
        render(plugins, clusterView, jobsView);
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
