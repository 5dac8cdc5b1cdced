// The dashboard holds no data of its own: it asks for the API token, keeps it
// in sessionStorage (never in a URL), and reads the authenticated /v1 API.
// Every value reaches the page as text (textContent), never as markup, and
// only known state names become class names.
"use strict";

const TOKEN_KEY = "claud-token";
const REFRESH_MS = 1000;
const MAX_JOBS = 200;
const STATES = new Set(["pending", "scheduled", "starting", "running", "completed", "failed", "stopping",
  "stopped", "lost", "alive", "suspect", "dead", "draining"]);

let timer = null;

function $(id) { return document.getElementById(id); }

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function labels(map) {
  return Object.entries(map || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

function fill(table, head, rows) {
  const header = document.createElement("tr");
  for (const name of head) {
    const th = document.createElement("th");
    th.textContent = name;
    header.appendChild(th);
  }
  const body = rows.map((row) => {
    const tr = document.createElement("tr");
    for (const value of row) {
      const td = document.createElement("td");
      td.textContent = text(value);
      if (STATES.has(td.textContent)) td.classList.add(td.textContent);
      tr.appendChild(td);
    }
    return tr;
  });
  table.replaceChildren(header, ...body);
}

class Unauthorized extends Error {}

async function get(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + token, Accept: "application/json" },
    credentials: "omit", cache: "no-store", redirect: "error",
  });
  if (response.status === 401) throw new Unauthorized("the master refused this token");
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

async function refresh() {
  try {
    const [c, n, j] = await Promise.all([get("/v1/cluster"), get("/v1/nodes"), get("/v1/jobs")]);
    $("cluster").textContent = `leader ${text(c.leader_id)} · term ${text(c.term)} · commit index ${text(c.commit_index)}`;
    fill($("nodes"), ["id", "role", "state", "address", "labels", "cpu free", "memory free (MiB)"],
      n.nodes.map((x) => [x.id, x.role, x.state, x.address, labels(x.labels),
        `${text(x.resources?.cpu_free)}/${text(x.resources?.cpu_total)}`,
        `${text(x.resources?.memory_mb_free)}/${text(x.resources?.memory_mb_total)}`]));
    fill($("jobs"), ["id", "name", "image", "state", "node", "constraints", "attempts", "exit", "reason"],
      j.jobs.slice(-MAX_JOBS).reverse().map((x) => [x.id, x.name, x.image, x.state, x.node_id,
        labels(x.constraints?.labels), x.attempts, x.exit_code, x.pending_reason || x.message]));
    $("error").textContent = "";
  } catch (err) {
    if (err instanceof Unauthorized) {
      signOut(err.message);
    } else {
      $("error").textContent = text(err.message);
    }
  }
}

function show(signedIn) {
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
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
  $("login-error").textContent = text(why);
  show(false);
}

function start() {
  show(true);
  refresh();
  if (timer === null) timer = setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("click", signIn);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn(); });
  $("sign-out").addEventListener("click", () => signOut(""));
  if (sessionStorage.getItem(TOKEN_KEY)) start(); else show(false);
});
