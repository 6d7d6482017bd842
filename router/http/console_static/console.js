// router console: plain JavaScript, no dependencies, no build step. Everything shown comes from the
// router's own APIs (admin API, status API, Invoke API, /metrics), asked with the credentials typed in
// the header (kept in this tab's sessionStorage only). Data is put in the page as text, never as HTML.
"use strict";

// --- credentials and requests -------------------------------------------------------------------------

const AUTH_KEY = "router.console.auth";

function loadAuth() {
  try { return JSON.parse(sessionStorage.getItem(AUTH_KEY)) || { kind: "token", secret: "" }; }
  catch (e) { return { kind: "token", secret: "" }; }
}
function saveAuth(auth) { sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth)); }

const enc = new TextEncoder();
function hex(buf) { return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join(""); }
async function sha256(data) { return hex(await crypto.subtle.digest("SHA-256", typeof data === "string" ? enc.encode(data) : data)); }
async function hmac(key, text) {
  const k = await crypto.subtle.importKey("raw", typeof key === "string" ? enc.encode(key) : key,
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", k, enc.encode(text));
}
// RFC 3986 encoding as SigV4 wants it (encodeURIComponent leaves !'()* alone).
function uriEncode(s) { return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase()); }

// AWS Signature Version 4 for service "lambda", as the AWS SDKs sign the Invoke API.
async function sigv4(method, url, headers, body, auth) {
  if (!window.crypto || !crypto.subtle) {
    throw new Error("SigV4 needs the browser's Web Crypto, which it offers only over HTTPS or on localhost; use an invoke token instead");
  }
  const now = new Date();
  const amzDate = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  const region = auth.region || "us-east-1";
  const payloadHash = await sha256(body || "");
  headers["x-amz-date"] = amzDate;
  headers["x-amz-content-sha256"] = payloadHash;
  const signed = { host: location.host, "x-amz-date": amzDate, "x-amz-content-sha256": payloadHash };
  if (headers["content-type"]) signed["content-type"] = headers["content-type"];
  const names = Object.keys(signed).sort();
  // As the router checks it (router/http/sigv4.py): the path as sent, URI-encoded once more; the query
  // as sent (api() builds it already encoded and sorted).
  const query = sortedQuery(url.search.replace(/^\?/, "").split("&").filter(Boolean));
  const canonical = [method, url.pathname.split("/").map(uriEncode).join("/"), query,
    names.map((n) => n + ":" + String(signed[n]).trim() + "\n").join(""), names.join(";"), payloadHash].join("\n");
  const scope = `${day}/${region}/lambda/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256(canonical)].join("\n");
  let key = await hmac("AWS4" + auth.secret, day);
  key = await hmac(key, region);
  key = await hmac(key, "lambda");
  key = await hmac(key, "aws4_request");
  const signature = hex(await hmac(key, toSign));
  headers["authorization"] = `AWS4-HMAC-SHA256 Credential=${auth.keyId}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`;
}

// "k=v" pairs sorted by key, then value, as the router sorts them (Python tuples), joined with "&".
function sortedQuery(pairs) {
  const split = pairs.map((p) => { const i = p.indexOf("="); return i < 0 ? [p, ""] : [p.slice(0, i), p.slice(i + 1)]; });
  split.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return split.map(([k, v]) => k + "=" + v).join("&");
}

class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

// One request to the router: JSON in and out. Returns {status, body, headers}; throws ApiError on 4xx/5xx.
async function api(method, path, { query, body, headers } = {}) {
  const url = new URL(path, location.origin);
  // The query string built here, encoded and sorted, so what is sent is what SigV4 signs.
  url.search = sortedQuery(Object.entries(query || {}).filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => uriEncode(k) + "=" + uriEncode(String(v))));
  const hdrs = Object.assign({ accept: "application/json" }, headers || {});
  let data;
  if (body !== undefined) { data = typeof body === "string" ? body : JSON.stringify(body); hdrs["content-type"] = "application/json"; }
  const auth = loadAuth();
  if (auth.kind === "token" && auth.secret) hdrs["authorization"] = "Bearer " + auth.secret;
  if (auth.kind === "sigv4" && auth.secret) await sigv4(method, url, hdrs, data, auth);
  const resp = await fetch(url, { method, headers: hdrs, body: data, credentials: "omit", cache: "no-store" });
  const text = await resp.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = text; }
  if (resp.status >= 400) {
    const msg = (parsed && (parsed.message || parsed.Message || parsed.errorMessage)) || resp.statusText;
    throw new ApiError(resp.status, `${method} ${url.pathname}: ${resp.status} ${msg}`, parsed);
  }
  return { status: resp.status, body: parsed, headers: resp.headers };
}

// --- small DOM helpers (text only) ---------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
function table(headers, rows, attrs) {
  return el("table", attrs, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "none"))]));
}
function when(t) {
  if (t === undefined || t === null || t === "") return "";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}
function ms(seconds) { return seconds === undefined || seconds === null ? "" : (seconds * 1000).toFixed(1) + " ms"; }
function statusPill(status) {
  const cls = { succeeded: "ok", success: "ok", enabled: "ok", active: "ok", failed: "bad", dropped: "bad",
    paused: "warn", disabled: "warn", retrying: "warn", queued: "muted", running: "muted", cancelled: "muted" }[status] || "";
  return el("span", { class: "pill " + cls, "data-status": status }, status);
}
function showError(where, err) { where.replaceChildren(el("p", { class: "error", id: "error" }, String(err.message || err))); }
function setStatus(text) { document.getElementById("status-line").textContent = text; }
function items(body, ...keys) {
  if (Array.isArray(body)) return body;
  for (const k of keys) if (body && Array.isArray(body[k])) return body[k];
  return [];
}

// --- metrics: scraped from /metrics, rates computed here, drawn on canvases ---------------------------

const metricHistory = new Map(); // function -> [{t, calls, errors, durSum, durCount}]
const HISTORY = 60;

function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const p of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

async function scrapeMetrics() {
  const resp = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
  if (!resp.ok) return;
  const samples = parseMetrics(await resp.text());
  const now = Date.now() / 1000;
  const per = new Map();
  const get = (fn) => { if (!per.has(fn)) per.set(fn, { t: now, calls: 0, errors: 0, durSum: 0, durCount: 0 }); return per.get(fn); };
  for (const s of samples) {
    const fn = s.labels.function;
    if (!fn) continue;
    if (s.name === "router_invocations_total") {
      const p = get(fn);
      p.calls += s.value;
      if (s.labels.outcome && s.labels.outcome !== "success") p.errors += s.value;
    } else if (s.name === "router_invocation_duration_seconds_sum") get(fn).durSum += s.value;
    else if (s.name === "router_invocation_duration_seconds_count") get(fn).durCount += s.value;
  }
  for (const [fn, p] of per) {
    const h = metricHistory.get(fn) || [];
    h.push(p);
    if (h.length > HISTORY) h.shift();
    metricHistory.set(fn, h);
  }
}

// Rates over the last two scrapes, and the per-interval series for the chart.
function rates(fn) {
  const h = metricHistory.get(fn) || [];
  const series = [];
  for (let i = 1; i < h.length; i++) {
    const dt = h[i].t - h[i - 1].t;
    series.push(dt > 0 ? Math.max(0, h[i].calls - h[i - 1].calls) / dt : 0);
  }
  const last = h[h.length - 1];
  const totals = last ? { calls: last.calls, errors: last.errors,
    duration: last.durCount > 0 ? last.durSum / last.durCount : null } : { calls: null, errors: null, duration: null };
  if (h.length < 2) return { rate: null, series, totals };
  const a = h[h.length - 2], dt = last.t - a.t;
  return { rate: Math.max(0, last.calls - a.calls) / dt, series, totals };
}

function sparkline(series, label) {
  const canvas = el("canvas", { class: "spark", width: 120, height: 28, "aria-label": label, role: "img" });
  const g = canvas.getContext("2d");
  const max = Math.max(1e-9, ...series);
  g.strokeStyle = "#0969da";
  g.lineWidth = 1.5;
  g.beginPath();
  series.forEach((v, i) => {
    const x = series.length > 1 ? (i / (series.length - 1)) * 118 + 1 : 1;
    const y = 27 - (v / max) * 25;
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  return canvas;
}

// --- pages ---------------------------------------------------------------------------------------------

const main = () => document.getElementById("main");
// Put ``parts`` (elements, or arrays of them for optional sections) in place of ``node``'s children.
function show(node, ...parts) { node.replaceChildren(...parts.flat(Infinity).filter((p) => p !== null && p !== undefined && p !== false)); }

async function overviewPage() {
  const [fns, routes] = await Promise.all([api("GET", "/admin/functions"), api("GET", "/admin/routes")]);
  const fnRows = items(fns.body, "functions", "Functions").map((f) => {
    const r = rates(f.name);
    const paused = f.paused === true || f.state === "paused";
    return el("tr", { "data-function": f.name },
      el("td", {}, el("a", { href: "#/functions/" + encodeURIComponent(f.name) }, f.name)),
      el("td", {}, f.runtime || f.kind || ""),
      el("td", {}, statusPill(paused ? "paused" : "active")),
      el("td", { class: "num" }, f.reserved_concurrency ?? ""),
      el("td", { class: "num invocations" }, r.totals.calls ?? 0),
      el("td", { class: "num errors" }, r.totals.errors ?? 0),
      el("td", { class: "num" }, r.totals.duration === null ? "" : ms(r.totals.duration)),
      el("td", { class: "num" }, r.rate === null ? "" : r.rate.toFixed(2)),
      el("td", {}, sparkline(r.series, `invocations per second of ${f.name}`)),
      el("td", {}, el("button", {
        class: "toggle", onclick: () => act("POST", `/admin/functions/${encodeURIComponent(f.name)}/${paused ? "resume" : "pause"}`),
      }, paused ? "Resume" : "Pause")));
  });
  const routeRows = items(routes.body, "routes", "Routes").map((r) => {
    const enabled = r.enabled !== false && r.state !== "paused" && r.state !== "disabled";
    return el("tr", { "data-route": r.name },
      el("td", {}, r.name), el("td", {}, r.type || r.source || ""),
      el("td", {}, r.function ? el("a", { href: "#/functions/" + encodeURIComponent(r.function) }, r.function) : ""),
      el("td", {}, statusPill(enabled ? "enabled" : "paused")),
      el("td", {}, el("button", {
        class: "toggle", onclick: () => act("POST", `/admin/routes/${encodeURIComponent(r.name)}/${enabled ? "pause" : "resume"}`),
      }, enabled ? "Pause" : "Resume")));
  });
  show(main(), 
    el("h2", {}, "Functions"),
    table(["Function", "Runtime", "State", "Reserved", "Invocations", "Errors", "Avg duration", "Now /s", "Last 5 min", ""], fnRows, { id: "functions" }),
    el("h2", {}, "Routes"),
    table(["Route", "Source", "Function", "State", ""], routeRows, { id: "routes" }));
}

async function act(method, path, body) {
  try {
    await api(method, path, body === undefined ? {} : { body });
    await render();
  } catch (err) { showError(main(), err); }
}

function savedEvents(fn) {
  try { return JSON.parse(localStorage.getItem("router.console.events." + fn)) || {}; } catch (e) { return {}; }
}
function storeEvents(fn, events) { localStorage.setItem("router.console.events." + fn, JSON.stringify(events)); }

async function functionPage(name) {
  const fns = await api("GET", "/admin/functions");
  const f = items(fns.body, "functions", "Functions").find((x) => x.name === name);
  if (!f) { show(main(), el("p", { class: "error", id: "error" }, `no function '${name}'`)); return; }
  const events = savedEvents(name);
  const select = el("select", { id: "event-name" }, Object.keys(events).map((k) => el("option", { value: k }, k)));
  const eventName = el("input", { id: "event-save-name", placeholder: "event name" });
  const text = el("textarea", { id: "event-json", spellcheck: "false" }, Object.values(events)[0] || "{}");
  select.addEventListener("change", () => { text.value = savedEvents(name)[select.value] || "{}"; });
  const result = el("div", { id: "invoke-result" });
  const invoke = async () => {
    result.replaceChildren(el("p", { class: "muted" }, "invoking..."));
    try {
      JSON.parse(text.value || "{}");
    } catch (e) { result.replaceChildren(el("p", { class: "error" }, "the event is not valid JSON: " + e.message)); return; }
    try {
      const r = await api("POST", `/2015-03-31/functions/${encodeURIComponent(name)}/invocations`,
        { body: text.value || "{}", headers: { "x-amz-log-type": "Tail" } });
      const fnError = r.headers.get("x-amz-function-error");
      const logs = r.headers.get("x-amz-log-result");
      result.replaceChildren(
        el("p", {}, "Status: ", statusPill(fnError ? "failed" : "succeeded"), " request id ",
          el("code", { id: "invoke-request-id" }, r.headers.get("x-amzn-requestid") || "")),
        el("h3", {}, "Response"), el("pre", { id: "invoke-response" }, JSON.stringify(r.body, null, 2)),
        el("h3", {}, "Log output"), el("pre", { id: "invoke-logs" }, logs ? decodeLogs(logs) : ""));
    } catch (err) { showError(result, err); }
    refreshRecent();
  };
  const recent = el("div", { id: "recent" });
  const refreshRecent = async () => {
    try {
      const r = await api("GET", "/admin/invocations", { query: { function: name, limit: 20 } });
      recent.replaceChildren(invocationsTable(items(r.body, "invocations", "items")));
    } catch (err) { showError(recent, err); }
  };
  show(main(), 
    el("h2", {}, "Function ", el("span", { id: "function-name" }, name), " ", statusPill(f.paused || f.state === "paused" ? "paused" : "active")),
    el("pre", { id: "function-config" }, JSON.stringify(f, null, 2)),
    el("div", { class: "row" },
      el("section", {},
        el("h3", {}, "Test"),
        el("p", {}, "Saved events: ", select, " ",
          el("button", { id: "event-delete", onclick: () => { const ev = savedEvents(name); delete ev[select.value]; storeEvents(name, ev); render(); } }, "Delete")),
        text,
        el("p", {}, eventName, " ",
          el("button", { id: "event-save", onclick: () => {
            const n = eventName.value.trim() || "event";
            const ev = savedEvents(name); ev[n] = text.value; storeEvents(name, ev); render();
          } }, "Save"), " ",
          el("button", { id: "invoke", onclick: invoke }, "Invoke")),
        result),
      el("section", {}, el("h3", {}, "Recent invocations ",
        el("button", { id: "recent-refresh", onclick: refreshRecent }, "Refresh")), recent)));
  pageRefresh = refreshRecent;  // the history is written in batches: the 5 s tick shows new rows
  refreshRecent();
}

let pageRefresh = null;  // what the current page redraws at each tick, besides the overview

function decodeLogs(b64) {
  try { return new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))); } catch (e) { return b64; }
}

function invocationsTable(list) {
  return table(["Request id", "Function", "Route", "Source", "Status", "Attempts", "Started", "Duration"],
    list.map((i) => {
      const id = i.request_id || i.id;
      return el("tr", { "data-request-id": id },
        el("td", {}, el("a", { href: "#/invocations/" + encodeURIComponent(id) }, id)),
        el("td", {}, i.function || ""), el("td", {}, i.route || ""), el("td", {}, i.source || ""),
        el("td", {}, statusPill(i.status || "")),
        el("td", { class: "num" }, Array.isArray(i.attempts) ? i.attempts.length : (i.attempts ?? "")),
        el("td", {}, when(i.started_at ?? i.created_at ?? i.queued_at)),
        el("td", { class: "num" }, ms(i.duration)));
    }), { id: "invocations" });
}

async function invocationsPage(params) {
  const r = await api("GET", "/admin/invocations", { query: { function: params.get("function"), status: params.get("status"), limit: 100 } });
  show(main(), el("h2", {}, "Invocations"), invocationsTable(items(r.body, "invocations", "items")));
}

async function invocationPage(id) {
  const r = await api("GET", "/admin/invocations/" + encodeURIComponent(id));
  const inv = r.body || {};
  const attempts = Array.isArray(inv.attempts) ? inv.attempts : [];
  show(main(), 
    el("h2", {}, "Invocation ", el("code", {}, id), " ", statusPill(inv.status || "")),
    el("p", {}, `function ${inv.function || ""}`, inv.route ? ` · route ${inv.route}` : "", inv.source ? ` · source ${inv.source}` : ""),
    el("h3", {}, "Attempts"),
    table(["#", "Started", "Ended", "Error"], attempts.map((a, n) => el("tr", {},
      el("td", { class: "num" }, a.attempt ?? n + 1), el("td", {}, when(a.started_at ?? a.start)),
      el("td", {}, when(a.ended_at ?? a.end)),
      el("td", {}, [a.error_type, a.error_message].filter(Boolean).join(": ")))), { id: "attempts" }),
    inv.result !== undefined && inv.result !== null ? [el("h3", {}, "Result"), el("pre", { id: "result" }, JSON.stringify(inv.result, null, 2))] : [],
    inv.error ? [el("h3", {}, "Error"), el("pre", { id: "error-detail" }, JSON.stringify(inv.error, null, 2))] : [],
    el("h3", {}, "Logs"), el("pre", { id: "logs" }, inv.logs || ""),
    inv.payload !== undefined && inv.payload !== null ? [el("h3", {}, "Event"), el("pre", { id: "payload" }, typeof inv.payload === "string" ? inv.payload : JSON.stringify(inv.payload, null, 2))] : []);
}

async function failuresPage(params) {
  const r = await api("GET", "/admin/failures", { query: { function: params.get("function"), limit: 100 } });
  const list = items(r.body, "failures", "items");
  const rows = list.map((f) => el("tr", { "data-failure": f.id },
    el("td", {}, el("input", { type: "checkbox", class: "pick", value: f.id })),
    el("td", {}, el("a", { href: "#/failures/" + encodeURIComponent(f.id) }, String(f.id))),
    el("td", {}, f.function || ""), el("td", {}, f.route || ""), el("td", {}, f.condition || ""),
    el("td", {}, [f.error_type, f.error_message].filter(Boolean).join(": ")),
    el("td", {}, when(f.failed_at)),
    el("td", {}, f.redriven_as ? el("span", { class: "redriven" }, "redriven as ", f.redriven_as) : el("button", {
      class: "redrive", onclick: () => redrive([f.id]) }, "Redrive"))));
  show(main(), 
    el("h2", {}, "Failed events"),
    el("p", {}, el("button", { id: "redrive-selected", onclick: () => redrive(
      Array.from(document.querySelectorAll("input.pick:checked"), (c) => Number(c.value) || c.value)) }, "Redrive selected")),
    table(["", "Id", "Function", "Route", "Condition", "Error", "Failed at", ""], rows, { id: "failures" }),
    el("div", { id: "redrive-result" }));
}

async function failurePage(id) {
  const r = await api("GET", "/admin/failures/" + encodeURIComponent(id));
  show(main(), el("h2", {}, "Failed event ", el("code", {}, id)),
    el("p", {}, el("button", { class: "redrive", onclick: () => redrive([Number(id) || id]) }, "Redrive")),
    el("pre", { id: "failure" }, JSON.stringify(r.body, null, 2)));
}

async function redrive(ids) {
  if (!ids.length) return;
  try {
    const r = await api("POST", "/admin/failures/redrive", { body: { ids } });
    await render();
    const where = document.getElementById("redrive-result") || main();
    where.append(el("p", { class: "ok", id: "redrive-done" }, "redrive: " + JSON.stringify(r.body)));
  } catch (err) { showError(main(), err); }
}

// --- navigation ----------------------------------------------------------------------------------------

async function render() {
  pageRefresh = null;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href").split("?")[0] === "#/" + (parts[0] || ""));
  try {
    if (parts[0] === "functions" && parts[1]) await functionPage(parts[1]);
    else if (parts[0] === "invocations" && parts[1]) await invocationPage(parts[1]);
    else if (parts[0] === "invocations") await invocationsPage(params);
    else if (parts[0] === "failures" && parts[1]) await failurePage(parts[1]);
    else if (parts[0] === "failures") await failuresPage(params);
    else await overviewPage();
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (err) {
    showError(main(), err.status === 403 ? new Error(err.message + " (set the credentials above)") : err);
  }
}

function setupLogin() {
  const auth = loadAuth();
  const kind = document.getElementById("auth-kind");
  const keyId = document.getElementById("auth-key-id");
  const secret = document.getElementById("auth-secret");
  const state = document.getElementById("auth-state");
  const sync = () => {
    keyId.hidden = kind.value !== "sigv4";
    secret.hidden = kind.value === "none";
    secret.placeholder = kind.value === "sigv4" ? "secret access key" : "token";
  };
  kind.value = auth.kind || "token";
  keyId.value = auth.keyId || "";
  sync();
  state.textContent = auth.secret || auth.kind === "none" ? "credentials set" : "no credentials";
  kind.addEventListener("change", sync);
  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    saveAuth({ kind: kind.value, keyId: keyId.value.trim(), secret: secret.value });
    secret.value = "";
    state.textContent = "credentials set";
    render();
  });
}

async function tick() {
  try { await scrapeMetrics(); } catch (e) { /* /metrics may be on its own port: charts stay empty */ }
  if ((location.hash || "#/") === "#/") render();
  else if (pageRefresh) pageRefresh();
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", async () => {
  setupLogin();
  try { await scrapeMetrics(); } catch (e) { /* see tick */ }
  await render();
  setInterval(tick, 5000);
});
