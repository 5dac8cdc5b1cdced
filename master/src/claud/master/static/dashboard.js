// The live view holds no data of its own: it asks for the API token, keeps it
// in sessionStorage (never in a URL), and reads the authenticated /v1 API of
// the master that served it (the policy admits no other origin): /v1/cluster,
// /v1/nodes and /v1/jobs each second, and every master's consensus trace as
// that master relays it (/v1/cluster/trace?masters=all: server-sent events read
// through fetch, since EventSource cannot send the token), with each master's
// own status (role, term, vote, indexes) and word of those that stop answering.
// A job's allocations (its replicas), shown when its row is opened, come from
// GET /v1/jobs/{id}, asked again (at most once per DETAIL_MS) when /v1/events,
// read the same way, says the job changed, and after each reconnect or gap.
// Every value reaches the page as text (textContent) or as a number in an SVG
// attribute, never as markup, and only known names become class names.
"use strict";

const TOKEN_KEY = "claud-token";
const REFRESH_MS = 1000;
const RECONNECT_MS = 1000;
const MAX_JOBS = 200;
const LOG_LINES = 150;
const JOB_LINES = 100;
// At most one GET /v1/jobs/{id} per opened job in this long: a burst of events asks once or twice.
const DETAIL_MS = 250;
const EXPANDED_KEY = "claud-open-jobs";
const MAX_EXPANDED = 50;
const JOB_HEAD = ["", "id", "name", "state", "running", "version", "slave", "constraints", "attempts", "exit", "reason"];
const ALLOC_HEAD = ["index", "allocation", "state", "health", "slave", "ports", "version", "attempt", "exit", "reason"];
const ROLLOUT = { running: "rolling out", complete: "rolled out", failed: "failed" };
const MAX_TERMS = 14;
const FLIGHT_MS = 650;
const MAX_DOTS = 90;
// Events older than this when they arrive (a replay) are listed, not animated.
const ANIMATE_WITHIN_S = 3;
const CAMPAIGN_MS = 2500;
const BANNER_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const STAGE = { width: 800, height: 440, cx: 400, cy: 172, rx: 240, ry: 110, r: 38, slaveY: 370 };
const STATES = new Set(["pending", "scheduled", "starting", "running", "completed", "failed", "stopping",
  "stopped", "lost", "alive", "suspect", "dead", "draining", "healthy", "unhealthy"]);
const ACTIVE = new Set(["scheduled", "starting", "running", "stopping"]);
const ROLES = new Set(["leader", "follower", "candidate", "pre_candidate", "unknown"]);
const LEADER_COLOURS = ["#e29a12", "#3a78d4", "#14a05a", "#8a4fd0", "#d0408a", "#2aa5a5", "#7a6a2a"];

let timer = null;
let following = null; // the AbortController of the trace stream
let watching = null; // the AbortController of the job event stream

const view = {
  cluster: null, // the last /v1/cluster answer
  slaves: [], // slave rows of the last /v1/nodes answer
  jobs: [], // the last /v1/jobs answer
  // job id -> {job, asked}: the newest view of each listed job, from the list or its own
  // GET (asked: when that request was sent; a later request's answer wins).
  jobViews: new Map(),
  expanded: new Set(), // jobs whose allocations are shown (kept in sessionStorage)
  detail: new Map(), // job id -> {busy, again, timer, last}: its GET, throttled
  eventCursor: "", // the last /v1/events id (INDEX.K), Last-Event-ID on reconnect
  drawnJobs: "", // what the jobs table shows, to leave it alone (and its buttons) when nothing changed
  heard: new Map(), // master id -> {term, at}: the last message this master got from it
  terms: [], // [{term, leader, at}] in order: the timeline
  cursor: "", // the merged trace's cursor, MASTER:ID,... (Last-Event-ID on reconnect)
  status: new Map(), // master id -> its own last status event (role, term, voted_for, indexes, at)
  lost: new Set(), // masters the relay stopped hearing
  dots: [],
  campaigns: new Map(), // candidate id -> {term, pre, until}
  banner: { text: "", until: 0 },
  placed: new Set(), // jobs seen placed: a second placement is "placed again"
  applied: new Set(), // job and slave transitions shown: every master applies (and traces) each one
};

function $(id) { return document.getElementById(id); }

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function labels(map) {
  return Object.entries(map || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

function short(id) {
  const s = text(id);
  return s.length > 14 ? s.slice(0, 13) + "…" : s;
}

function clock(at) {
  const d = new Date(at * 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function svg(name, attrs, content) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (content !== undefined) el.textContent = text(content);
  return el;
}

class Unauthorized extends Error {}

function headers(accept) {
  return { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY), Accept: accept };
}

async function get(path) {
  const response = await fetch(path, {
    headers: headers("application/json"), credentials: "omit", cache: "no-store", redirect: "error",
  });
  if (response.status === 401) throw new Unauthorized("the master refused this token");
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

// ------------------------------------------------------------------ polling

async function refresh() {
  try {
    const asked = performance.now();
    const [c, n, j] = await Promise.all([get("/v1/cluster"), get("/v1/nodes"), get("/v1/jobs")]);
    view.cluster = c;
    view.slaves = n.nodes.filter((x) => x.role === "slave");
    view.jobs = j.jobs;
    noteJobs(j.jobs, asked);
    noteTerm(num(c.term), num(c.leader_id), Date.now() / 1000, true);
    drawJobs();
    drawSummary();
    drawStage();
    drawTerms();
    drawFaults();
    $("error").textContent = "";
  } catch (err) {
    if (err instanceof Unauthorized) {
      signOut(err.message);
    } else {
      $("error").textContent = text(err.message);
    }
  }
}

// ------------------------------------------------------------------ jobs and their allocations

// A later request's answer is newer: the list's and a job's own GET each replace the
// other's view of that job only when asked after it.
function noteJob(job, asked) {
  if (typeof job !== "object" || job === null || typeof job.id !== "string") return;
  const had = view.jobViews.get(job.id);
  if (!had || had.asked <= asked) view.jobViews.set(job.id, { job, asked });
}

function noteJobs(jobs, asked) {
  const listed = new Set(jobs.map((x) => x.id));
  for (const id of view.jobViews.keys()) if (!listed.has(id)) view.jobViews.delete(id);
  for (const [id, d] of view.detail) {
    if (!listed.has(id) && !d.busy) { if (d.timer !== null) clearTimeout(d.timer); view.detail.delete(id); }
  }
  let forgot = false;
  for (const id of view.expanded) if (!listed.has(id)) { view.expanded.delete(id); forgot = true; }
  if (forgot) saveExpanded();
  for (const job of jobs) noteJob(job, asked);
}

function current(job) {
  return view.jobViews.get(job.id)?.job ?? job;
}

// A job's allocations; a view without them (an older master) is its one allocation.
function allocationsOf(job) {
  if (Array.isArray(job.allocations) && job.allocations.length) return job.allocations;
  return [{ index: 0, id: job.alloc_id, state: job.state, slave_id: job.node_id, attempt: job.attempts,
    exit_code: job.exit_code, ports: job.ports, health: job.health, pending_reason: job.pending_reason,
    message: job.message, version: job.version }];
}

function allocationsOn(slaveId) {
  let n = 0;
  for (const x of view.jobs) {
    for (const a of allocationsOf(current(x))) if (a.slave_id === slaveId && ACTIVE.has(a.state)) n++;
  }
  return n;
}

function rolloutText(job) {
  const version = num(job.version) === null ? "" : `v${job.version}`;
  const r = job.rollout;
  if (typeof r !== "object" || r === null) return { line: version, cls: "" };
  const state = Object.hasOwn(ROLLOUT, r.state) ? ROLLOUT[r.state] : text(r.state);
  const line = `v${text(r.version)} ${state}${r.state === "failed" && r.message ? ": " + text(r.message) : ""}`;
  const shown = num(r.version) === num(job.version) ? line : `${version} (${line})`;
  return { line: shown, cls: r.state === "running" ? "rolling" : r.state === "failed" ? "failed" : "" };
}

function portsText(ports) {
  return (Array.isArray(ports) ? ports : []).map((p) => `${text(p.name)} ${p.address ? text(p.address)
    : num(p.host_port) !== null ? p.host_port : "—"}`).join(", ");
}

// Each cell as [text, class]: only known names become class names.
function jobCells(x) {
  const allocs = allocationsOf(x);
  const running = num(x.running), desired = num(x.desired);
  const replicas = running === null || desired === null ? "" : `${running}/${desired}`;
  const slaves = [...new Set(allocs.map((a) => a.slave_id).filter((s) => s))];
  const rollout = rolloutText(x);
  return [[x.id, ""], [x.name, ""], [x.state, STATES.has(x.state) ? x.state : ""],
    [replicas, running !== null && running < desired ? "short" : ""], [rollout.line, rollout.cls],
    [allocs.length > 1 ? slaves.map(short).join(", ") : x.node_id, ""], [labels(x.constraints?.labels), ""],
    [x.attempts, ""], [x.exit_code, ""], [x.pending_reason || x.message, ""]];
}

function allocCells(a) {
  return [[a.index, ""], [a.id, ""], [a.state, STATES.has(a.state) ? a.state : ""],
    [a.health, STATES.has(a.health) ? a.health : ""], [a.slave_id, ""], [portsText(a.ports), ""],
    [num(a.version) === null ? "" : `v${a.version}`, ""], [a.attempt, ""], [a.exit_code, ""],
    [a.pending_reason || a.message, ""]];
}

function cellRow(tag, cells) {
  const tr = document.createElement("tr");
  for (const [value, cls] of cells) {
    const cell = document.createElement(tag);
    cell.textContent = text(value);
    if (cell.textContent) cell.title = cell.textContent; // the whole of what an ellipsis cuts
    if (cls) cell.className = cls;
    tr.appendChild(cell);
  }
  return tr;
}

function drawJobs() {
  const shown = view.jobs.slice(-MAX_JOBS).reverse().map((x) => {
    const job = current(x);
    const open = view.expanded.has(job.id);
    return { id: job.id, open, cells: jobCells(job), allocs: open ? allocationsOf(job).map(allocCells) : null };
  });
  const drawn = JSON.stringify(shown);
  if (drawn === view.drawnJobs) return; // the same: keep the rows (and a button being clicked)
  view.drawnJobs = drawn;
  const header = cellRow("th", JOB_HEAD.map((name) => [name, ""]));
  const rows = [];
  for (const job of shown) {
    const tr = cellRow("td", [["", ""], ...job.cells]);
    tr.className = "job";
    tr.dataset.job = job.id;
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "toggle";
    toggle.dataset.job = job.id;
    toggle.textContent = job.open ? "▾" : "▸";
    toggle.setAttribute("aria-expanded", String(job.open));
    toggle.title = `${job.open ? "hide" : "show"} the allocations of ${job.id}`;
    tr.firstChild.appendChild(toggle);
    rows.push(tr);
    if (!job.open) continue;
    const inner = document.createElement("table");
    inner.className = "allocs";
    inner.append(cellRow("th", ALLOC_HEAD.map((name) => [name, ""])), ...job.allocs.map((cells, i) => {
      const row = cellRow("td", cells);
      row.className = "alloc";
      row.dataset.index = text(cells[0][0] === "" ? i : cells[0][0]);
      return row;
    }));
    const holder = document.createElement("tr");
    holder.className = "allocs";
    holder.dataset.job = job.id;
    const cell = document.createElement("td");
    cell.colSpan = JOB_HEAD.length;
    cell.appendChild(inner);
    holder.appendChild(cell);
    rows.push(holder);
  }
  $("jobs").replaceChildren(header, ...rows);
}

function toggle(id) {
  if (view.expanded.has(id)) {
    view.expanded.delete(id);
  } else if (view.expanded.size < MAX_EXPANDED) {
    view.expanded.add(id);
    askJob(id);
  }
  saveExpanded();
  drawJobs();
}

function saveExpanded() {
  sessionStorage.setItem(EXPANDED_KEY, JSON.stringify([...view.expanded]));
}

function loadExpanded() {
  let ids = [];
  try { ids = JSON.parse(sessionStorage.getItem(EXPANDED_KEY) || "[]"); } catch { ids = []; }
  view.expanded = new Set((Array.isArray(ids) ? ids : []).filter((id) => typeof id === "string" && id.length <= 64)
    .slice(0, MAX_EXPANDED));
}

// An opened job's own view, asked now, or once the last ask is DETAIL_MS old, or
// again once the one in flight answers: never two at a time for one job.
function askJob(id) {
  if (!view.expanded.has(id)) return;
  let d = view.detail.get(id);
  if (!d) {
    d = { busy: false, again: false, timer: null, last: -Infinity };
    view.detail.set(id, d);
  }
  if (d.busy) { d.again = true; return; }
  if (d.timer !== null) return;
  const wait = d.last + DETAIL_MS - performance.now();
  if (wait > 0) {
    d.timer = setTimeout(() => { d.timer = null; fetchJob(id, d); }, wait);
    return;
  }
  fetchJob(id, d);
}

async function fetchJob(id, d) {
  if (!view.expanded.has(id) || view.detail.get(id) !== d) return;
  d.busy = true;
  d.last = performance.now();
  try {
    const job = await get("/v1/jobs/" + encodeURIComponent(id));
    noteJob(job, d.last);
    drawJobs();
  } catch (err) {
    if (err instanceof Unauthorized) { signOut(err.message); return; }
    $("error").textContent = text(err.message); // a job gone is dropped by the next poll
  } finally {
    d.busy = false;
    if (view.detail.get(id) !== d || !view.expanded.has(id)) view.detail.delete(id);
    else if (d.again) { d.again = false; askJob(id); }
  }
}

function askOpenJobs() {
  for (const id of view.expanded) askJob(id);
}

function forgetAsks() {
  for (const d of view.detail.values()) if (d.timer !== null) clearTimeout(d.timer);
  view.detail.clear();
}

// /v1/events: a committed change of a job (of one of its allocations: alloc_index) asks
// again for that job's view, if it is open; a gap, or a reconnect, asks for every open one.
function onJobBlock(block) {
  const event = parseBlock(block);
  if (event === null) return;
  if (event.id !== null && event.id.length <= 40 && /^[0-9]+\.[0-9]+$/.test(event.id)) view.eventCursor = event.id;
  if (event.kind === "gap") askOpenJobs();
  else if (event.kind === "job" && typeof event.e.id === "string") askJob(event.e.id);
}

async function watchJobs(control) {
  while (!control.signal.aborted) {
    try {
      const wanted = headers("text/event-stream");
      if (view.eventCursor) wanted["Last-Event-ID"] = view.eventCursor;
      const response = await fetch("/v1/events", {
        headers: wanted, credentials: "omit", cache: "no-store", redirect: "error", signal: control.signal,
      });
      if (response.status === 401) throw new Unauthorized("the master refused this token");
      if (!response.ok) throw new Error(`the event stream answered ${response.status}`);
      $("events-state").textContent = "live";
      askOpenJobs(); // what changed while no stream was open
      await readStream(response, onJobBlock);
    } catch (err) {
      if (control.signal.aborted) return;
      if (err instanceof Unauthorized) { signOut(err.message); return; }
    }
    $("events-state").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

function masterName(id) { return id === null || id === undefined ? "none" : `master ${id}`; }

// The leader as the masters say of themselves: one whose own status says it leads
// (and is still heard) is named before the serving master's poll catches up.
function currentLeader() {
  const c = view.cluster;
  let best = null;
  for (const [id, st] of view.status) {
    if (st.role === "leader" && !view.lost.has(id) && (best === null || st.term > best.term)) best = { id, term: st.term };
  }
  const polled = c ? num(c.leader_id) : null;
  if (best !== null && (polled === null || view.lost.has(polled) || best.term >= (num(c.term) ?? 0))) return best.id;
  return polled !== null && view.lost.has(polled) ? null : polled;
}

function drawSummary() {
  const c = view.cluster;
  if (!c) return;
  const leader = currentLeader();
  const term = leader !== null && view.status.has(leader) ? view.status.get(leader).term : c.term;
  $("leader").textContent = leader === null ? "no leader (an election?)" : `leader: master ${leader}, term ${text(term)}`;
  $("summary").textContent = `served by master ${text(c.master_id)} (${text(c.role)}) · term ${text(c.term)} · `
    + `leader ${masterName(leader)} · commit ${text(c.commit_index)} · quorum ${text(c.quorum)} of ${c.masters.length}`;
}

// ------------------------------------------------------------------ the stage

function positions() {
  const at = new Map();
  const masters = view.cluster ? [...view.cluster.masters].sort((a, b) => a.id - b.id) : [];
  masters.forEach((m, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, masters.length);
    at.set("m" + m.id, { x: STAGE.cx + STAGE.rx * Math.cos(angle), y: STAGE.cy + STAGE.ry * Math.sin(angle) });
  });
  const n = view.slaves.length;
  const slot = Math.min(150, (STAGE.width - 20) / Math.max(1, n));
  view.slaves.forEach((s, i) => {
    at.set("s" + s.id, { x: STAGE.width / 2 + (i - (n - 1) / 2) * slot, y: STAGE.slaveY, w: slot - 12 });
  });
  return at;
}

function drawStage() {
  const c = view.cluster;
  if (!c) return;
  const at = positions();
  const self = num(c.master_id);
  const leader = currentLeader();
  const now = Date.now();
  const links = [];
  const masters = [...c.masters].sort((a, b) => a.id - b.id);
  for (let i = 0; i < masters.length; i++) {
    for (let j = i + 1; j < masters.length; j++) {
      const a = at.get("m" + masters[i].id), b = at.get("m" + masters[j].id);
      links.push(svg("line", { class: "link", x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
    }
  }
  const hub = leader !== null ? at.get("m" + leader) : undefined;
  for (const s of view.slaves) {
    const p = at.get("s" + s.id);
    if (hub) links.push(svg("line", { class: "link lease", x1: hub.x, y1: hub.y, x2: p.x, y2: p.y - 28 }));
  }
  $("links").replaceChildren(...links);
  $("masters").replaceChildren(...masters.map((m) => drawMaster(m, at.get("m" + m.id), self, now)));
  $("slaves").replaceChildren(...view.slaves.map((s) => drawSlave(s, at.get("s" + s.id))));
  const banner = now < view.banner.until ? view.banner.text : "";
  $("banner").textContent = banner;
}

function drawMaster(m, p, self, now) {
  const c = view.cluster;
  const isSelf = m.id === self;
  const own = view.lost.has(m.id) ? null : view.status.get(m.id);
  // What a master says of itself (its own status in the trace, or the serving master's
  // answer for itself) is known best; what the serving master believes comes next.
  let role = ROLES.has(m.role) ? m.role : "unknown";
  if (own && ROLES.has(own.role)) role = own.role;
  else if (isSelf && ROLES.has(c.role)) role = c.role;
  if (view.lost.has(m.id)) role = "unknown";
  const unreachable = !m.reachable || view.lost.has(m.id);
  const g = svg("g", { class: `master ${role}${unreachable ? " unreachable" : ""}`, "data-id": m.id, "data-role": role });
  if (isSelf) g.appendChild(svg("circle", { class: "here", cx: p.x, cy: p.y, r: STAGE.r + 7 }));
  const campaign = view.campaigns.get(m.id);
  if (campaign && campaign.until > now) {
    g.appendChild(svg("circle", { class: "campaign", cx: p.x, cy: p.y, r: STAGE.r + 4 }));
  }
  g.appendChild(svg("circle", { class: "body", cx: p.x, cy: p.y, r: STAGE.r }));
  g.appendChild(svg("text", { class: "name", x: p.x, y: p.y + 2, "text-anchor": "middle" }, "M" + m.id));
  g.appendChild(svg("text", { class: "role", x: p.x, y: p.y + 18, "text-anchor": "middle" },
    role.replace("_", "-")));
  const facts = [];
  const known = own || (isSelf ? { term: c.term, voted_for: c.voted_for, last_index: c.last_index,
    commit_index: c.commit_index, applied_index: c.applied_index } : null);
  if (known) {
    facts.push(`term ${text(known.term)} · voted ${known.voted_for === null || known.voted_for === undefined ? "—" : "M" + text(known.voted_for)}`);
    facts.push(`last ${text(known.last_index)} · commit ${text(known.commit_index)} · applied ${text(known.applied_index)}`);
  } else {
    const heard = view.heard.get(m.id);
    if (heard) facts.push(`term ${heard.term} · heard ${((now / 1000) - heard.at).toFixed(1)} s ago`);
  }
  if (!isSelf && num(m.match_index) !== null) {
    const lag = num(c.last_index) !== null ? c.last_index - m.match_index : null;
    facts.push(`match ${m.match_index}${lag ? ` (${lag} behind)` : ""}`);
  }
  if (isSelf) facts.push("this page's master");
  if (view.lost.has(m.id)) facts.push("not answering");
  else if (!m.reachable) facts.push("unreachable");
  // Below the circle; beside it for one near the top, where the banner is.
  const beside = p.y < STAGE.cy - 1;
  facts.forEach((line, i) => {
    const attrs = beside
      ? { class: "facts", x: p.x + STAGE.r + 14, y: p.y - 10 + i * 14, "text-anchor": "start" }
      : { class: "facts", x: p.x, y: p.y + STAGE.r + 18 + i * 14, "text-anchor": "middle" };
    g.appendChild(svg("text", attrs, line));
  });
  return g;
}

function drawSlave(s, p) {
  const state = STATES.has(s.state) ? s.state : "unknown";
  const g = svg("g", { class: `slave ${state}`, "data-id": s.id });
  const w = p.w, h = 62, x = p.x - w / 2, y = p.y - 28;
  g.appendChild(svg("rect", { x, y, width: w, height: h, rx: 6 }));
  g.appendChild(svg("text", { x: x + 7, y: y + 15 }, short(s.id)));
  const allocs = allocationsOn(s.id);
  g.appendChild(svg("text", { x: x + 7, y: y + 29 }, `${s.state} · ${allocs} alloc${allocs === 1 ? "" : "s"}`));
  const beat = s.last_heartbeat ? (Date.now() - Date.parse(s.last_heartbeat)) / 1000 : null;
  g.appendChild(svg("text", { x: x + 7, y: y + 43 },
    beat === null ? "no heartbeat yet" : `heartbeat ${Math.max(0, beat).toFixed(1)} s ago`));
  const lease = num(s.lease_left), total = num(view.cluster?.slave_lease);
  g.appendChild(svg("rect", { class: "lease-bg", x: x + 7, y: y + 49, width: w - 14, height: 6, rx: 3 }));
  if (lease !== null && total) {
    g.appendChild(svg("rect", { class: "lease", x: x + 7, y: y + 49, width: Math.max(0, (w - 14) * Math.min(1, lease / total)),
      height: 6, rx: 3 }));
    g.appendChild(svg("title", {}, `lease left ${lease.toFixed(1)} s of ${total} s`));
  } else {
    g.appendChild(svg("title", {}, "the lease left is known on the leader"));
  }
  return g;
}

// ------------------------------------------------------------------ terms

// The trace's role events make the timeline: in order, with the times they
// happened. A poll only adds a term the trace has not shown (its answer may be
// older than it looks, so it never says a term lost its leader). What arrives is
// kept in time order (a replay is older than the first poll), then merged into
// one block per (term, leader), a leaderless block standing for an election.
function noteTerm(term, leader, at, polled) {
  if (term === null || term === 0) return; // term 0: before any election, nothing to show
  if (polled && (leader === null || view.terms.some((t) => t.term >= term))) return;
  const sorted = [...view.terms, { term, leader, at }].sort((a, b) => a.at - b.at);
  const merged = [];
  for (const t of sorted) {
    const last = merged[merged.length - 1];
    if (!last) { merged.push({ ...t }); continue; }
    if (t.term < last.term || (t.term === last.term && t.leader === last.leader)) continue;
    if (t.term === last.term && last.leader === null) { last.leader = t.leader; continue; }
    if (t.leader === null && last.leader === null) continue; // still electing
    merged.push({ ...t });
  }
  view.terms = merged.slice(-MAX_TERMS * 4);
}

function drawTerms() {
  const shown = view.terms.slice(-MAX_TERMS);
  const width = 440, min = 38, now = Date.now() / 1000;
  const spans = shown.map((t, i) => Math.max(0.001, (i + 1 < shown.length ? shown[i + 1].at : now) - t.at));
  const total = spans.reduce((a, b) => a + b, 0);
  let x = 0;
  const blocks = shown.map((t, i) => {
    const w = min + (width - min * shown.length) * (spans[i] / total);
    const g = svg("g", { class: t.leader === null ? "term none" : "term" });
    const rect = svg("rect", { x, y: 4, width: Math.max(1, w), height: 40, rx: 3 });
    if (t.leader !== null) rect.setAttribute("fill", LEADER_COLOURS[t.leader % LEADER_COLOURS.length]);
    g.appendChild(rect);
    g.appendChild(svg("text", { x: x + 4, y: 20 }, "T" + t.term));
    g.appendChild(svg("text", { x: x + 4, y: 36 }, t.leader === null ? "none" : "M" + t.leader));
    g.appendChild(svg("title", {}, `term ${t.term}: ${t.leader === null ? "no leader known" : "led by master " + t.leader}`
      + `, from ${clock(t.at)}`));
    x += w;
    return g;
  });
  $("terms").replaceChildren(...blocks);
}

// ------------------------------------------------------------------ the trace

function describe(kind, e) {
  const vote = e.pre ? "pre-vote" : "vote";
  switch (kind) {
    case "role": return `M${e.master} is ${text(e.role).replace("_", "-")} in term ${e.term}`
      + (e.leader !== null && e.leader !== undefined ? `, leader M${e.leader}` : ", no leader known");
    case "election": return `M${e.master} stands for term ${e.term}${e.pre ? " (pre-vote)" : ""}, asking `
      + (e.voters || []).map((v) => "M" + v).join(", ");
    case "vote.request": return `M${e.src} asks M${e.dst} for a ${vote}, term ${e.term}, log ${e.last_index}@${e.last_term}`;
    case "vote.granted": return `M${e.src} grants M${e.dst} its ${vote}, term ${e.term}`;
    case "vote.refused": return `M${e.src} refuses M${e.dst} its ${vote}, term ${e.term}`;
    case "append": return e.entries ? `M${e.src} → M${e.dst} ${e.entries} entr${e.entries === 1 ? "y" : "ies"} after `
      + `${e.prev_index}, commit ${e.commit}` : `M${e.src} → M${e.dst} heartbeat, commit ${e.commit}`;
    case "append.answer": return e.success ? `M${e.src} → M${e.dst} ok, match ${e.match_index}`
      : `M${e.src} → M${e.dst} refused (log does not match)`;
    case "snapshot.send": return `M${e.src} → M${e.dst} snapshot at ${e.index}`;
    case "snapshot.answer": return `M${e.src} → M${e.dst} snapshot installed, match ${e.match_index}`;
    case "snapshot.installed": return `M${e.master} installed a snapshot at ${e.index}`;
    case "commit": return `M${e.master} commit index → ${e.index}`;
    case "peer.gone": return `M${e.master}: M${e.peer}'s port refuses connections (its process is gone)`
      + (e.leader === e.peer ? ", so it stops waiting for its leader" : "");
    case "transfer": return `M${e.src} tells M${e.dst} to stand now (leadership transfer)`;
    case "slave.heartbeat": return `slave ${short(e.slave)} heartbeat → M${e.master}`;
    case "slave": return `slave ${short(e.slave)} ${e.state}${e.reason ? ": " + e.reason : ""}`;
    case "job": return `job ${short(e.job)} ${e.state}${e.slave ? " on " + short(e.slave) : ""}${e.reason ? ": " + e.reason : ""}`;
    case "trace.gap": return e.restarted ? `M${e.master} restarted: its trace starts again`
      : `${e.missed} events fell out of M${e.master}'s trace before they were read`;
    case "relay.lost": return `M${e.master} does not answer (killed, paused or gone)`;
    case "relay.back": return `M${e.master} answers again`;
    default: return kind;
  }
}

function kindClass(kind, e) {
  if (kind === "vote.refused" || (kind === "append.answer" && !e.success)) return "k-refused";
  const head = kind.split(".")[0];
  return ["role", "election", "vote", "append", "snapshot", "commit", "slave", "job"].includes(head) ? "k-" + head : "k-other";
}

function logLine(list, at, line, cls, limit) {
  const li = document.createElement("li");
  const t = document.createElement("span");
  t.className = "t";
  t.textContent = clock(at);
  li.append(t, document.createTextNode(line));
  li.className = cls;
  list.prepend(li);
  while (list.childElementCount > limit) list.lastElementChild.remove();
}

function banner(line) {
  view.banner = { text: line, until: Date.now() + BANNER_MS };
}

// A message is in two traces, its sender's ("out") and its receiver's ("in"): it is
// shown once, from the sender's, unless the sender's own trace is not heard.
function shownTwice(e) {
  if (e.dir !== "in") return false;
  const sender = num(e.src);
  return sender !== null && view.status.has(sender) && !view.lost.has(sender);
}

// A committed transition is in every master's trace, with the same log index.
function appliedBefore(kind, e) {
  if ((kind !== "job" && kind !== "slave") || num(e.index) === null) return false;
  const key = `${kind}|${text(kind === "job" ? e.job : e.slave)}|${e.index}|${text(e.state)}`;
  if (view.applied.has(key)) return true;
  if (view.applied.size > 10000) view.applied.clear(); // a long-open tab: forget, rather than grow
  view.applied.add(key);
  return false;
}

function onEvent(kind, e) {
  const at = num(e.at) ?? Date.now() / 1000;
  const fresh = Date.now() / 1000 - at < ANIMATE_WITHIN_S;
  const self = num(e.master);
  if (num(e.src) !== null && e.src !== self) view.heard.set(e.src, { term: e.term, at });
  if (kind === "status") {
    if (self !== null) view.status.set(self, e);
    drawSummary();
    drawStage();
    return;
  }
  if (kind === "relay.lost" || kind === "relay.back") {
    if (self !== null && kind === "relay.lost") view.lost.add(self);
    else if (self !== null) view.lost.delete(self);
    logLine($("trace-log"), at, describe(kind, e), kind === "relay.lost" ? "k-refused" : "k-other", LOG_LINES);
    drawSummary();
    drawStage();
    return;
  }
  if (shownTwice(e) || appliedBefore(kind, e)) return;
  logLine($("trace-log"), at, describe(kind, e), kindClass(kind, e), LOG_LINES);
  switch (kind) {
    case "role":
      noteTerm(num(e.term), num(e.leader), at, false);
      if (self !== null && view.status.has(self)) { // its own word: redraw now, before any poll
        view.status.set(self, { ...view.status.get(self), role: e.role, term: e.term, leader: e.leader, at });
      }
      if (fresh && e.role === "leader") banner(`M${e.master} leads term ${e.term}`);
      else if (fresh && e.leader !== null && e.leader !== undefined) banner(`M${e.leader} leads term ${e.term}`);
      if (fresh) { drawSummary(); drawStage(); drawTerms(); refresh(); } // roles move: show it now
      break;
    case "election":
      view.campaigns.set(self, { term: e.term, pre: e.pre, until: Date.now() + CAMPAIGN_MS });
      if (fresh) banner(`election: M${self} stands for term ${e.term}${e.pre ? " (pre-vote)" : ""}`);
      break;
    case "vote.request":
      if (e.dir === "in") {
        view.campaigns.set(e.src, { term: e.term, pre: e.pre, until: Date.now() + CAMPAIGN_MS });
        if (fresh) banner(`election: M${e.src} stands for term ${e.term}${e.pre ? " (pre-vote)" : ""}`);
      }
      break;
    case "job": {
      let state = text(e.state);
      if (state === "scheduled") {
        state = view.placed.has(e.job) ? "placed again" : "placed";
        if (view.placed.size > 10000) view.placed.clear(); // a long-open tab: forget, rather than grow
        view.placed.add(e.job);
      }
      const line = `${short(e.job)} ${state}${e.slave ? " on " + short(e.slave) : ""}${e.reason ? " — " + e.reason : ""}`;
      logLine($("job-log"), at, line, STATES.has(e.state) ? e.state : "", JOB_LINES);
      break;
    }
    default:
      break;
  }
  if (fresh) fly(kind, e);
}

function dotClass(kind, e) {
  switch (kind) {
    case "append": return e.entries ? "entries" : "append";
    case "append.answer": return e.success ? "answer" : "refused";
    case "vote.request": return "vote";
    case "vote.granted": return "granted";
    case "vote.refused": return "refused";
    case "snapshot.send": case "snapshot.answer": return "snapshot";
    case "transfer": return "vote";
    default: return null;
  }
}

function fly(kind, e) {
  const at = positions();
  if (kind === "slave.heartbeat") { // the slave asks, the leader answers
    const s = at.get("s" + e.slave), m = at.get("m" + e.master);
    if (s && m) {
      launch("slave", { x: s.x, y: s.y - 28 }, m, 0);
      launch("slave", m, { x: s.x, y: s.y - 28 }, FLIGHT_MS);
    }
    return;
  }
  const cls = dotClass(kind, e);
  const from = at.get("m" + e.src), to = at.get("m" + e.dst);
  if (cls && from && to) launch(cls, from, to, 0);
}

function launch(cls, from, to, delay) {
  if (view.dots.length >= MAX_DOTS) return;
  const r = cls === "entries" || cls === "vote" || cls === "granted" ? 6 : 4.5;
  const el = svg("circle", { class: "dot " + cls, r, cx: from.x, cy: from.y, opacity: 0 });
  $("dots").appendChild(el);
  // A curve to the left of the straight line, so that a request and its answer pass each other.
  const dx = to.x - from.x, dy = to.y - from.y, len = Math.hypot(dx, dy) || 1;
  const bend = Math.min(40, len / 6);
  const ctrl = { x: (from.x + to.x) / 2 + (dy / len) * bend, y: (from.y + to.y) / 2 - (dx / len) * bend };
  view.dots.push({ el, from, to, ctrl, start: performance.now() + delay });
  if (view.dots.length === 1) requestAnimationFrame(animate);
}

function animate(now) {
  view.dots = view.dots.filter((d) => {
    const p = (now - d.start) / FLIGHT_MS;
    if (p < 0) return true;
    if (p >= 1) { d.el.remove(); return false; }
    const t = p < 0.5 ? 2 * p * p : 1 - 2 * (1 - p) * (1 - p);
    const u = 1 - t;
    d.el.setAttribute("cx", String(u * u * d.from.x + 2 * u * t * d.ctrl.x + t * t * d.to.x));
    d.el.setAttribute("cy", String(u * u * d.from.y + 2 * u * t * d.ctrl.y + t * t * d.to.y));
    d.el.setAttribute("opacity", "1");
    return true;
  });
  if (view.dots.length) requestAnimationFrame(animate);
}

// One server-sent event: {id, kind, e}, or null for a comment or what is not a JSON object.
function parseBlock(block) {
  let id = null, kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "id") id = value;
    else if (name === "event") kind = value;
    else if (name === "data") data.push(value);
  }
  if (!data.length) return null;
  let e;
  try { e = JSON.parse(data.join("\n")); } catch { return null; }
  if (typeof e !== "object" || e === null) return null;
  return { id, kind, e };
}

function onBlock(block) {
  const event = parseBlock(block);
  if (event === null) return;
  const id = event.id;
  if (id !== null && /^[0-9]+:[0-9]+(,[0-9]+:[0-9]+)*$/.test(id) && id.length <= 512) view.cursor = id;
  onEvent(event.kind, event.e);
}

// Reads a text/event-stream answer to its end, handing each event's block to `handle`.
async function readStream(response, handle) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      handle(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

async function follow(control) {
  while (!control.signal.aborted) {
    try {
      const wanted = headers("text/event-stream");
      if (view.cursor) wanted["Last-Event-ID"] = view.cursor;
      const response = await fetch("/v1/cluster/trace?masters=all", {
        headers: wanted, credentials: "omit", cache: "no-store", redirect: "error", signal: control.signal,
      });
      if (response.status === 401) throw new Unauthorized("the master refused this token");
      if (!response.ok) throw new Error(`the trace answered ${response.status}`);
      $("trace-state").textContent = "live";
      await readStream(response, onBlock);
    } catch (err) {
      if (control.signal.aborted) return;
      if (err instanceof Unauthorized) { signOut(err.message); return; }
    }
    $("trace-state").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

// ------------------------------------------------------------------ faults on demand

// The same faults as `claud chaos`, through POST /v1/chaos. Only a cluster started
// with --demo-faults (make demo's) takes them; the buttons say so otherwise.
function drawFaults() {
  const c = view.cluster;
  if (!c) return;
  const select = $("fault-target");
  const wanted = [...[...c.masters].sort((a, b) => a.id - b.id).map((m) => ["master " + m.id, String(m.id)]),
    ...view.slaves.map((s) => ["slave " + s.id, s.id])];
  const have = [...select.options].map((o) => o.value).join("\n");
  if (have !== wanted.map((w) => w[1]).join("\n")) {
    const chosen = select.value;
    select.replaceChildren(...wanted.map(([label, value]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      return option;
    }));
    if (wanted.some((w) => w[1] === chosen)) select.value = chosen;
  }
  const on = c.demo_faults === true;
  for (const button of document.querySelectorAll("button.fault")) button.disabled = !on;
  select.disabled = !on;
  if (!on) $("fault-state").textContent = "fault buttons work on a cluster started with --demo-faults (make demo)";
  else if ($("fault-state").textContent.startsWith("fault buttons")) $("fault-state").textContent = "";
}

async function fault(action) {
  const target = $("fault-target").value;
  $("fault-state").textContent = `${action} ${target}…`;
  try {
    const response = await fetch("/v1/chaos", {
      method: "POST", credentials: "omit", cache: "no-store", redirect: "error",
      headers: { ...headers("application/json"), "Content-Type": "application/json" },
      body: JSON.stringify({ action, target }),
    });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) throw new Unauthorized("the master refused this token");
    const message = response.ok ? body.message : body.error?.message;
    $("fault-state").textContent = text(message || `${action} ${target}: ${response.status}`);
  } catch (err) {
    if (err instanceof Unauthorized) signOut(err.message);
    else $("fault-state").textContent = text(`${action} ${target}: ${err.message}`);
  }
}

// ------------------------------------------------------------------ signing in and out

function show(signedIn) {
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) $("summary").textContent = "";
}

function signIn() {
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  start();
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer !== null) clearInterval(timer);
  timer = null;
  if (following !== null) following.abort();
  following = null;
  if (watching !== null) watching.abort();
  watching = null;
  forgetAsks();
  view.expanded.clear();
  sessionStorage.removeItem(EXPANDED_KEY);
  view.drawnJobs = "";
  $("login-error").textContent = text(why);
  show(false);
}

function start() {
  show(true);
  refresh();
  if (timer === null) timer = setInterval(refresh, REFRESH_MS);
  if (following === null) {
    following = new AbortController();
    follow(following);
  }
  if (watching === null) {
    watching = new AbortController();
    watchJobs(watching);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("click", signIn);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn(); });
  $("sign-out").addEventListener("click", () => signOut(""));
  // One listener for the table, whose rows are drawn again as jobs change.
  $("jobs").addEventListener("click", (e) => {
    const button = e.target instanceof Element ? e.target.closest("button.toggle") : null;
    if (button && $("jobs").contains(button)) toggle(button.dataset.job);
  });
  loadExpanded();
  for (const button of document.querySelectorAll("button.fault")) {
    button.addEventListener("click", () => fault(button.dataset.action));
  }
  if (sessionStorage.getItem(TOKEN_KEY)) start(); else show(false);
});
