// The console's pages. Everything a device, a rule or a config file says is put into
// the page with textContent (never innerHTML): it always shows as text.
"use strict";
const API = "/console/api";
let session = null;
const alarms = new Map(); // alarm_id -> data
let source = null;
let refresher = null;
let shown = null; // the tab on screen
// The audit page: its entries (newest first), whose alarm it shows (null: all), and the
// number of the last stream event the fetched list already holds (no entry twice).
let audit = null;
let auditAlarm = null;
let auditUpTo = -1;
const AUDIT_ROWS = 200;
let outOfView = []; // what is out of service or suppressed now
let knownRules = [];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// A time of the gateway (ISO 8601 UTC) in the browser's own time zone and language; the
// exact value stays in the cell's title.
function timeCell(iso, cls, tag) {
  const cell = el(tag || "td", "", cls);
  if (!iso) return cell;
  cell.textContent = localTime(iso);
  cell.title = String(iso);
  return cell;
}

function localTime(iso) {
  const when = new Date(iso);
  return isNaN(when) ? String(iso) : when.toLocaleString(currentLang() === "zh" ? "zh-CN" : "en-GB");
}

function eventNumber(id) {
  const n = Number(String(id || "").split("-").pop());
  return Number.isFinite(n) ? n : -1;
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
    const state = el("td", t("state." + a.state), "state");
    if (a.state === "shelved" && a.shelved_until) {
      // when the shelve ends: the alarm comes back then if its condition still holds
      state.append(" ", el("small", t("shelved_until") + " "), timeCell(a.shelved_until, "until", "small"));
    }
    tr.append(el("td", t("severity." + a.severity)), state,
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
    const history = el("button", t("history"), "history");
    history.addEventListener("click", () => { auditAlarm = a.alarm_id; audit = null; show("audit"); });
    const oos = el("button", t("oos_short"), "oos");
    oos.addEventListener("click", () => {
      document.getElementById("oos-rule").value = a.rule;
      document.getElementById("oos-device").value = a.device;
      show("oos");
    });
    actions.append(history, oos);
    tr.append(actions);
    tbody.append(tr);
  }
  document.getElementById("no-alarms").hidden = list.length > 0;
}

async function act(id, what, body) {
  const error = document.getElementById("action-error");
  const note = document.getElementById("action-note");
  error.textContent = "";
  note.textContent = "";
  let result;
  try {
    result = await api("/alarms/" + encodeURIComponent(id) + "/" + what, { method: "POST", body: JSON.stringify(body) });
  } catch (err) {
    error.textContent = String(err.message);
    return;
  }
  if (result.changed !== false) return; // the transition comes over the stream
  // Someone was first (the platform's alarm_ack, another screen): the alarm book answers
  // the state it converged to, which is what this page shows now.
  const known = alarms.get(id);
  if (result.state === "cleared") alarms.delete(id);
  else if (known) alarms.set(id, Object.assign({}, known, { state: result.state, acked_by: result.acked_by }));
  renderAlarms();
  const who = result.acked_by || "—";
  // the note goes when its alarm leaves the page; one saying the alarm ended stays
  note.dataset.alarmId = result.state === "cleared" ? "" : id;
  note.textContent = result.state === "cleared" ? t("already_finished") + " " + who
    : result.state === "shelved" && result.until ? t("already_shelved") + " " + localTime(result.until)
    : what === "ack" ? t("already_acked") + " " + who
    : t("changed_nothing");
}

function onAlarm(a) {
  // out of view: cleared, or taken out of view unacknowledged (the lifecycle's
  // "suppressed": out of service, or the rule's schedule), as on ROOT/alarms
  if (a.state === "cleared" || a.suppressed) {
    alarms.delete(a.alarm_id);
    // a note about an alarm that is gone would only confuse
    const note = document.getElementById("action-note");
    if (note.dataset.alarmId === a.alarm_id) note.textContent = "";
  } else alarms.set(a.alarm_id, a);
}

// -- out of service / suppressed ----------------------------------------------------------
const OUT_OF_VIEW_ACTIONS = ["out_of_service", "in_service", "suppressed", "unsuppressed"];

async function loadOutOfView() {
  const body = await api("/out_of_view");
  outOfView = body.items;
  knownRules = body.rules;
  renderOutOfView();
}

function renderOutOfView() {
  const tbody = document.querySelector("#out-of-view tbody");
  tbody.replaceChildren();
  for (const o of outOfView) {
    const tr = document.createElement("tr");
    tr.dataset.target = o.rule + "@" + o.device;
    tr.dataset.reason = o.reason;
    const actions = el("td");
    if (o.reason === "out_of_service" && o.configured) actions.append(el("small", t("in_config")));
    else if (o.reason === "out_of_service") {
      const back = el("button", t("return_to_service"), "in-service");
      back.addEventListener("click", () => changeService("/in_service", o.rule, o.device));
      actions.append(back);
    }
    tr.append(el("td", o.rule), el("td", o.device), el("td", t("reason." + o.reason), "reason"),
      el("td", o.by || "", "by"), el("td", o.origin || ""), timeCell(o.since), actions);
    tbody.append(tr);
  }
  document.getElementById("all-in-service").hidden = outOfView.length > 0;
  const list = document.getElementById("oos-rules");
  list.replaceChildren(...knownRules.map((r) => { const o = el("option"); o.value = r; return o; }));
  // on the alarms page: what is not annunciated now, so nobody takes silence for calm
  const noteList = document.getElementById("out-of-view-list");
  noteList.textContent = outOfView.map((o) => o.rule + "@" + o.device + " (" + t("reason." + o.reason) + ")").join(", ");
  document.getElementById("out-of-view-note").hidden = outOfView.length === 0;
}

async function changeService(path, rule, device) {
  const error = document.getElementById("oos-error");
  error.textContent = "";
  try {
    await api(path, { method: "POST", body: JSON.stringify({ rule, device }) });
  } catch (err) {
    error.textContent = String(err.message);
  }
  await loadOutOfView();
}

// -- the audit log: newest first, live over the alarm stream ---------------------------------
async function loadAudit() {
  const q = "?limit=" + AUDIT_ROWS + (auditAlarm ? "&alarm_id=" + encodeURIComponent(auditAlarm) : "");
  const body = await api("/audit" + q);
  audit = body.entries;
  auditUpTo = eventNumber(body.last_event_id);
  renderAudit();
}

function onAudit(entry, id) {
  if (OUT_OF_VIEW_ACTIONS.includes(entry.action)) loadOutOfView().catch(() => {});
  if (audit === null || eventNumber(id) <= auditUpTo) return; // not loaded, or in it already
  if (auditAlarm && entry.alarm_id !== auditAlarm) return;
  audit.unshift(entry);
  audit.length = Math.min(audit.length, AUDIT_ROWS);
  if (shown === "audit") renderAudit();
}

function actionCell(action) {
  const cell = el("td", t("action." + action), "action");
  cell.title = String(action); // the name the log and `edge-agent alarms audit` use
  return cell;
}

function renderAudit() {
  const filter = document.getElementById("audit-filter");
  filter.textContent = auditAlarm ? t("audit_of") + " " + auditAlarm : t("audit_newest");
  document.getElementById("audit-all").hidden = !auditAlarm;
  const tbody = document.querySelector("#audit tbody");
  tbody.replaceChildren();
  for (const e of audit || []) {
    const tr = document.createElement("tr");
    if (e.changed === false) tr.className = "unchanged";
    const what = e.alarm_id || ((e.rule || "") + "@" + (e.device || ""));
    // "hidden" says why the alarm left view: the same words as the out-of-service list
    const why = e.action === "hidden" && e.note ? t("reason." + e.note) : e.note || "";
    const note = [e.changed === false ? t("no_change") : "", why].filter(Boolean).join("; ");
    tr.append(timeCell(e.ts, "when"), actionCell(e.action), el("td", what, "alarm"),
      el("td", e.state ? t("state." + e.state) : ""), el("td", e.by || "", "by"),
      el("td", e.origin || "", "origin"), el("td", note));
    tbody.append(tr);
  }
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
    // a new start of the agent or a long absence: what else was missed is fetched anew
    loadOutOfView().catch(() => {});
    audit = null;
    if (shown === "audit") loadAudit().catch(() => {});
  });
  source.addEventListener("alarm", (ev) => { onAlarm(JSON.parse(ev.data)); renderAlarms(); });
  source.addEventListener("audit", (ev) => onAudit(JSON.parse(ev.data), ev.lastEventId));
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
  shown = tab;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "tab-" + tab;
  if (refresher) clearInterval(refresher);
  refresher = null;
  const load = { devices: loadDevices, health: loadHealth }[tab];
  if (load) {
    load().catch(() => {});
    refresher = setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 5000);
  }
  if (tab === "audit") {
    if (audit === null) loadAudit().catch(() => {});
    else renderAudit();
  }
  if (tab === "oos") loadOutOfView().catch(() => {});
  if (tab === "check") runCheck().catch((e) => { document.getElementById("check-result").textContent = String(e.message); });
  window.location.hash = tab;
}

document.addEventListener("DOMContentLoaded", async () => {
  session = await api("/session");
  setupLanguage(session.language, () => {
    renderAlarms(); renderStreamState(); renderOutOfView(); show(location.hash.slice(1) || "alarms");
  });
  document.getElementById("user").textContent = session.user;
  const site = session.site || {};
  document.getElementById("site").textContent = [site.name, site.id, site.gateway_id].filter(Boolean).join(" · ");
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.tab));
  document.getElementById("run-check").addEventListener("click", () => runCheck());
  document.getElementById("audit-all").addEventListener("click", () => { auditAlarm = null; audit = null; show("audit"); });
  document.getElementById("oos-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    changeService("/out_of_service", document.getElementById("oos-rule").value,
      document.getElementById("oos-device").value || "*");
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/logout", { method: "POST", body: "{}" });
    window.location.assign("/console/login");
  });
  renderAlarms();
  connectStream();
  show(["alarms", "oos", "audit", "devices", "health", "check"].includes(location.hash.slice(1)) ? location.hash.slice(1) : "alarms");
});
