// Ferry's operator console. It reads and changes only through the host's routes (/v1/models,
// /v1/fleet, /v1/audit, /v1/history, /v1/caller, /v1/models/{m}/monitoring, the alias routes) with
// the token the operator gives, kept for this tab only (sessionStorage). Data is written into the
// page as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "ferry-token";
const REFRESH_MS = 5000;
const tokenRequired =
  document.querySelector('meta[name="ferry-token-required"]').content === "true";

let refreshTimer = null;
let caller = null; // GET /v1/caller
// Bumped by every navigation and change: a page whose data comes back after it is dropped.
let generation = 0;
// Whether the notice shows a failed redraw's error (cleared by the next good one).
let refreshFailed = false;
// Self-test tables the operator opened, kept open across redraws.
const openDetails = new Set();

// ---- Building the page ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, attrs) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function fmt(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  if (typeof x !== "number") return String(x);
  if (x !== 0 && Math.abs(x) < 0.01) return x.toExponential(1);
  return x.toFixed(digits).replace(/\.?0+$/, "") || "0";
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${fmt(n, 1)} ${units[i]}`;
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

// ---- Talking to the host ----

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (options.json !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.json !== undefined ? JSON.stringify(options.json) : undefined,
  });
  let body = null;
  const text = await response.text();
  if (text) {
    try { body = JSON.parse(text); } catch { body = { error: text }; }
  }
  if (response.status === 401) throw new Unauthorized(body && body.error);
  if (!response.ok) {
    throw new Error(`${options.method || "GET"} ${path}: ${response.status} ${(body && body.error) || ""}`);
  }
  return body;
}

const enc = encodeURIComponent;

function may(model, action) {
  return Boolean(caller && caller.may && Object.hasOwn(caller.may, model)
    && caller.may[model].includes(action));
}

function largest(values) {
  let top = -Infinity;
  for (const v of values) if (v !== null && v !== undefined && v > top) top = v;
  return top;
}

// ---- Pages ----

function showLogin(message) {
  generation++; // a page still loading does not draw over the form
  stopRefresh();
  document.getElementById("who").replaceChildren();
  const input = el("input", { type: "password", id: "token", autocomplete: "off",
    placeholder: "bearer token", "aria-label": "bearer token" });
  const form = el("form", { class: "login", id: "login", onsubmit: (e) => {
    e.preventDefault();
    const token = input.value.trim();
    // A bearer token is printable ASCII; anything else the browser could not even send.
    if (!/^[\x21-\x7e]+$/.test(token)) {
      showLogin("A token is printable ASCII with no spaces.");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    route();
  } },
  el("h1", {}, "Sign in"),
  el("p", {}, "This host needs a token: any credential that may read (read, deploy, promote or admin)."),
  message ? el("p", { class: "bad" }, message) : null,
  input,
  el("button", { type: "submit", id: "sign-in" }, "Sign in"));
  document.getElementById("main").replaceChildren(form);
  input.focus();
}

function showWho() {
  const who = document.getElementById("who");
  who.replaceChildren(
    el("span", { id: "actor" }, `${caller.actor} · ${caller.roles.join(", ")}`),
    tokenRequired ? el("button", { id: "sign-out", onclick: () => {
      sessionStorage.removeItem(TOKEN_KEY);
      caller = null;
      showLogin();
    } }, "Sign out") : null);
}

function breakerOf(model) {
  const states = model.versions.map((v) => v.breaker && v.breaker.state).filter(Boolean);
  // Breaker::describe: closed, probing (half open), open; the worst of the model's versions.
  for (const s of ["open", "probing"]) if (states.includes(s)) return s;
  return states.length ? "closed" : "—";
}

function aliasText(target) {
  if (typeof target === "string") return target;
  if (target && target.split) {
    return Object.entries(target.split).map(([v, w]) => `${v} ${w}%`).join(" / ");
  }
  return JSON.stringify(target);
}

function shareText(share) {
  if (share === null || share === undefined) return "—";
  if (typeof share !== "object") return String(share);
  // CpuShares::describe: the model's share of the host's cores, and whether calls were held back.
  const parts = [`${fmt(100 * share.share)} %`];
  if (share.cores !== undefined) parts.push(`${fmt(share.cores)} cores`);
  if (share.over_share) parts.push("over its share");
  if (share.calls_starved) parts.push(`${share.calls_starved} calls starved`);
  return parts.join(", ");
}

function seconds(s) {
  if (s === null || s === undefined) return "—";
  return s < 1 ? `${fmt(1000 * s, 1)} ms` : `${fmt(s, 2)} s`;
}

async function overview() {
  // The fleet is read from the store: when the store is unreachable the rest still shows.
  const [models, fleet, history] = await Promise.all([
    api("/v1/models"),
    api("/v1/fleet").catch((e) => {
      if (e instanceof Unauthorized) throw e;
      return { hosts: [], unavailable: e.message };
    }),
    api("/v1/history")]);
  const hosts = fleet.hosts || [];
  const hostSection = fleet.unavailable
    ? el("p", { id: "hosts", class: "bad" }, `The fleet cannot be read now: ${fleet.unavailable}`)
    : hosts.length
    ? table(["Host", "Address", "Alive", "Heartbeat", "Store", "Versions"],
      hosts.map((h) => el("tr", { "data-host": h.host },
        el("td", {}, h.host), el("td", {}, h.address || "—"),
        el("td", { class: h.alive ? "ok" : "bad" }, h.alive ? "alive" : "gone"),
        el("td", { class: "num" }, `${fmt(h.heartbeat_age_seconds, 1)} s ago`),
        el("td", { class: h.store_reachable ? "ok" : "bad" }, h.store_reachable ? "reachable" : "unreachable"),
        el("td", {}, versionsOfHost(h.versions)))), { id: "hosts" })
    : el("p", { id: "hosts", class: "muted" },
      `This host serves from its own store (${fleet.store}); no other host shares it.`);
  const latest = history.models || {};
  const rows = models.models.map((m) => {
    const h = latest[m.name] || {};
    const breaker = breakerOf(m);
    return el("tr", { "data-model": m.name },
      el("td", {}, el("a", { href: `#/models/${enc(m.name)}` }, m.name)),
      el("td", { class: "serving" }, m.default_version || "none ready"),
      el("td", {}, Object.entries(m.aliases).map(([a, t]) => el("div", {}, `${a} → ${aliasText(t)}`))),
      el("td", { class: "num rps" }, fmt(h.requests_per_second)),
      el("td", { class: "num" }, fmt(h.p50_ms)),
      el("td", { class: "num" }, fmt(h.p99_ms)),
      el("td", { class: "num" }, h.error_ratio === null || h.error_ratio === undefined ? "—" : `${fmt(100 * h.error_ratio)} %`),
      el("td", {}, shareText(m.cpu_share)),
      el("td", { class: `state-${breaker}` }, breaker));
  });
  return [
    el("h1", {}, "Overview"),
    el("h2", {}, "Hosts"), hostSection,
    el("h2", {}, `Models (${models.models.length})`),
    el("p", { class: "muted" }, `Rates and latencies over the last ${fmt(history.interval_seconds)} s.`),
    table(["Model", "Serving", "Aliases", "Requests/s", "p50 ms", "p99 ms", "Errors", "CPU share", "Breaker"],
      rows, { id: "models" }),
  ];
}

function versionsOfHost(versions) {
  // HostVersion: {model, version, state, reason, aliases}.
  if (!versions) return "—";
  const ready = versions.filter((v) => v.state === "ready").length;
  const failed = versions.filter((v) => v.state === "failed").length;
  return `${ready} ready${failed ? `, ${failed} failed` : ""}`;
}

async function modelPage(name) {
  const [model, monitoring, history] = await Promise.all([
    api(`/v1/models/${enc(name)}`),
    api(`/v1/models/${enc(name)}/monitoring`),
    api(`/v1/models/${enc(name)}/history`)]);
  return [
    el("h1", {}, el("a", { href: "#/" }, "Models"), " / ", el("span", { id: "model-name" }, model.name)),
    el("p", {}, "Serving ", el("strong", { id: "serving" }, model.default_version || "nothing ready"),
      ` · CPU share ${shareText(model.cpu_share)} · prediction log ${fmt(model.traffic && model.traffic.log && model.traffic.log.percent)} %`),
    el("h2", {}, "Traffic, last hour"), charts(history),
    el("h2", {}, "Aliases"), aliases(model),
    el("h2", {}, "Versions"), versions(model),
    el("h2", {}, "Shadow agreement"), shadows(model),
    el("h2", {}, "Drift against training"), drift(monitoring),
  ];
}

function aliases(model) {
  const rows = Object.entries(model.aliases).map(([alias, target]) => el("tr", { "data-alias": alias },
    el("td", {}, alias), el("td", { class: "target" }, aliasText(target)),
    el("td", {}, may(model.name, "rollback")
      ? el("button", { "data-action": "rollback", "data-alias": alias,
        onclick: () => change(`Rolled back ${alias}`, () =>
          api(`/v1/models/${enc(model.name)}/aliases/${enc(alias)}/rollback`, { method: "POST" })) }, "Roll back")
      : null)));
  const parts = [rows.length ? table(["Alias", "Points to", ""], rows, { id: "aliases" })
    : el("p", { id: "aliases", class: "muted" }, "No aliases: requests go to the newest ready version.")];
  if (may(model.name, "set_alias")) parts.push(splitForm(model));
  return parts;
}

function splitForm(model) {
  const alias = el("input", { id: "split-alias", value: "canary", "aria-label": "alias" });
  const weights = model.versions.filter((v) => v.state === "ready").map((v) =>
    el("label", {}, ` ${v.version} `, el("input", { class: "weight", type: "number", min: 0, max: 100,
      "data-version": v.version, value: 0, "aria-label": `weight of ${v.version}` }), " %"));
  return el("form", { class: "edit", id: "split-form", onsubmit: (e) => {
    e.preventDefault();
    const split = {};
    for (const input of e.target.querySelectorAll("input.weight")) {
      const w = Number(input.value);
      if (w > 0) split[input.dataset.version] = w;
    }
    change(`Split ${alias.value}`, () => api(`/v1/models/${enc(model.name)}/aliases/${enc(alias.value)}`,
      { method: "PUT", json: { split } }));
  } }, el("strong", {}, "Split an alias: "), alias, weights, " ", el("button", { type: "submit" }, "Save split"));
}

function versions(model) {
  const canPromote = may(model.name, "set_alias");
  const rows = model.versions.map((v) => {
    const mem = v.memory || {};
    const tests = v.self_tests;
    const testCell = tests
      ? el("details", { open: openDetails.has(`${model.name}/${v.version}`),
        ontoggle: (e) => (e.target.open ? openDetails.add : openDetails.delete).call(openDetails, `${model.name}/${v.version}`) },
      el("summary", { class: tests.failed ? "bad" : "ok" },
        `${tests.passed} passed, ${tests.failed || 0} failed`),
        tests.cases ? table(["Case", "", "Worst delta", "Detail"], tests.cases.map((c) => el("tr", {},
          el("td", {}, c.name), el("td", { class: c.passed ? "ok" : "bad" }, c.passed ? "passed" : "failed"),
          el("td", { class: "num" }, fmt(c.worst_delta, 6)), el("td", {}, c.detail || "")))) : el("p", {}, tests.cached || ""))
      : el("span", { class: "muted" }, "none");
    const breaker = v.breaker ? v.breaker.state : "—";
    return el("tr", { "data-version": v.version },
      el("td", {}, v.version),
      el("td", { class: `state-${v.state}` }, v.state, v.reason ? el("div", { class: "muted reason" }, v.reason) : null),
      el("td", {}, testCell),
      el("td", { class: "num" }, seconds(v.load_seconds)),
      el("td", { class: "num" }, bytes((mem.private_bytes || 0) + (mem.shared_bytes || 0) + (mem.graph_bytes || 0))),
      el("td", { class: "num" }, mem.instances === undefined ? "—" : mem.instances),
      el("td", { class: `state-${breaker}` }, breaker),
      el("td", {}, v.profile === "none" ? "no profile" : v.profile && v.profile.watched ? "watched" : "not watched"),
      el("td", {}, canPromote && v.state === "ready"
        ? el("button", { "data-action": "promote", "data-version": v.version,
          onclick: () => change(`Promoted ${v.version} to production`, () =>
            api(`/v1/models/${enc(model.name)}/aliases/production`, { method: "PUT", json: { version: v.version } })) },
        "Promote to production")
        : null));
  });
  return table(["Version", "State", "Self-tests", "Load", "Memory", "Instances", "Breaker", "Profile", ""],
    rows, { id: "versions" });
}

function shadows(model) {
  const list = model.shadow_agreement || [];
  const shadow = model.traffic && model.traffic.shadow;
  const now = shadow
    ? el("p", { id: "shadowing" }, `Shadowing ${fmt(shadow.percent)} % of requests to version ${shadow.version}.`)
    : null;
  if (!list.length) return [now, el("p", { class: "muted", id: "shadows" }, "No shadow traffic compared.")];
  const rows = list.map((s) => el("tr", { "data-pair": `${s.primary}>${s.shadow}` },
    el("td", {}, `${s.primary} → ${s.shadow}`),
    el("td", { class: "num compared" }, s.compared),
    el("td", { class: "num" }, s.compared ? `${fmt(100 * s.identical / s.compared, 1)} %` : "—"),
    el("td", { class: "num" }, s.abs_diff ? fmt(s.abs_diff.max, 6) : "—"),
    el("td", { class: "num" }, s.abs_diff ? fmt(s.abs_diff.mean, 6) : "—"),
    el("td", { class: "num" }, s.label_agreement === null || s.label_agreement === undefined
      ? "—" : `${fmt(100 * s.label_agreement, 1)} %`),
    el("td", { class: "num" }, s.primary_failed), el("td", { class: "num" }, s.shadow_failed),
    el("td", { class: "num" }, (s.dropped_queue_full || 0) + (s.dropped_busy || 0))));
  return [now, table(["Primary → shadow", "Compared", "Identical", "Max |Δ|", "Mean |Δ|", "Labels agreed",
    "Primary failed", "Shadow failed", "Dropped"], rows, { id: "shadows" })];
}

function drift(report) {
  const parts = [el("p", { class: "muted" },
    `${fmt(report.sample_percent)} % of requests sampled; a population stability index above ${fmt(report.drift_threshold)} reads as drifting.`)];
  for (const v of report.versions) {
    parts.push(el("h3", {}, `Version ${v.version}`));
    if (!v.features && !v.outputs) {
      parts.push(el("p", { class: "muted" }, `${v.profile}: ${v.why}`));
      continue;
    }
    parts.push(el("p", { class: "muted" }, `${v.samples === undefined ? "" : `${v.samples} samples counted. `}`
      + "Grey: training; blue: live traffic in the window."));
    for (const [side, columns] of [["Inputs", v.features || []], ["Predictions", v.outputs || []]]) {
      parts.push(el("h3", {}, side));
      parts.push(el("div", { class: "drift", "data-version": v.version }, columns.map(featureCard)));
    }
  }
  return el("div", { id: "drift" }, parts);
}

function featureCard(c) {
  const drifting = Boolean(c.drifting);
  return el("div", { class: `feature${drifting ? " drifting" : ""}`, "data-feature": c.name,
    "data-psi": c.psi === null || c.psi === undefined ? "" : c.psi, "data-drifting": String(drifting) },
  el("div", {}, el("span", { class: "name" }, c.name), " ",
    el("span", { class: drifting ? "bad" : "muted" },
      c.psi === null || c.psi === undefined ? `PSI pending (${c.rows || 0} rows)` : `PSI ${fmt(c.psi, 3)}`),
    c.distance === null || c.distance === undefined ? null : el("span", { class: "muted" }, ` · distance ${fmt(c.distance, 3)}`)),
  c.baseline && c.live ? histogram(c) : null);
}

function histogram(c) {
  const w = 280, h = 90, pad = 14;
  const share = (xs) => { const t = xs.reduce((a, b) => a + b, 0) || 1; return xs.map((x) => x / t); };
  const base = share(c.baseline), live = share(c.live);
  const top = Math.max(largest(base), largest(live), 0.01);
  const n = base.length, slot = w / n, bar = Math.max(1, slot / 2 - 1);
  const bars = [];
  for (let i = 0; i < n; i++) {
    const x = i * slot;
    const bh = (base[i] / top) * (h - pad), lh = (live[i] / top) * (h - pad);
    bars.push(svg("rect", { x, y: h - pad - bh, width: bar, height: bh, fill: "#9aa4b5" },
      svg("title", {}, `${c.bins ? c.bins[i] : i}: training ${fmt(100 * base[i], 1)} %`)));
    bars.push(svg("rect", { x: x + bar, y: h - pad - lh, width: bar, height: lh, fill: "#2f6fdb" },
      svg("title", {}, `${c.bins ? c.bins[i] : i}: live ${fmt(100 * live[i], 1)} %`)));
  }
  const first = c.bins ? c.bins[0] : "", last = c.bins ? c.bins[n - 1] : "";
  return svg("svg", { width: w, height: h, role: "img", "aria-label": `${c.name} histogram` }, bars,
    svg("text", { x: 0, y: h - 2, "font-size": 10, fill: "#667085" }, first),
    svg("text", { x: w, y: h - 2, "font-size": 10, fill: "#667085", "text-anchor": "end" }, last));
}

function charts(history) {
  const points = history.points || [];
  if (!points.length) {
    return el("p", { class: "muted", id: "charts" },
      `No interval recorded yet (one every ${fmt(history.interval_seconds)} s).`);
  }
  const t = points.map((p) => p.unix_s);
  return el("div", { class: "charts", id: "charts" },
    lineChart("Requests/s", t, [{ name: "requests/s", color: "#2f6fdb", values: points.map((p) => p.requests_per_second) }]),
    lineChart("Latency (ms)", t, [
      { name: "p50", color: "#2e7d32", values: points.map((p) => p.p50_ms ?? null) },
      { name: "p99", color: "#b26a00", values: points.map((p) => p.p99_ms ?? null) }]),
    lineChart("Error ratio (%)", t, [{ name: "errors", color: "#c62828",
      values: points.map((p) => (p.error_ratio === null || p.error_ratio === undefined ? null : 100 * p.error_ratio)) }]));
}

function lineChart(title, times, series) {
  const w = 380, h = 150, left = 42, bottom = 18;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const top = Math.max(largest(all), 0) || 1;
  const t0 = times[0], t1 = Math.max(times[times.length - 1], t0 + 1);
  const x = (ti) => left + ((ti - t0) / (t1 - t0)) * (w - left - 4);
  const y = (v) => 4 + (1 - v / top) * (h - bottom - 8);
  const lines = series.map((s) => {
    // A gap where an interval had no requests (no latency).
    const runs = [];
    let run = [];
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { if (run.length) runs.push(run); run = []; }
      else run.push(`${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`);
    });
    if (run.length) runs.push(run);
    // A lone interval between gaps is a dot, not an invisible line.
    return runs.map((r) => r.length === 1
      ? svg("circle", { cx: r[0].split(",")[0], cy: r[0].split(",")[1], r: 2, fill: s.color })
      : svg("polyline", { points: r.join(" "), fill: "none", stroke: s.color, "stroke-width": 1.5 }));
  });
  const minutes = Math.round((t1 - t0) / 60);
  return el("div", { class: "chart", "data-chart": title },
    el("div", { class: "title" }, title),
    svg("svg", { width: w, height: h, role: "img", "aria-label": title },
      svg("line", { x1: left, y1: h - bottom, x2: w, y2: h - bottom, stroke: "#d9dee7" }),
      svg("text", { x: left - 4, y: 12, "font-size": 10, fill: "#667085", "text-anchor": "end" }, fmt(top)),
      svg("text", { x: left - 4, y: h - bottom, "font-size": 10, fill: "#667085", "text-anchor": "end" }, "0"),
      svg("text", { x: left, y: h - 4, "font-size": 10, fill: "#667085" }, minutes ? `${minutes} min ago` : `${t1 - t0} s ago`),
      svg("text", { x: w - 4, y: h - 4, "font-size": 10, fill: "#667085", "text-anchor": "end" }, "now"),
      lines),
    el("div", { class: "legend" }, series.map((s) =>
      el("span", {}, swatch(s.color), s.name))));
}

function swatch(color) {
  const box = el("span", { class: "swatch" });
  box.style.background = color; // through the CSSOM: the page's policy allows no inline style
  return box;
}

async function auditPage(after) {
  const query = after ? `?limit=50&after=${enc(after)}` : "?limit=50";
  const page = await api(`/v1/audit${query}`);
  const older = page.next || null;
  const rows = page.records.map((r) => {
    const { at_unix_ms: at, actor, action, model, ...rest } = r;
    return el("tr", {},
      el("td", {}, at ? new Date(at).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "—"),
      el("td", {}, actor || "—"), el("td", {}, action || "—"), el("td", {}, model || "—"),
      el("td", {}, el("pre", {}, JSON.stringify(rest))));
  });
  return [
    el("h1", {}, "Audit log"),
    rows.length ? table(["When", "Actor", "Action", "Model", "Details"], rows, { id: "audit" })
      : el("p", { class: "muted", id: "audit" }, "Nothing recorded yet."),
    el("p", {},
      after ? el("button", { id: "newest", onclick: () => navigate(() => auditPage(null)) }, "Newest") : null, " ",
      older ? el("button", { id: "older", onclick: () => navigate(() => auditPage(older)) }, "Older") : null),
  ];
}

// ---- Changes and navigation ----

async function change(what, action) {
  generation++; // a redraw in flight shows the state before the change: drop it
  stopRefresh();
  try {
    await action();
    notice(`${what}.`, false);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    notice(e.message, true);
  }
  await route();
}

function stopRefresh() {
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
}

function navigate(page) {
  generation++;
  return render(page, false, false, generation);
}

async function render(page, refresh, redraw, at) {
  stopRefresh();
  if (redraw && document.hidden) {
    // A tab nobody looks at reads nothing; it catches up when shown.
    refreshTimer = setTimeout(() => render(page, true, true, at), REFRESH_MS);
    return;
  }
  try {
    const content = await page();
    if (at !== generation) return; // the operator went elsewhere meanwhile
    // A failed redraw's error goes once a redraw succeeds; a failed change's stays until the
    // operator moves on.
    if (redraw && refreshFailed) notice("");
    refreshFailed = false;
    // A form being typed into is not redrawn under the operator's hands.
    const active = document.activeElement;
    if (!(redraw && active && active.closest && active.closest("form"))) {
      document.getElementById("main").replaceChildren(...[content].flat(Infinity).filter(Boolean));
    }
    document.body.dataset.loaded = location.hash || "#/";
  } catch (e) {
    if (at !== generation) return;
    if (e instanceof Unauthorized) return showLogin(e.message);
    notice(e.message, true);
    refreshFailed = redraw;
  }
  if (refresh) refreshTimer = setTimeout(() => render(page, true, true, at), REFRESH_MS);
}

async function route() {
  stopRefresh();
  const at = ++generation;
  if (tokenRequired && !sessionStorage.getItem(TOKEN_KEY)) return showLogin();
  try {
    caller = await api("/v1/caller");
  } catch (e) {
    if (at !== generation) return;
    if (e instanceof Unauthorized) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showLogin(e.message || "That token is not accepted.");
    }
    notice(e.message, true);
    return;
  }
  if (at !== generation) return;
  showWho();
  const hash = location.hash || "#/";
  const model = hash.match(/^#\/models\/([^/]+)$/);
  if (model) {
    let name;
    try {
      name = decodeURIComponent(model[1]);
    } catch {
      return notice(`No model is named ${model[1]}.`, true);
    }
    return render(() => modelPage(name), true, false, at);
  }
  if (hash === "#/audit") return render(() => auditPage(null), false, false, at);
  return render(overview, true, false, at);
}

window.addEventListener("hashchange", () => { notice(""); route(); });
// A tab shown again catches up at once rather than at its next turn.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && refreshTimer) route();
});
// A click on the link of the page already shown fires no hashchange: draw it afresh all the same.
for (const link of document.querySelectorAll("header a")) {
  link.addEventListener("click", () => {
    if (link.getAttribute("href") === (location.hash || "#/")) route();
  });
}
route();
