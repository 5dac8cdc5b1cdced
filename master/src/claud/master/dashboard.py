"""The live dashboard page: static HTML that polls the API with the user's token."""

DASHBOARD_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>CLAUD</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
.running,.alive,.completed{color:#080}.failed,.dead,.lost{color:#b00}.pending,.suspect,.stopping,.draining{color:#a60}
</style></head><body>
<h1>CLAUD</h1><p id="cluster"></p>
<h2>Nodes</h2><table id="nodes"></table>
<h2>Jobs</h2><table id="jobs"></table>
<script>
let token = new URLSearchParams(location.search).get("token") || sessionStorage.getItem("claud-token") || prompt("API token");
sessionStorage.setItem("claud-token", token);
const get = (p) => fetch(p, {headers: {Authorization: "Bearer " + token}}).then(r => r.json());
const esc = (s) => String(s ?? "").replace(/[&<>]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;"}[c]));
function table(el, head, rows) {
  el.innerHTML = "<tr>" + head.map(h => `<th>${h}</th>`).join("") + "</tr>" +
    rows.map(r => "<tr>" + r.map(c => `<td class="${esc(c)}">${esc(c)}</td>`).join("") + "</tr>").join("");
}
async function refresh() {
  const [c, n, j] = await Promise.all([get("/v1/cluster"), get("/v1/nodes"), get("/v1/jobs")]);
  document.getElementById("cluster").textContent = `leader ${c.leader_id} · term ${c.term} · commit index ${c.commit_index}`;
  table(document.getElementById("nodes"), ["id","role","state","address","cpu free","memory free (MiB)"],
    n.nodes.map(x => [x.id, x.role, x.state, x.address, `${x.resources.cpu_free}/${x.resources.cpu_total}`,
                      `${x.resources.memory_mb_free}/${x.resources.memory_mb_total}`]));
  table(document.getElementById("jobs"), ["id","name","state","node","attempts","exit","reason"],
    j.jobs.slice(-200).reverse().map(x => [x.id, x.name, x.state, x.node_id, x.attempts, x.exit_code, x.pending_reason || x.message]));
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
