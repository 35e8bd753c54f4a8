// The troupe inspector's pages: each reads its JSON under /api/ and, on a live hub, follows
// the feed (/api/events, Server-Sent Events). Text from the hub is only ever set as
// textContent, never parsed as HTML.
"use strict";

const body = document.body;
const page = body.dataset.page;
const live = body.dataset.live === "1";
const content = document.getElementById("content");

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("an operator key is needed");
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function table(columns, rows, id) {
  const head = el("tr", {}, ...columns.map((c) => el("th", { text: c })));
  const tbody = el("tbody", id ? { id } : {});
  for (const row of rows) tbody.append(row);
  return el("table", {}, el("thead", {}, head), tbody);
}

function row(cells, props) {
  return el("tr", props || {}, ...cells.map((c) => el("td", {}, c)));
}

function show(...nodes) {
  content.replaceChildren(...nodes);
}

function showError(error) {
  show(el("p", { class: "error", text: String(error.message || error) }));
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "";
}

function clock(iso) {
  const match = /T(\d\d:\d\d:\d\d(\.\d{3})?)/.exec(iso || "");
  return match ? match[1] : "";
}

// One refresh at a time, coalescing the calls that come meanwhile.
function coalesce(fn, delay) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await fn();
    } catch (error) {
      showError(error);
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (timer === null) timer = setTimeout(run, delay);
  };
  return schedule;
}

// A page that polls its JSON (no feed: it would only hold a subscription to the hub's events).
function polled() {
  const badge = document.getElementById("live");
  badge.textContent = live ? "live" : "store at rest";
  badge.className = live ? "on" : "rest";
}

function feed(query, onEvent) {
  const badge = document.getElementById("live");
  if (!live) {
    badge.textContent = "store at rest";
    badge.className = "rest";
    return;
  }
  const source = new EventSource("/api/events" + query);
  const kinds = [
    "hello", "missed", "end", "envelope_accepted", "envelope_rejected", "session_created",
    "session_opened", "session_closed", "agent_registered", "agent_unregistered",
    "session_actor_crashed", "session_actor_restarted", "dispatch_failed", "task_changed",
    "expectation_violated", "turn_failed", "audited",
  ];
  for (const kind of kinds) {
    source.addEventListener(kind, (message) => {
      badge.textContent = kind === "end" ? "hub closed" : "live";
      badge.className = kind === "end" ? "rest" : "on";
      if (kind === "end") source.close();
      onEvent(kind, JSON.parse(message.data));
    });
  }
  source.onerror = () => {
    badge.textContent = "reconnecting";
    badge.className = "off";
  };
}

// -- sessions -------------------------------------------------------------------------------

function sessionsPage() {
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "status ", el("select", { name: "status" },
      ...["", "live", "passivated", "open", "ended"].map((s) => el("option", { value: s, text: s || "any" })))),
    el("label", {}, "type ", el("input", { name: "type", size: "12" })),
    el("label", {}, "participant ", el("input", { name: "participant", size: "12" })),
    el("label", {}, "id contains ", el("input", { name: "q", size: "12" })));
  const holder = el("div", { id: "sessions" });
  show(form, holder);
  for (const [key, value] of new URLSearchParams(location.search)) {
    if (form.elements[key]) form.elements[key].value = value;
  }
  const refresh = coalesce(async () => {
    const params = new URLSearchParams();
    for (const input of form.elements) if (input.value) params.set(input.name, input.value);
    history.replaceState(null, "", params.toString() ? "?" + params : location.pathname);
    const data = await api("/api/sessions?" + params);
    const rows = data.sessions.map((s) => row([
      el("a", { href: "/sessions/" + encodeURIComponent(s.session_id), text: s.session_id }),
      s.type + "@v" + s.version,
      el("span", { class: "status " + s.status, text: s.status }),
      s.state + (s.close_reason ? " (" + s.close_reason + ")" : ""),
      s.participants.map((p) => p.name).join(", "),
      el("span", { class: "seq", text: String(s.last_seq) }),
      when(s.created_at),
    ], { "data-session": s.session_id }));
    holder.replaceChildren(
      table(["session", "type", "status", "state", "participants", "last seq", "created"], rows, "session-rows"),
      el("p", { class: "note", text: rows.length + " shown" }));
  }, 250);
  form.addEventListener("input", refresh);
  form.addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  refresh();
  const touching = new Set(["session_created", "session_opened", "session_closed", "missed", "hello"]);
  feed("", (kind, data) => {
    if (kind === "envelope_accepted") {  // only its row's last seq changes: no reload
      for (const tr of holder.querySelectorAll("tr[data-session]")) {
        if (tr.dataset.session === data.session_id) tr.querySelector("span.seq").textContent = String(data.seq);
      }
    } else if (touching.has(kind)) {
      refresh();
    }
  });
  if (!live) return;
  setInterval(refresh, 10000);  // live/passivated changes have no event
}

// -- one session ----------------------------------------------------------------------------

function sessionPage() {
  const sessionId = body.dataset.session;
  const header = el("div", { id: "session-meta" });
  const holder = el("div", { id: "transcript" });
  show(header, holder);
  let names = {};
  let lastSeq = 0;
  const tbody = el("tbody", { id: "envelopes" });
  holder.replaceChildren(el("table", {}, el("thead", {}, el("tr", {},
    ...["seq", "at", "sender", "event type", "text / data"].map((c) => el("th", { text: c })))), tbody));

  function renderMeta(s) {
    names = {};
    names[s.creator.agent_id] = s.creator.name;
    for (const p of s.participants) names[p.agent_id] = p.name;
    header.replaceChildren(el("dl", {},
      el("dt", { text: "type" }), el("dd", { text: s.type + "@v" + s.version }),
      el("dt", { text: "status" }), el("dd", {}, el("span", { class: "status " + s.status, text: s.status }),
        " " + s.state + (s.close_reason ? " (" + s.close_reason + ")" : "")),
      el("dt", { text: "participants" }), el("dd", { text: s.participants.map((p) => p.name + " (" + p.role + ")").join(", ") }),
      el("dt", { text: "created" }), el("dd", { text: when(s.created_at) + (s.expires_at ? "  expires " + when(s.expires_at) : "") }),
      el("dt", { text: "last seq" }), el("dd", { id: "last-seq", text: String(s.last_seq) })));
  }

  function append(env) {
    if (env.seq <= lastSeq) return;
    lastSeq = env.seq;
    let summary = env.text !== undefined && env.text !== null ? env.text : JSON.stringify(env.event_data || {});
    if (summary.length > 90) summary = summary.slice(0, 90) + "…";
    const details = el("details", {}, el("summary", { text: summary }),
      el("pre", { text: JSON.stringify(env, null, 2) }));
    const at = el("span", { class: "time", title: env.created_at || "", text: clock(env.created_at) });
    tbody.append(row([String(env.seq), at, names[env.sender_id] || env.sender_id,
      env.event_type, details], { "data-seq": String(env.seq), class: "envelope" }));
    const shown = document.getElementById("last-seq");
    if (shown) shown.textContent = String(lastSeq);
  }

  const catchUp = coalesce(async () => {
    let more = true;
    while (more) {
      const data = await api("/api/sessions/" + encodeURIComponent(sessionId) + "/wal?limit=1000&since=" + lastSeq);
      renderMeta(data.session);
      for (const env of data.envelopes) append(env);
      more = data.more;
    }
  }, 0);
  catchUp();
  feed("?session=" + encodeURIComponent(sessionId), (kind, data) => {
    if (kind === "envelope_accepted" && data.seq === lastSeq + 1) append(data.envelope);
    else catchUp();  // hello (what came before the feed), a gap, a missed count, a close
  });
}

// -- agents ---------------------------------------------------------------------------------

function agentsPage() {
  const refresh = coalesce(async () => {
    const data = await api("/api/agents");
    const rows = data.agents.map((a) => row([
      a.name,
      a.kind,
      a.connected === null ? "—" : el("span", { class: a.connected ? "status live" : "status ended", text: a.connected ? "connected" : "not connected" }),
      a.capabilities.join(", "),
      Object.entries(a.track_record).map(([cap, s]) =>
        cap + ": " + (s.completed || 0) + "/" + (s.n || 0) + " done" + (s.p50_latency_ms ? ", p50 " + s.p50_latency_ms + " ms" : "")).join("; "),
      a.agent_id,
    ]));
    show(table(["name", "kind", "connection", "capabilities", "track record", "id"], rows, "agent-rows"));
  }, 50);
  refresh();
  feed("", (kind) => { if (kind.startsWith("agent_") || kind === "missed") refresh(); });
  if (live) setInterval(refresh, 5000);  // connections come and go without an event
}

// -- supervision ----------------------------------------------------------------------------

function supervisorNode(sup) {
  const items = sup.children.map((c) => {
    const crash = c.last_crash
      ? el("div", { class: "crash", text: "last crash " + when(c.last_crash.at) + ": " + c.last_crash.exc_type + ": " + c.last_crash.exc_message })
      : null;
    return el("li", {},
      el("span", { class: c.running ? "status live" : "status ended", text: c.running ? "running" : "down" }),
      " ", el("b", { text: c.id }), " " + c.kind + ", " + c.restart + ", restarts " + c.restarts,
      crash, c.supervisor ? supervisorNode(c.supervisor) : null);
  });
  return el("div", { class: "supervisor" },
    el("div", { text: "supervisor " + sup.name + " (" + sup.strategy + "): " + sup.state + ", " + sup.restarts + " restarts" }),
    el("ul", {}, ...items));
}

function supervisionPage() {
  const refresh = coalesce(async () => {
    const data = await api("/api/supervision");
    if (data.root) {
      show(supervisorNode(data.root));
      return;
    }
    const crashes = Object.entries(data.crashes || {}).map(([id, c]) =>
      row([id, when(c.at), c.exc_type + ": " + c.exc_message]));
    show(el("p", { class: "note", text: "No hub runs in this process: the last crash of each child, from the audit log." }),
      table(["child", "at", "error"], crashes));
  }, 50);
  refresh();
  polled();
  if (live) setInterval(refresh, 2000);
}

// -- statistics -----------------------------------------------------------------------------

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 240;
  const height = 48;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  const top = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => (i * step).toFixed(1) + "," + (height - 2 - (v / top) * (height - 4)).toFixed(1));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}

function statisticsPage() {
  const refresh = coalesce(async () => {
    const data = await api("/api/statistics");
    const charts = Object.entries(data.series).map(([name, values]) => {
      const last = values.length ? values[values.length - 1] : 0;
      return el("figure", { class: "chart" }, el("figcaption", {}, name.replaceAll("_", " "), " ",
        el("b", { text: Number.isInteger(last) ? String(last) : last.toFixed(1) })), sparkline(values));
    });
    const now = Object.entries(data.now).map(([k, v]) => row([k.replaceAll("_", " "), String(v)]));
    const span = data.times.length ? "last " + Math.round(-data.times[0]) + " s, every " + data.every_s + " s" : "no samples: a store at rest";
    const counters = table(["counter", "value"], now);
    counters.className = "narrow";
    show(el("p", { class: "note", text: span }), el("div", { class: "charts" }, ...charts),
      el("h2", { text: "now" }), counters);
  }, 50);
  refresh();
  polled();
  if (live) setInterval(refresh, 2000);
}

// -- audit log ------------------------------------------------------------------------------

function auditPage() {
  const refresh = coalesce(async () => {
    const data = await api("/api/audit?limit=200");
    const rows = data.records.map((r) => {
      const rest = Object.assign({}, r);
      delete rest.at;
      delete rest.kind;
      return row([when(r.at), r.kind, JSON.stringify(rest)]);
    });
    show(table(["at", "kind", "fields"], rows, "audit-rows"));
  }, 300);
  refresh();
  polled();
  if (live) setInterval(refresh, 3000);
}

const pages = {
  sessions: sessionsPage,
  session: sessionPage,
  agents: agentsPage,
  supervision: supervisionPage,
  statistics: statisticsPage,
  audit: auditPage,
};
try {
  pages[page]();
} catch (error) {
  showError(error);
}
