// The console's pages. Everything a device, a rule or a config file says is put into
// the page with textContent (never innerHTML): it always shows as text.
"use strict";
const API = "/console/api";
let session = null;
const alarms = new Map(); // alarm_id -> data
let source = null;
let refresher = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// A time of the gateway (ISO 8601 UTC) in the browser's own time zone and language; the
// exact value stays in the cell's title.
function timeCell(iso, cls) {
  const cell = el("td", "", cls);
  if (!iso) return cell;
  const when = new Date(iso);
  cell.textContent = isNaN(when) ? String(iso)
    : when.toLocaleString(currentLang() === "zh" ? "zh-CN" : "en-GB");
  cell.title = String(iso);
  return cell;
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  if (opts.method === "POST") {
    opts.headers = Object.assign({ "Content-Type": "application/json", "X-CSRF-Token": session.csrf }, opts.headers || {});
  }
  const res = await fetch(API + path, opts);
  if (res.status === 401) {
    window.location.assign("/console/login");
    throw new Error("login required");
  }
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || String(res.status));
  return body;
}

// -- alarms ---------------------------------------------------------------------------
function renderAlarms() {
  const tbody = document.querySelector("#alarms tbody");
  tbody.replaceChildren();
  const order = { critical: 0, major: 1, minor: 2, warning: 3 };
  const list = [...alarms.values()].sort(
    (a, b) => (order[a.severity] - order[b.severity]) || String(b.raised_at).localeCompare(String(a.raised_at)));
  for (const a of list) {
    const tr = document.createElement("tr");
    tr.dataset.alarmId = a.alarm_id;
    tr.className = "sev-" + a.severity + " state-" + a.state;
    tr.append(el("td", t("severity." + a.severity)), el("td", t("state." + a.state), "state"),
      el("td", a.device), el("td", a.rule), el("td", a.message),
      el("td", a.value === null || a.value === undefined ? "" : JSON.stringify(a.value)),
      timeCell(a.raised_at, "raised"), el("td", a.acked_by || ""));
    const actions = el("td");
    if (a.state === "active_unacked" || a.state === "cleared_unacked" || a.state === "shelved") {
      const ack = el("button", t("ack"), "ack");
      ack.addEventListener("click", () => act(a.alarm_id, "ack", {}));
      actions.append(ack);
    }
    if (a.state !== "shelved") {
      const shelve = el("button", t("shelve"), "shelve");
      shelve.addEventListener("click", () => act(a.alarm_id, "shelve",
        { minutes: Number(document.getElementById("shelve-minutes").value) }));
      actions.append(shelve);
    }
    tr.append(actions);
    tbody.append(tr);
  }
  document.getElementById("no-alarms").hidden = list.length > 0;
}

async function act(id, what, body) {
  const error = document.getElementById("action-error");
  error.textContent = "";
  try {
    await api("/alarms/" + encodeURIComponent(id) + "/" + what, { method: "POST", body: JSON.stringify(body) });
  } catch (err) {
    error.textContent = String(err.message);
  }
}

function onAlarm(a) {
  if (a.state === "cleared") alarms.delete(a.alarm_id);
  else alarms.set(a.alarm_id, a);
}

let streamState = null;

function renderStreamState() {
  const state = document.getElementById("stream-state");
  if (streamState === null) return;
  state.textContent = (streamState === "live" ? "● " : "○ ") + t(streamState);
  state.className = streamState === "live" ? "ok" : "bad";
}

function connectStream() {
  source = new EventSource(API + "/events");
  source.addEventListener("open", () => { streamState = "live"; renderStreamState(); });
  source.addEventListener("snapshot", (ev) => {
    alarms.clear();
    for (const a of JSON.parse(ev.data)) onAlarm(a);
    renderAlarms();
  });
  source.addEventListener("alarm", (ev) => { onAlarm(JSON.parse(ev.data)); renderAlarms(); });
  source.addEventListener("error", async () => {
    streamState = "reconnecting"; renderStreamState();
    // the browser reconnects by itself with Last-Event-ID; a lost session goes to login
    try { await api("/session"); } catch (e) { /* redirected */ }
  });
}

// -- devices, health, check --------------------------------------------------------------
function fmtValues(values, units) {
  return Object.entries(values || {})
    .map(([k, v]) => k + " = " + v + (units && units[k] ? " " + units[k] : "")).join("\n");
}

async function loadDevices() {
  const body = await api("/devices");
  const tbody = document.querySelector("#devices tbody");
  tbody.replaceChildren();
  for (const d of body.devices) {
    const tr = document.createElement("tr");
    tr.dataset.deviceId = d.id;
    const loc = d.location ? [d.location.building, d.location.floor, d.location.room].filter((x) => x !== null && x !== undefined).join(" / ") : "";
    const values = el("td"); values.append(el("pre", fmtValues(d.values, d.units)));
    if (d.values_ts) values.append(el("small", timeCell(d.values_ts).textContent));
    const frames = el("td");
    if (d.frames === null) frames.append(el("small", t("no_frames")));
    else frames.append(el("pre", d.frames.join("\n")));
    if (d.diagnostics) frames.append(el("pre", JSON.stringify(d.diagnostics, null, 1)));
    tr.append(el("td", d.id), el("td", d.name || "", "name"), el("td", d.kind), el("td", loc),
      el("td", t("dev." + d.state), "dev-" + d.state), timeCell(d.since),
      el("td", d.last_error || ""), values, frames);
    tbody.append(tr);
  }
}

function fact(dl, key, value, cls) {
  dl.append(el("dt", t(key)), el("dd", value === null || value === undefined ? "—" : value, cls));
}

async function loadHealth() {
  const h = await api("/health");
  const dl = document.getElementById("health");
  dl.replaceChildren();
  fact(dl, "uplink", t(h.uplink.connected ? "connected" : "disconnected"), h.uplink.connected ? "ok" : "bad");
  fact(dl, "mqtt_version", h.uplink.protocol);
  fact(dl, "broker", h.uplink.broker);
  fact(dl, "outbox_depth", h.outbox.depth);
  fact(dl, "outbox_bytes", h.outbox.bytes);
  fact(dl, "outbox_oldest", h.outbox.oldest_age_s);
  fact(dl, "outbox_mode", h.outbox.mode);
  const dropped = Object.values(h.dropped || {}).reduce((a, b) => a + Number(b || 0), 0);
  fact(dl, "dropped", dropped, dropped ? "bad" : "ok");
  fact(dl, "publish_rate", h.publish ? h.publish.rate_per_s : null);
  fact(dl, "clock", t(h.clock.synced ? "synced" : "not_synced") + (h.clock.reason ? " (" + h.clock.reason + ")" : ""),
    h.clock.synced ? "ok" : "bad");
  fact(dl, "devices_online", h.devices.online + " / " + h.devices.total);
  fact(dl, "uptime", h.uptime_s);
}

async function runCheck() {
  const result = document.getElementById("check-result");
  result.textContent = "…";
  const c = await api("/check");
  result.textContent = t(c.ok ? "check_ok" : "check_bad");
  result.className = c.ok ? "ok" : "bad";
  const dl = document.getElementById("check-facts");
  dl.replaceChildren();
  fact(dl, "file", c.file);
  fact(dl, "checked_at", c.checked_at);
  const ul = document.getElementById("check-lines");
  ul.replaceChildren();
  for (const line of c.problems) ul.append(el("li", line, "bad"));
  for (const line of c.warnings) ul.append(el("li", "warning: " + line));
  for (const line of c.notes) ul.append(el("li", "note: " + line));
}

// -- tabs: only the visible one refreshes, and only while the page is shown --------------
function show(tab) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "tab-" + tab;
  if (refresher) clearInterval(refresher);
  refresher = null;
  const load = { devices: loadDevices, health: loadHealth }[tab];
  if (load) {
    load().catch(() => {});
    refresher = setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 5000);
  }
  if (tab === "check") runCheck().catch((e) => { document.getElementById("check-result").textContent = String(e.message); });
  window.location.hash = tab;
}

document.addEventListener("DOMContentLoaded", async () => {
  session = await api("/session");
  setupLanguage(session.language, () => { renderAlarms(); renderStreamState(); show(location.hash.slice(1) || "alarms"); });
  document.getElementById("user").textContent = session.user;
  const site = session.site || {};
  document.getElementById("site").textContent = [site.name, site.id, site.gateway_id].filter(Boolean).join(" · ");
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.tab));
  document.getElementById("run-check").addEventListener("click", () => runCheck());
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/logout", { method: "POST", body: "{}" });
    window.location.assign("/console/login");
  });
  renderAlarms();
  connectStream();
  show(["alarms", "devices", "health", "check"].includes(location.hash.slice(1)) ? location.hash.slice(1) : "alarms");
});
