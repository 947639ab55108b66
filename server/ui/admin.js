// The WormFS admin page: plain JavaScript over the node's JSON API (/api/v1), with the
// session cookie the login sets; every change carries the session's CSRF token. Everything
// shown is built with DOM calls and textContent, never HTML strings from the API.
"use strict";

const POLL_MS = 3000;
const state = {
  session: null,      // SessionInfo
  panel: "overview",
  dir: "/",           // the Files panel's directory
  file: null,         // the Files panel's selected file path
  last: {},           // panel -> JSON text last rendered (to skip identical redraws)
  timer: null,
  busy: false,
  pending: false,     // a forced refresh asked for while one ran
};

// ---------------------------------------------------------------------------------------
// Small helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style") {
      // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
      for (const decl of String(v).split(";")) {
        const i = decl.indexOf(":");
        if (i > 0) el.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
      }
    }
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
}

function num(n) { return Number(n || 0).toLocaleString("en"); }

function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " days ago";
}

function when(ms) {
  if (!ms) return "-";
  return new Date(ms).toLocaleString();
}

function secs(s) {
  if (s === null || s === undefined) return "-";
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function bar(done, total, label) {
  const pct = total > 0 ? Math.min(100, Math.round((done / total) * 100)) : 0;
  const cls = pct >= 95 ? "bar bad" : pct >= 85 ? "bar warn" : "bar";
  return h("div", { class: cls, role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": pct, "aria-label": label || (pct + "%"), title: pct + "%" },
  h("span", { style: "width:" + pct + "%" }));
}

function progress(done, total, label) {
  // A progress bar whose colour does not mean "full".
  const pct = total > 0 ? Math.min(100, Math.round((done / total) * 100)) : 0;
  return h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": pct, "aria-label": label || (pct + "%"), title: pct + "%" },
  h("span", { style: "width:" + pct + "%" }));
}

function table(headers, rows, opts) {
  const head = h("tr", {}, headers.map((x) => {
    const [text, cls] = Array.isArray(x) ? x : [x, null];
    return h("th", { scope: "col", class: cls }, text);
  }));
  // Each cell names its column, for a phone's width where rows are shown as stacked cards.
  for (const r of rows) {
    [...r.children].forEach((td, i) => {
      const x = headers[i];
      const label = Array.isArray(x) ? x[0] : x;
      if (label && !td.hasAttribute("data-label")) td.setAttribute("data-label", label);
      // One box for the cell's content, beside its label.
      const cell = h("div", { class: "cell" });
      cell.append(...td.childNodes);
      td.append(cell);
    });
  }
  const body = rows.length
    ? rows
    : [h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, (opts && opts.empty) || "nothing"))];
  return h("div", { class: "scroll" }, h("table", { class: "stack" }, h("thead", {}, head), h("tbody", {}, body)));
}

function figure(k, v, key) {
  return h("div", { class: "figure", "data-count": key }, h("span", { class: "v" }, v), h("span", { class: "k" }, k));
}

function say(text, bad) {
  const m = $("message");
  m.textContent = text || "";
  m.className = bad ? "message bad" : "message";
}

/// A WormFS path in an API URL: each segment percent-encoded, `.` too (docs/api.md).
function apiPath(route, path) {
  const segs = path.split("/").filter((s) => s.length > 0)
    .map((s) => encodeURIComponent(s).replace(/\./g, "%2E"));
  return segs.length ? route + "/" + segs.join("/") : route;
}

/// JSON with integers past 2^53 (node ids are 64-bit) kept as their exact text.
function parseJson(text) {
  return JSON.parse(text, (_k, v, ctx) =>
    typeof v === "number" && !Number.isSafeInteger(v) && Number.isInteger(v) && ctx && ctx.source ? ctx.source : v);
}

/// Node ids compared as numbers whatever their form (number or exact text).
function byId(a, b) {
  const x = String(a);
  const y = String(b);
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
}

class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    if (state.session && state.session.csrf_token) headers["X-CSRF-Token"] = state.session.csrf_token;
  }
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401 && path !== "/api/v1/session") {
    showLogin("Your session ended: log in again.");
    throw new ApiFailure(401, "not logged in");
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = parseJson(text); } catch (_) { data = { error: text }; }
  }
  if (!r.ok) throw new ApiFailure(r.status, (data && data.error) || ("HTTP " + r.status));
  return data;
}

/// GETs several routes at once; a route that fails gives `null` (and its error in `errors`).
async function getAll(paths) {
  const out = {};
  const errors = {};
  await Promise.all(Object.entries(paths).map(async ([k, p]) => {
    try { out[k] = await api("GET", p); } catch (e) {
      if (e.status === 401) throw e;
      out[k] = null;
      errors[k] = e;
    }
  }));
  out.errors = errors;
  return out;
}

function canAct() { return state.session && !state.session.read_only; }

// ---------------------------------------------------------------------------------------
// Login

function showLogin(why) {
  state.session = null;
  state.panel = "overview";
  state.dir = "/";
  state.file = null;
  stopPolling();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("who").hidden = true;
  $("health-badge").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why || "";
  for (const p of document.querySelectorAll(".panel")) p.replaceChildren();
  state.last = {};
  $("login-user").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  const who = $("who");
  who.hidden = false;
  who.textContent = state.session.name + " on node " + state.session.node_id +
    (state.session.read_only ? " (read-only)" : "");
  $("readonly-note").hidden = !state.session.read_only;
  selectPanel(state.panel);
}

async function login(ev) {
  ev.preventDefault();
  const user = $("login-user").value.trim();
  const password = $("login-password").value;
  const token = $("login-token").value.trim();
  const body = token && !user ? { token } : { user, password };
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    state.session = await api("POST", "/api/v1/session", body);
    $("login-password").value = "";
    $("login-token").value = "";
    showApp();
  } catch (e) {
    $("login-error").textContent = e.message;
  } finally {
    $("login-submit").disabled = false;
  }
}

async function logout() {
  try { await api("DELETE", "/api/v1/session"); } catch (_) { /* the cookie is gone anyway */ }
  showLogin("Logged out.");
}

// ---------------------------------------------------------------------------------------
// Panels

function selectPanel(name) {
  state.panel = name;
  for (const t of document.querySelectorAll(".tab")) {
    if (t.dataset.panel === name) t.setAttribute("aria-current", "page");
    else t.removeAttribute("aria-current");
  }
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "panel-" + name;
  say("");
  refresh(true);
  startPolling();
}

function startPolling() {
  stopPolling();
  state.timer = setInterval(() => refresh(false), POLL_MS);
}

function stopPolling() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

/// Redraws a panel from `data` unless it is what was drawn last; keeps the keyboard focus on
/// the element with the same `data-key`.
function draw(panel, data, build) {
  const text = JSON.stringify(data);
  if (state.last[panel] === text) return;
  state.last[panel] = text;
  const el = $("panel-" + panel);
  const focused = document.activeElement && el.contains(document.activeElement)
    ? document.activeElement.getAttribute("data-key") : null;
  el.replaceChildren(...build(data));
  if (focused) {
    const again = el.querySelector('[data-key="' + CSS.escape(focused) + '"]');
    if (again) again.focus();
  }
}

async function refresh(force) {
  if (!state.session) return;
  if (state.busy) {
    // One more run once this one ends (a panel chosen meanwhile is drawn at once).
    if (force) state.pending = true;
    return;
  }
  if ($("confirm").open && !force) return;
  if (force) state.last[state.panel] = null;
  state.busy = true;
  try {
    await PANELS[state.panel]();
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + "; refreshed every " + (POLL_MS / 1000) + " s.";
  } catch (e) {
    if (e.status !== 401) say(e.message, true);
  } finally {
    state.busy = false;
  }
  if (state.pending) {
    state.pending = false;
    refresh(true);
  }
}

function verdictClass(v) {
  return v === "full" ? "ok" : v === "degraded" ? "warn" : "bad";
}

function healthBadge(report, status) {
  const b = $("health-badge");
  b.hidden = false;
  let cls = verdictClass(report.verdict);
  let text = report.verdict === "full" ? "healthy" : report.verdict;
  if (status && status.health !== "healthy" && cls === "ok") { cls = "warn"; text = status.health; }
  b.className = "badge " + cls;
  b.textContent = text;
  b.setAttribute("data-verdict", report.verdict);
}

// Overview -----------------------------------------------------------------------------

async function overview() {
  const d = await getAll({
    report: "/api/v1/health/report",
    status: "/api/v1/status",
    cluster: "/api/v1/cluster",
    disks: "/api/v1/disks",
    policy: "/api/v1/policy",
    events: "/api/v1/events?limit=100",
    alerts: "/api/v1/alerts",
  });
  if (d.report) healthBadge(d.report, d.status);
  draw("overview", d, buildOverview);
}

function capacity(disks) {
  // Each filesystem counted once per machine: folders on one disk share its space.
  // A missing disk or a silent machine's reports no space: the largest report counts.
  const seen = new Map();
  for (const x of disks) {
    if (x.status === "removed" || x.status === "drained") continue;
    const key = x.node_id + ":" + x.filesystem;
    const had = seen.get(key);
    if (!had || x.space.total_bytes > had.total_bytes) seen.set(key, x.space);
  }
  let total = 0;
  let free = 0;
  for (const s of seen.values()) { total += s.total_bytes; free += s.free_bytes; }
  return { total, free };
}

function policyShare(p) {
  // ec:K+M keeps K/(K+M) of the raw space for data; copies:N keeps 1/N.
  let m = /^ec:(\d+)\+(\d+)$/.exec(p || "");
  if (m) return Number(m[1]) / (Number(m[1]) + Number(m[2]));
  m = /^copies:(\d+)$/.exec(p || "");
  if (m) return 1 / Number(m[1]);
  return 1;
}

function buildOverview(d) {
  const out = [];
  const r = d.report;
  const st = d.status;
  const card = h("div", { class: "card" }, h("h2", {}, "Health"));
  if (r) {
    card.append(h("p", { id: "health-sentence", class: "sentence " + verdictClass(r.verdict), "data-verdict": r.verdict }, r.summary));
  } else {
    card.append(h("p", { class: "error" }, "The health report cannot be read: " + (d.errors.report || {}).message));
  }
  if (st && st.health !== "healthy") {
    card.append(h("p", { id: "status-health", class: "note" }, "Status: " + st.health + (st.health_reason ? ": " + st.health_reason : "")));
  }
  if (st && st.read_only) card.append(h("p", { class: "error" }, "This node serves reads only: " + st.read_only));
  out.push(card);

  if (st && d.disks) {
    const cap = capacity(d.disks.disks);
    const share = policyShare(d.policy && d.policy.default);
    const used = st.disk_bytes_used;
    out.push(h("div", { class: "card" }, h("h2", {}, "Capacity and contents"),
      h("div", { class: "grid" },
        figure("raw (all disks)", bytes(cap.total)),
        figure("usable with " + ((d.policy && d.policy.default) || "the default policy"), bytes(cap.total * share)),
        figure("used on the disks", bytes(used)),
        figure("free", bytes(cap.free)),
        figure("in the trash", bytes(st.trash.stored_bytes)),
        figure("files", num(st.files)),
        figure("bytes stored", bytes(st.logical_bytes)),
        figure("parts on disks", bytes(st.part_bytes))),
      h("div", { style: "margin-top:.6rem" }, bar(used, cap.total, "disks used " + bytes(used) + " of " + bytes(cap.total)))));
  }

  if (d.cluster) {
    const rows = d.cluster.members.map((m) => h("tr", {},
      h("td", {}, String(m.node_id)),
      h("td", {}, m.name || "-"),
      h("td", {}, m.role + (m.leader ? ", leader" : "")),
      h("td", {}, m.node_id === d.cluster.node_id ? "this node" : (m.connected ? "connected, " : "not connected, ") + (m.last_contact_ms === null ? "not heard from" : "heard " + ago(m.last_contact_ms))),
      h("td", { class: "hide-narrow" }, m.api_addr || "-")));
    out.push(h("div", { class: "card" }, h("h2", {}, "Machines"),
      h("p", { class: "muted" }, "Cluster " + d.cluster.cluster_name + ", term " + d.cluster.term + ", leader " + (d.cluster.leader === null ? "none" : d.cluster.leader) + "."),
      table(["node", "name", "role", "last contact", ["API", "hide-narrow"]], rows)));
  }

  const alerts = [];
  if (d.alerts) {
    for (const a of d.alerts.alerts) {
      alerts.push(h("li", { "data-alert": a.kind }, h("span", { class: "badge " + (a.severity === "critical" ? "bad" : "warn") }, a.severity),
        " ", h("strong", {}, a.title), " " + a.message + " (since " + when(a.since_ms) + ")"));
    }
  }
  if (r) {
    for (const x of r.disks_not_up) alerts.push(h("li", {}, h("span", { class: "badge warn" }, "disk " + x.state), " ", x.path + " (node " + x.node_id + "): " + x.reason));
    for (const b of r.brakes) alerts.push(h("li", {}, h("span", { class: "badge warn" }, "brake"), " ", b));
    if (r.at_risk_count > 0) alerts.push(h("li", {}, h("span", { class: "badge bad" }, "at risk"), " " + num(r.at_risk_count) + " file(s) can survive no more failures (see Files)."));
  }
  if (d.events) {
    const dayAgo = Date.now() - 24 * 3600 * 1000;
    for (const e of d.events.events) {
      if (e.severity !== "warning" && e.severity !== "critical") continue;
      if (e.at_ms < dayAgo) continue;
      alerts.push(h("li", {}, h("span", { class: "badge " + (e.severity === "critical" ? "bad" : "warn") }, e.severity), " " + when(e.at_ms) + ": " + e.message));
      if (alerts.length > 30) break;
    }
  }
  if (st && st.media_servers && st.media_servers.length) {
    const rows = st.media_servers.map((m) => {
      const last = m.last;
      const cls = !last ? "" : last.outcome === "sent" ? "ok" : "bad";
      return h("tr", { "data-media-server": m.kind },
        h("td", {}, m.kind),
        h("td", { class: "hide-narrow" }, m.url),
        h("td", {}, last ? h("span", { class: "badge " + cls }, last.outcome) : "nothing sent yet",
          last ? " " + when(last.at_ms) + ": " + last.message : ""),
        h("td", {}, num(m.pending_folders)));
    });
    out.push(h("div", { class: "card", id: "media-servers" }, h("h2", {}, "Media servers"),
      table(["server", ["URL", "hide-narrow"], "last notification", "folders waiting"], rows)));
  }

  out.push(h("div", { class: "card", id: "alerts" }, h("h2", {}, "Alerts"),
    alerts.length ? h("ul", { class: "plain" }, alerts) : h("p", { class: "muted" }, "No warnings."),
    d.events ? null : h("p", { class: "muted" }, "This node does not report events.")));
  return out;
}

// Disks --------------------------------------------------------------------------------

async function disks() {
  const d = await getAll({ disks: "/api/v1/disks", cluster: "/api/v1/cluster" });
  if (!d.disks) throw d.errors.disks;
  draw("disks", d, buildDisks);
}

function statusClass(status) {
  return status === "up" ? "ok" : status === "draining" || status === "drained" ? "warn" : "bad";
}

function diskState(x) {
  let cls = statusClass(x.status);
  if (x.state === "missing") cls = "bad";
  else if (x.state !== "active" && cls === "ok") cls = "warn";
  const text = x.status === "up" ? x.state : x.state + ", " + x.status;
  return h("span", { class: "badge " + cls, "data-disk-state": x.status }, text);
}

function buildDisks(d) {
  const byNode = new Map();
  for (const x of d.disks.disks) {
    if (!byNode.has(x.node_id)) byNode.set(x.node_id, []);
    byNode.get(x.node_id).push(x);
  }
  const out = [];
  for (const [node, list] of [...byNode.entries()].sort((a, b) => byId(a[0], b[0]))) {
    const rows = list.map((x) => {
      const used = Math.max(0, x.space.total_bytes - x.space.free_bytes);
      const actions = [];
      if (canAct() && x.status !== "removed") {
        if (x.status === "up" || x.status === "down" || x.status === "out") {
          actions.push(h("button", { type: "button", "data-key": "drain-" + x.disk_id, "data-action": "drain", onclick: () => confirmDisk("drain", x) }, "Drain"));
        }
        actions.push(h("button", { type: "button", "data-key": "replace-" + x.disk_id, "data-action": "replace", onclick: () => confirmDisk("replace", x) }, "Replace"));
        actions.push(h("button", { type: "button", "data-key": "remove-" + x.disk_id, "data-action": "remove", onclick: () => confirmDisk("remove", x) }, "Remove"));
      }
      const why = [x.reason, x.status_reason].filter((s) => s).join("; ");
      return h("tr", { "data-disk": x.disk_id },
        h("td", {}, h("div", {}, x.path), h("div", { class: "muted" }, x.disk_id.slice(0, 8))),
        h("td", {}, diskState(x), why ? h("div", { class: "muted" }, why) : null),
        h("td", { class: "num" }, bytes(x.space.total_bytes)),
        h("td", {}, h("div", {}, bytes(used)), bar(used, x.space.total_bytes, "disk " + x.path + " used " + bytes(used))),
        h("td", { class: "num" }, num(x.parts), h("div", { class: "muted" }, bytes(x.part_bytes))),
        h("td", { class: "num hide-narrow", title: num(x.checksum_failures) + " checksum failure(s) among the read errors" }, num(x.read_errors) + " / " + num(x.write_errors)),
        h("td", { class: "hide-narrow", title: "every part on it was checked since then" }, x.oldest_verified_ms ? ago(Date.now() - x.oldest_verified_ms) : "-"),
        h("td", { class: "hide-narrow" }, "read " + bytes(x.bytes_read) + ", written " + bytes(x.bytes_written)),
        h("td", {}, h("div", { class: "actions" }, actions)));
    });
    const name = list[0].machine || ("node " + node);
    out.push(h("div", { class: "card" },
      h("h2", {}, name + " (node " + node + ")"),
      table(["disk", "state", ["size", "num"], "used", ["parts", "num"], ["errors read / write", "num hide-narrow"], ["checked", "hide-narrow"], ["I/O since start", "hide-narrow"], ""], rows),
      canAct() ? h("div", { class: "actions", style: "margin-top:.5rem" },
        h("button", { type: "button", "data-key": "add-" + node, onclick: () => confirmAdd(node, name) }, "Add a disk")) : null));
  }
  out.push(h("p", { class: "muted" }, "Read and write errors and I/O are this node's counters since it started; the trash holds " + bytes(d.disks.trash.stored_bytes) + " of parts."));
  return out;
}

function impactText(i) {
  const parts = [h("p", {}, "If this disk failed now: " + num(i.segments) + " segment(s) have a part on it; " +
    num(i.unreadable_segments) + " would become unreadable and " + num(i.zero_tolerance_segments) + " would be left at tolerance 0.")];
  const files = i.unreadable_files.map((f) => h("li", {}, "unreadable: " + f.path))
    .concat(i.zero_tolerance_files.map((f) => h("li", {}, "tolerance 0: " + f.path)));
  if (files.length) parts.push(h("ul", {}, files));
  return parts;
}

async function confirmDisk(action, x) {
  let impact = null;
  try { impact = await api("GET", "/api/v1/impact?disk=" + encodeURIComponent(x.disk_id)); } catch (e) { if (e.status === 401) return; }
  const body = [];
  const what = {
    drain: "Drain " + x.path + " on " + x.machine + ": its " + num(x.parts) + " part(s) are copied to the other disks while it is still read; it shows \"drained\" when it is empty, and can then be removed.",
    remove: "Remove " + x.path + " on " + x.machine + " from the cluster for good." + (x.parts > 0
      ? " It still holds " + num(x.parts) + " part(s): the node refuses unless you force it, and then those parts count as lost and are rebuilt from the others."
      : " It holds no parts."),
    replace: "Replace " + x.path + " on " + x.machine + " with a new empty folder or disk of the same machine: the old disk is drained if it still reads, else removed; repair fills the new one.",
  }[action];
  body.push(h("p", {}, what));
  if (impact) body.push(...impactText(impact.impact));
  let force = null;
  let path = null;
  if (action === "remove" && x.parts > 0) {
    force = h("input", { type: "checkbox", id: "confirm-force", style: "width:auto" });
    body.push(h("label", { for: "confirm-force" }, force, " Force: count its parts as lost and rebuild them"));
  }
  if (action === "replace") {
    path = h("input", { id: "confirm-path", placeholder: "/mnt/new-disk", autocomplete: "off" });
    body.push(h("label", { for: "confirm-path" }, "The new disk's folder (absolute, on " + x.machine + ")"), path);
  }
  const title = { drain: "Drain this disk?", remove: "Remove this disk?", replace: "Replace this disk?" }[action];
  const label = { drain: "Drain", remove: "Remove", replace: "Replace" }[action];
  openConfirm(title, body, label, async () => {
    const id = encodeURIComponent(x.disk_id);
    if (action === "drain") return api("POST", "/api/v1/disks/" + id + "/drain");
    if (action === "remove") return api("POST", "/api/v1/disks/" + id + "/remove?force=" + (force && force.checked ? "true" : "false"));
    const p = path.value.trim();
    if (!p.startsWith("/")) throw new ApiFailure(400, "give the new disk's absolute path");
    return api("POST", "/api/v1/disks/" + id + "/replace", { path: p });
  });
}

function confirmAdd(node, name) {
  const path = h("input", { id: "confirm-path", placeholder: "/mnt/disk7", autocomplete: "off" });
  const body = [
    h("p", {}, "Add a disk to " + name + " (node " + node + "): a folder of that machine, absolute, empty or missing. New parts go to it at once; a rebalance can move existing ones."),
    h("label", { for: "confirm-path" }, "Folder"), path,
  ];
  if (node !== state.session.node_id) {
    body.push(h("p", { class: "note" }, "This page is served by node " + state.session.node_id + ": a disk is added to the machine that serves the page. Open node " + node + "'s page to add one there."));
  }
  openConfirm("Add a disk?", body, "Add", async () => {
    const p = path.value.trim();
    if (!p.startsWith("/")) throw new ApiFailure(400, "give the folder's absolute path");
    return api("POST", "/api/v1/disks", { path: p });
  });
}

// The confirmation dialog: says what will happen; the action runs only on "Confirm".
function openConfirm(title, body, okLabel, run) {
  const dlg = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-body").replaceChildren(...body);
  $("confirm-error").textContent = "";
  $("confirm-ok").textContent = okLabel;
  $("confirm-ok").disabled = false;
  dlg.onsubmit = async (ev) => {
    ev.preventDefault();
    $("confirm-ok").disabled = true;
    try {
      const r = await run();
      dlg.close();
      say((r && r.message) || (title.replace("?", "") + ": done."));
      refresh(true);
    } catch (e) {
      $("confirm-error").textContent = e.message;
      $("confirm-ok").disabled = false;
    }
  };
  dlg.showModal();
  const first = dlg.querySelector("input") || $("confirm-cancel");
  first.focus();
}

// Files --------------------------------------------------------------------------------

async function files() {
  const paths = { list: apiPath("/api/v1/list", state.dir), report: "/api/v1/health/report", disks: "/api/v1/disks" };
  if (state.file) paths.stat = apiPath("/api/v1/stat", state.file);
  const d = await getAll(paths);
  d.dir = state.dir;
  d.file = state.file;
  draw("files", d, buildFiles);
}

function openDir(p) { state.dir = p; state.file = null; refresh(true); }
function openFile(p) { state.file = p; refresh(true); }

function join(dir, name) { return (dir === "/" ? "" : dir) + "/" + name; }

function buildFiles(d) {
  const out = [];
  const r = d.report;
  if (r) {
    const risky = r.at_risk.map((f) => h("li", {},
      h("span", { class: "badge " + (f.tolerance < 0 ? "bad" : "warn") }, f.tolerance < 0 ? "unreadable" : "tolerance 0"), " ",
      h("button", { type: "button", class: "link", "data-key": "risk-" + f.path, onclick: () => openFile(f.path) }, f.path)));
    out.push(h("div", { class: "card", id: "at-risk" }, h("h2", {}, "Files at risk"),
      risky.length ? h("ul", { class: "plain" }, risky) : h("p", { class: "muted" }, "No file is at risk: every file survives at least one more failure."),
      r.at_risk_count > r.at_risk.length ? h("p", { class: "muted" }, num(r.at_risk_count) + " in all; the first " + r.at_risk.length + " are shown.") : null));
  }
  if (d.file) out.push(buildStat(d));
  const crumbs = h("div", { class: "crumbs" }, h("button", { type: "button", class: "link", "data-key": "crumb-/", onclick: () => openDir("/") }, "/"));
  let acc = "";
  for (const seg of d.dir.split("/").filter((s) => s)) {
    acc += "/" + seg;
    const p = acc;
    crumbs.append(h("button", { type: "button", class: "link", "data-key": "crumb-" + p, onclick: () => openDir(p) }, seg), "/");
  }
  const rows = d.list ? d.list.entries.map((e) => {
    const p = join(d.dir, e.name);
    const name = e.kind === "dir"
      ? h("button", { type: "button", class: "link", "data-key": "dir-" + p, onclick: () => openDir(p) }, e.name + "/")
      : h("button", { type: "button", class: "link", "data-key": "file-" + p, onclick: () => openFile(p) }, e.name);
    return h("tr", {}, h("td", {}, name), h("td", { class: "num" }, e.kind === "dir" ? "" : bytes(e.size)),
      h("td", { class: "hide-narrow" }, when(e.mtime_ms)), h("td", { class: "hide-narrow" }, e.policy || ""));
  }) : [];
  out.push(h("div", { class: "card", id: "listing" }, h("h2", {}, "Browse"), crumbs,
    d.list ? table(["name", ["size", "num"], ["changed", "hide-narrow"], ["policy", "hide-narrow"]], rows, { empty: "empty directory" })
      : h("p", { class: "error" }, "Cannot list " + d.dir + ": " + ((d.errors.list || {}).message || ""))));
  return out;
}

function buildStat(d) {
  const card = h("div", { class: "card", id: "file-detail" });
  card.append(h("h2", {}, d.file));
  const s = d.stat;
  if (!s) {
    card.append(h("p", { class: "error" }, "Cannot read it: " + ((d.errors.stat || {}).message || "")));
    return card;
  }
  if (s.kind === "dir") {
    card.append(h("p", {}, "A directory; files written in it get " + (s.effective_policy || "the default policy") + "."));
    return card;
  }
  const t = s.tolerance;
  const low = t.parts < t.policy_parts;
  card.append(h("dl", { class: "kv" },
    h("dt", {}, "size"), h("dd", {}, bytes(s.size) + " (" + num(s.size) + " bytes)"),
    h("dt", {}, "policy"), h("dd", {}, s.policy),
    h("dt", {}, "tolerance"), h("dd", { id: "file-tolerance", "data-parts": t.parts, "data-policy-parts": t.policy_parts, class: low ? "note" : "" }, t.summary),
    h("dt", {}, "segments"), h("dd", {}, String(s.segments.length)),
    h("dt", {}, "changed"), h("dd", {}, when(s.mtime_ms)),
    h("dt", {}, "file id"), h("dd", {}, s.file_id)));
  // Where the parts are: machines, their disks, and which parts each holds.
  const machines = new Map();
  const diskName = new Map();
  if (d.disks) for (const x of d.disks.disks) diskName.set(x.disk_id, x);
  const missing = [];
  for (const seg of s.segments) {
    for (const p of seg.parts) {
      if (!p.disk_id) { missing.push("segment " + seg.index + " part " + p.index + ": never written"); continue; }
      const node = p.node_id === null ? "?" : p.node_id;
      if (!machines.has(node)) machines.set(node, { name: p.node_name || ("node " + node), disks: new Map() });
      const m = machines.get(node);
      if (!m.disks.has(p.disk_id)) m.disks.set(p.disk_id, { path: p.disk_path || p.disk_id, parts: [] });
      m.disks.get(p.disk_id).parts.push({ seg: seg.index, idx: p.index, bad: p.missing || !p.state.startsWith("ok"), state: p.state });
    }
  }
  const map = h("div", { class: "map", id: "part-map" });
  for (const [node, m] of [...machines.entries()].sort((a, b) => byId(a[0], b[0]))) {
    const box = h("div", { class: "machine" }, h("h4", {}, m.name + " (node " + node + ")"));
    for (const [id, dk] of [...m.disks.entries()].sort((a, b) => (a[1].path < b[1].path ? -1 : 1))) {
      const info = diskName.get(id);
      box.append(h("div", { class: "diskbox" },
        h("div", {}, dk.path, " ", info && info.status !== "up" ? h("span", { class: "badge " + statusClass(info.status) }, info.status) : null),
        dk.parts.map((p) => h("span", { class: "chip" + (p.bad ? " bad" : ""), title: p.state }, "s" + p.seg + "·p" + p.idx + (p.bad ? " " + p.state : "")))));
    }
    map.append(box);
  }
  card.append(h("h3", {}, "Where its parts are"), machines.size ? map : h("p", { class: "muted" }, "An empty file has no parts."));
  if (missing.length) card.append(h("ul", {}, missing.map((x) => h("li", {}, x))));
  card.append(h("button", { type: "button", "data-key": "close-file", onclick: () => { state.file = null; refresh(true); } }, "Close"));
  return card;
}

// Ingest -------------------------------------------------------------------------------

async function ingest() {
  const d = await api("GET", "/api/v1/ingest");
  draw("ingest", d, buildIngest);
}

function buildIngest(d) {
  const out = [];
  out.push(h("div", { class: "card" }, h("h2", {}, "Drop folders"),
    d.folders.length ? h("ul", { class: "plain" }, d.folders.map((f) => h("li", {},
      h("strong", {}, f.path), " → " + f.tree + " (then " + f.after + (f.done_dir ? " to " + f.done_dir : "") + "; " + f.watch + ", settles " + secs(Math.round(f.settle_ms / 1000)) + ")")))
      : h("p", { class: "muted" }, "No drop folder on this node (drop_folders in its config)."),
    h("div", { class: "grid", style: "margin-top:.6rem" },
      figure("settling", num(d.settling), "settling"), figure("queued", num(d.queued), "queued"),
      figure("in progress", num(d.in_progress), "in_progress"),
      figure("done", num(d.done), "done"), figure("failed", num(d.failed), "failed"))));
  const order = { in_progress: 0, failed: 1, queued: 2, done: 3 };
  const items = [...d.items].sort((a, b) => (order[a.state] - order[b.state]) || (b.updated_ms - a.updated_ms));
  const rows = items.map((it) => {
    const badge = { done: "ok", failed: "bad", in_progress: "warn", queued: "" }[it.state];
    let note = it.note || "";
    if (it.state === "failed" && it.next_try_ms) note += (note ? "; " : "") + "next try " + when(it.next_try_ms);
    return h("tr", { "data-source": it.source, "data-state": it.state },
      h("td", {}, h("div", {}, it.source), it.dest ? h("div", { class: "muted" }, "→ " + it.dest) : null),
      h("td", {}, h("span", { class: "badge " + badge }, it.state.replace("_", " "))),
      h("td", {}, progress(it.state === "done" ? it.size : it.bytes_done, it.size, it.source + " " + it.state), h("div", { class: "muted" }, bytes(it.bytes_done) + " of " + bytes(it.size))),
      h("td", { class: "num hide-narrow" }, it.rate ? bytes(it.rate) + "/s" : "-"),
      h("td", {}, note, it.attempts > 1 ? h("div", { class: "muted" }, it.attempts + " attempts") : null));
  });
  out.push(h("div", { class: "card" }, h("h2", {}, "Files"),
    table(["file", "state", "progress", ["rate", "num hide-narrow"], "note"], rows, { empty: "No file seen yet." })));
  return out;
}

// Repair and scrub -----------------------------------------------------------------------

async function repair() {
  const d = await getAll({ repair: "/api/v1/repair", scrub: "/api/v1/scrub" });
  if (!d.repair) throw d.errors.repair;
  draw("repair", d, buildRepair);
}

function buildRepair(d) {
  const r = d.repair;
  const out = [];
  const acts = [];
  if (canAct()) {
    acts.push(r.paused
      ? h("button", { type: "button", class: "primary", id: "repair-resume", "data-key": "repair-resume", onclick: () => act("POST", "/api/v1/repair/resume", "Repair resumed.") }, "Resume repair")
      : h("button", { type: "button", id: "repair-pause", "data-key": "repair-pause", onclick: () => act("POST", "/api/v1/repair/pause", "Repair paused.") }, "Pause repair"));
  }
  out.push(h("div", { class: "card" }, h("h2", {}, "Repair"),
    h("p", { id: "repair-state" }, r.paused ? h("span", { class: "badge warn" }, "paused") : h("span", { class: "badge ok" }, "running"),
      " " + num(r.queued) + " segment(s) queued (" + bytes(r.queued_bytes) + "), " + r.in_progress.length + " in progress here, " +
      bytes(r.counters.rate_bytes_per_sec) + "/s, time left " + secs(r.eta_secs) + "."),
    h("div", { class: "actions" }, acts),
    r.brakes.length ? h("ul", {}, r.brakes.map((b) => h("li", { class: "note" }, b))) : null,
    h("h3", {}, "Queued by tolerance"),
    table(["tolerance", ["segments", "num"]], r.queued_by_tolerance.map((t) => h("tr", {}, h("td", {}, String(t.tolerance)), h("td", { class: "num" }, num(t.segments)))), { empty: "The queue is empty." }),
    h("h3", {}, "In progress on this node"),
    table(["segment", "progress", "rate, time left", "parts"], r.in_progress.map((j) => {
      const secsRun = Math.max(1, (Date.now() - j.started_ms) / 1000);
      const rate = j.bytes_done / secsRun;
      const left = rate > 0 ? Math.round((j.bytes_total - j.bytes_done) / rate) : null;
      return h("tr", {},
        h("td", {}, h("div", {}, j.path), h("div", { class: "muted" }, j.segment.file_id.slice(0, 12) + ":" + j.segment.seg)),
        h("td", {}, progress(j.bytes_done, j.bytes_total, "repair of " + j.path), h("div", { class: "muted" }, bytes(j.bytes_done) + " of " + bytes(j.bytes_total))),
        h("td", {}, bytes(rate) + "/s, " + secs(left)),
        h("td", {}, j.parts.join(", ")));
    }), { empty: "Nothing is being repaired here." }),
    h("h3", {}, "Queue (most endangered first)"),
    table(["segment", ["tolerance", "num"], "why", ["attempts", "num hide-narrow"], "next try"], r.queue.map((q) => h("tr", {},
      h("td", {}, q.segment.file_id.slice(0, 12) + ":" + q.segment.seg),
      h("td", { class: "num" }, String(q.tolerance)),
      h("td", {}, q.reason, q.last_error ? h("div", { class: "error" }, q.last_error) : null),
      h("td", { class: "num hide-narrow" }, String(q.attempts)),
      h("td", {}, q.claimed_by !== null ? "claimed by node " + q.claimed_by : when(q.due_ms)))), { empty: "The queue is empty." }),
    h("p", { class: "muted" }, "Since this node started: " + num(r.counters.segments_repaired) + " segment(s) repaired, " + num(r.counters.parts_written) + " part(s) written, " + num(r.counters.failures) + " failure(s); " + num(r.moves_left) + " rebalancing move(s) left.")));
  const s = d.scrub;
  if (s) {
    const c = s.counters;
    out.push(h("div", { class: "card" }, h("h2", {}, "Scrub (this node)"),
      h("p", { id: "scrub-state" }, h("span", { class: "badge" }, s.enabled ? c.state : "disabled"), c.deep ? " deep" : "",
        " every " + s.interval_days + " days; " + num(s.parts_verified) + " of " + num(s.parts) + " parts verified this pass, " + bytes(s.bytes_left) + " left, " + bytes(c.rate_bytes_per_sec) + "/s, time left " + secs(s.eta_secs) + "."),
      progress(s.parts_verified, s.parts, "scrub progress"),
      h("p", {}, "Oldest verification: " + (s.oldest_verified_age_secs === null ? "-" : secs(s.oldest_verified_age_secs) + " ago") +
        ". Since start: " + num(c.parts_verified) + " parts (" + bytes(c.bytes_verified) + ") verified, " + num(c.damaged_found) + " damaged part(s) found, " + num(c.deep_mismatches) + " deep mismatch(es)."),
      canAct() ? h("div", { class: "actions" },
        h("button", { type: "button", "data-key": "scrub-now", onclick: () => act("POST", "/api/v1/scrub", "Scrub asked for on every node.", { deep: false }) }, "Scrub now"),
        h("button", { type: "button", "data-key": "scrub-deep", onclick: () => act("POST", "/api/v1/scrub", "Deep scrub asked for on every node.", { deep: true }) }, "Deep scrub now")) : null));
  }
  return out;
}

async function act(method, path, done, body) {
  try {
    await api(method, path, body);
    say(done);
  } catch (e) {
    if (e.status !== 401) say(e.message, true);
  }
  refresh(true);
}

// Events -------------------------------------------------------------------------------

async function events() {
  let d;
  try {
    d = await api("GET", "/api/v1/events?limit=200");
  } catch (e) {
    if (e.status === 404) d = { unavailable: true, events: [] };
    else throw e;
  }
  draw("events", d, buildEvents);
}

function buildEvents(d) {
  if (d.unavailable) return [h("div", { class: "card" }, h("h2", {}, "Events"), h("p", { class: "muted" }, "This node does not report events (GET /api/v1/events)."))];
  const rows = d.events.map((e) => h("tr", { "data-kind": e.kind },
    h("td", {}, when(e.at_ms)),
    h("td", {}, h("span", { class: "badge " + (e.severity === "critical" ? "bad" : e.severity === "warning" ? "warn" : "") }, e.severity)),
    h("td", {}, e.kind),
    h("td", {}, e.message, h("div", { class: "muted" }, [e.node !== null && e.node !== undefined ? "node " + e.node : null, e.disk, e.path].filter((x) => x).join(" · ")))));
  return [h("div", { class: "card" }, h("h2", {}, "Events (newest first)"), table(["when", "severity", "kind", "what"], rows, { empty: "No events yet." }))];
}

const PANELS = { overview, disks, files, ingest, repair, events };

// ---------------------------------------------------------------------------------------
// Start

async function start() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => selectPanel(t.dataset.panel));
  try {
    const r = await fetch("/api/v1/session", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 200) {
      state.session = parseJson(await r.text());
      if (state.session.login === "bearer") { state.session = null; showLogin(""); return; }
      showApp();
      return;
    }
  } catch (_) { /* shown as the login form */ }
  showLogin("");
}

document.addEventListener("DOMContentLoaded", start);
