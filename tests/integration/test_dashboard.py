"""The dashboard in a real browser (headless Chromium): it holds no token in
its URL, values a job's submitter chose render as text, never as markup, and a
service's replicas and rollouts are shown as they change.

The payloads would, if any ran, change ``document.title`` or make the browser
request a URL on a local listener this test watches; neither may happen.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from claud.client.cli import CliConfig, cli
from support.chromium import Chromium, ChromiumUnavailable
from support.cluster import Cluster, wait_until

CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")  # fmt: skip


class Listener:
    """An HTTP server on loopback that records every request it gets."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def browser() -> Iterator[Chromium]:
    try:
        chromium = Chromium()
    except ChromiumUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    watched = Listener()
    yield watched
    watched.close()


def test_the_dashboard_is_an_open_page_without_data_under_a_strict_policy(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        master = cluster.start_master(1)
        job = cluster.submit(name="secret-looking-name", env={"DB_PASSWORD": "hunter2"})
        for path, media_type in (("/ui", "text/html"), ("/ui/dashboard.js", "text/javascript"),
                                 ("/ui/dashboard.css", "text/css")):  # fmt: skip
            response = httpx.get(master.url + path, timeout=5)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(media_type)
            assert response.headers["content-security-policy"] == CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            for secret in (cluster.token, job["id"], "secret-looking-name", "hunter2"):
                assert secret not in response.text, (path, secret)
        page = httpx.get(master.url + "/ui", timeout=5).text
        assert re.search(r"<script(?![^>]*\bsrc=)", page) is None  # no inline script
        assert re.search(r"\son[a-z]+\s*=", page) is None  # no inline handler
        code = httpx.get(master.url + "/ui/dashboard.js", timeout=5).text
        # The token is never read from (or put in) a URL ("allocation" is no `location`).
        assert re.search(r"\blocation\b", code) is None
        assert "innerHTML" not in code and "insertAdjacentHTML" not in code and "document.write" not in code
    finally:
        cluster.close()


#: Wraps the page's fetch so that every job view it reads has a failed rollout whose
#: message is ``HOSTILE`` (the master writes rollout messages itself, from numbers and
#: states: this stands for a master that would not).
TAMPER_ROLLOUTS = """(() => {
    const real = window.fetch;
    window.fetch = async (input, init) => {
        const response = await real(input, init);
        if (!/\\/v1\\/jobs(\\/[0-9a-f]+)?$/.test(String(input)) || !response.ok) return response;
        const body = await response.json();
        const tamper = (job) => { job.rollout = {version: job.version, state: "failed", message: HOSTILE,
                                                  updated_at: job.updated_at}; };
        if (Array.isArray(body.jobs)) body.jobs.forEach(tamper); else tamper(body);
        return new Response(JSON.stringify(body), {status: response.status, headers: response.headers});
    };
})()"""

#: Opens every job's allocations, as a user clicking each row's toggle would.
OPEN_ALL = """(() => { let opened = 0;
    for (let b; (b = document.querySelector('#jobs button.toggle[aria-expanded="false"]')); opened++) b.click();
    return opened; })()"""


def test_hostile_job_values_render_as_text_and_run_nothing(
    tmp_path: Path, browser: Chromium, listener: Listener
) -> None:
    cluster = Cluster(tmp_path)
    try:
        master = cluster.start_master(1)
        cluster.start_slave("s1", "--runtime", "simulated")
        beacon = f"//127.0.0.1:{listener.port}"
        # Job names are held to a safe alphabet; label values (63 characters
        # of printable text) and env values are free text, and labels are shown.
        attribute = 'b" onmouseover="document.title=\'pwned\''
        attribute_fetch = f"b\" autofocus onfocus=\"fetch('{beacon}/a')"
        markup = "<img src=x onerror=\"document.title='pwned'\">"
        markup_fetch = f"<img src=x onerror=fetch('{beacon}/i')>"
        script = f"<script>fetch('{beacon}/s')</script>"
        hostile = (attribute, attribute_fetch, markup, markup_fetch, script)
        for i, value in enumerate(hostile):
            cluster.submit(name=f"hostile-{i}", constraints={"labels": {"zone": value}}, env={"X": value})
        # An allocation's message is the runtime's: the simulated one fails a start with the text it is given.
        for i, value in enumerate(hostile):
            cluster.submit(name=f"failing-{i}", type="service", count=2, env={"CLAUD_SIM_START_ERROR": value})
        rollout = "<img src=x onerror=\"document.title='pwned'\"> rollout"
        httpx.get(f"http:{beacon}/probe", timeout=5)  # the listener works...
        assert listener.hits == ["/probe"]
        listener.hits.clear()  # ...and from now on must hear nothing

        session = browser.open(master.url + "/ui")
        wait_until(lambda: browser.evaluate(session, "!document.getElementById('login').hidden"), 20,
                   what="the page asks for the token")
        assert browser.evaluate(session, "document.getElementById('board').hidden") is True
        browser.evaluate(session, TAMPER_ROLLOUTS.replace("HOSTILE", repr(rollout)))
        # What a user does: paste the token, press the button.
        browser.evaluate(session, f"""(() => {{
            document.getElementById('token').value = {cluster.token!r};
            document.getElementById('sign-in').click(); }})()""")
        text_of_jobs = "document.getElementById('jobs').textContent"
        wait_until(lambda: all(browser.evaluate(session, f"{text_of_jobs}.includes({value!r})")
                               for value in hostile),
                   20, what="the hostile values shown, as text")
        # Each job's allocations opened: every allocation's message, and the rollout's, as text.
        wait_until(lambda: browser.evaluate(session, OPEN_ALL) == 0
                   and browser.evaluate(session, "document.querySelectorAll('#jobs tr.alloc').length")
                   == 2 * len(hostile) + len(hostile), 20, what="every job's allocations shown")  # fmt: skip
        alloc_messages = """[...document.querySelectorAll('#jobs tr.alloc')].map(r => r.lastElementChild.textContent)"""
        wait_until(lambda: all(sum(value in m for m in browser.evaluate(session, alloc_messages)) >= 2
                               for value in hostile), 20, what="both allocations' messages of each, as text")
        versions = """[...document.querySelectorAll('#jobs tr.job')].map(r => r.cells[5].textContent)"""
        assert all(v.endswith("failed: " + rollout) for v in browser.evaluate(session, versions))

        # Give every would-be handler its event, then watch two more refreshes.
        refreshes = "performance.getEntriesByType('resource').filter(e => e.name.endsWith('/v1/jobs')).length"
        seen = browser.evaluate(session, refreshes)
        browser.evaluate(session, """(() => { for (const el of document.querySelectorAll('*')) {
            for (const type of ['mouseover', 'mouseenter', 'focus', 'click', 'error', 'load']) {
              if (el.id !== 'sign-out') el.dispatchEvent(new Event(type, {bubbles: true}));
            } } })()""")
        wait_until(lambda: browser.evaluate(session, refreshes) >= seen + 2, 10, what="two more refreshes")

        assert browser.evaluate(session, "document.title") == "CLAUD"
        assert listener.hits == []
        embedded = "document.querySelectorAll('img, script:not([src]), iframe, object').length"
        assert browser.evaluate(session, embedded) == 0
        handlers = browser.evaluate(session, """[...document.querySelectorAll('*')].flatMap(
            el => [...el.attributes].map(a => a.name).filter(n => n.startsWith('on') || n === 'autofocus'))""")
        assert handlers == []
        # The token lives in the tab's sessionStorage, never in the URL.
        assert browser.evaluate(session, "sessionStorage.getItem('claud-token')") == cluster.token
        assert cluster.token not in browser.evaluate(session, "location.href")
        assert "token" not in browser.evaluate(session, "location.search")
    finally:
        cluster.close()


#: Screenshots the browser tests keep for people to look at (a test artifact, not committed).
ARTIFACTS = Path(__file__).resolve().parents[2] / ".build" / "test-artifacts"


def sign_in(browser: Chromium, session: str, token: str) -> None:
    wait_until(lambda: browser.evaluate(session, "!document.getElementById('login').hidden"), 20,
               what="the page asks for the token")
    browser.evaluate(session, f"""(() => {{
        document.getElementById('token').value = {token!r};
        document.getElementById('sign-in').click(); }})()""")


DRAWN = "[...document.querySelectorAll('#masters .master')].map(g => [g.dataset.id, g.dataset.role])"
NAMED = "document.getElementById('leader').textContent"
FACTS = "Object.fromEntries([...document.querySelectorAll('#masters .master')].map(g => [g.dataset.id, " \
        "[...g.querySelectorAll('text.facts')].map(t => t.textContent).join(' | ')]))"


def test_the_live_view_shows_every_master_as_it_says_of_itself(tmp_path: Path, browser: Chromium) -> None:
    """Served by a follower, the view draws the three masters with the leader, and each
    master's own term, vote and indexes (relayed from that master's trace)."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_masters(3)
        cluster.start_slave("s1", "--runtime", "simulated")
        leader = cluster.wait_leader()
        follower = next(m for m in cluster.masters if m is not leader)
        session = browser.open(follower.url + "/ui")
        browser.resize(session, 1280, 800)
        sign_in(browser, session, cluster.token)
        wait_until(lambda: sorted(browser.evaluate(session, DRAWN)) == sorted(
            [str(m.id), "leader" if m is leader else "follower"] for m in cluster.masters), 20,
            what="three masters drawn, the leader as leader")
        assert f"master {leader.id}" in browser.evaluate(session, NAMED)
        summary = browser.evaluate(session, "document.getElementById('summary').textContent")
        assert f"served by master {follower.id} (follower)" in summary
        # Every master's own facts, not only the serving one's: its vote and indexes.
        wait_until(lambda: all("applied" in facts and "voted" in facts
                               for facts in browser.evaluate(session, FACTS).values()), 10,
                   what="each master's term, vote and indexes")  # fmt: skip
        # The trace streams in: appends answered, the slave (on the leader) in the stage.
        listed = "document.getElementById('trace-log').textContent.includes('ok, match')"
        wait_until(lambda: browser.evaluate(session, listed), 10, what="the trace listed")
        assert browser.evaluate(session, "document.querySelectorAll('#slaves .slave').length") == 1
        # Not a demo cluster: the fault buttons are off, and the page says why.
        assert browser.evaluate(session, "[...document.querySelectorAll('button.fault')].every(b => b.disabled)")
        assert "--demo-faults" in browser.evaluate(session, "document.getElementById('fault-state').textContent")
        assert browser.console_errors() == []
    finally:
        cluster.close()


def test_breaking_the_leader_from_the_page_and_from_claud_chaos_shows_the_next_one_within_2s(
    tmp_path: Path, browser: Chromium
) -> None:
    """On a demo cluster the page's buttons do what `claud chaos` does: partitioning the
    leader from the page makes the others elect a new one, which the page names; after
    a heal, `claud chaos kill` of the leader shows the next leader within 2 s of the kill."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_masters(3, "--demo-faults")
        cluster.start_slave("s1", "--runtime", "simulated", "--demo-faults")
        leader = cluster.wait_leader()
        follower = next(m for m in cluster.masters if m is not leader)
        session = browser.open(follower.url + "/ui")
        browser.resize(session, 1280, 800)
        sign_in(browser, session, cluster.token)
        enabled = "[...document.querySelectorAll('button.fault')].every(b => !b.disabled)"
        wait_until(lambda: browser.evaluate(session, enabled), 20, what="the fault buttons on")
        targets = "[...document.getElementById('fault-target').options].map(o => o.value)"
        everyone = sorted([*(str(m.id) for m in cluster.masters), cluster.slaves[0].id])
        wait_until(lambda: sorted(browser.evaluate(session, targets)) == everyone, 10,
                   what="every master and slave as a target")

        def leaders() -> list[int]:
            return [int(i) for i, role in browser.evaluate(session, DRAWN) if role == "leader"]

        # From the page: partition the leader.
        browser.evaluate(session, f"""(() => {{
            document.getElementById('fault-target').value = {str(leader.id)!r};
            document.querySelector('button.fault[data-action=partition]').click(); }})()""")
        state = "document.getElementById('fault-state').textContent"
        wait_until(lambda: "partition" in browser.evaluate(session, state).lower()
                   and "…" not in browser.evaluate(session, state), 10, what="the page to report the partition")
        wait_until(lambda: any(i != leader.id for i in leaders()), 15, what="the page to show another leader")
        browser.evaluate(session, "document.querySelector('button.fault[data-action=heal]').click()")
        wait_until(lambda: "heal" in browser.evaluate(session, state).lower(), 10, what="the page to report the heal")

        # From the CLI: kill the leader; the page names the next one within 2 s of the kill.
        victim = cluster.wait_leader(timeout=15)
        watcher = next(m for m in cluster.masters if m is not victim)
        if watcher is not follower:  # the page's own master must live through the kill
            session = browser.open(watcher.url + "/ui")
            browser.resize(session, 1280, 800)
            sign_in(browser, session, cluster.token)
        wait_until(lambda: leaders() == [victim.id], 15, what="the page to show the leader before the kill")
        config = CliConfig(masters=watcher.url, token=cluster.token)
        result = CliRunner().invoke(cli, ["chaos", "kill", str(victim.id)], obj=config)
        killed = time.monotonic()
        assert result.exit_code == 0, (result.stdout, result.stderr)
        shown_at = None

        def next_leader_shown() -> bool:
            nonlocal shown_at
            shown = leaders()
            if shown and shown != [victim.id] and f"master {shown[0]}" in browser.evaluate(session, NAMED):
                shown_at = time.monotonic()
            return shown_at is not None

        wait_until(next_leader_shown, 15, interval=0.02, what="the page to name a new leader")
        assert shown_at is not None and shown_at - killed < 2.0, f"the page named it {shown_at - killed:.2f} s after"
        wait_until(lambda: "not answering" in browser.evaluate(session, FACTS).get(str(victim.id), ""), 5,
                   what="the page to say the killed master does not answer")
        wait_until(lambda: browser.evaluate(session, "document.getElementById('terms').childElementCount") >= 3, 5,
                   what="the timeline to show the terms of both faults")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(session, ARTIFACTS / "live-view.png")
        assert (ARTIFACTS / "live-view.png").stat().st_size > 10_000
        assert browser.console_errors() == []
    finally:
        cluster.close()


#: Each row of a table as {header: text}: the jobs table's, or an opened job's allocations'.
ROWS = """((table, rows) => { const head = [...table.rows[0].cells].map(c => c.textContent);
    return [...rows].map(r => Object.fromEntries([...r.cells].map((c, i) => [head[i], c.textContent]))); })"""


def job_row(browser: Chromium, session: str, job_id: str) -> dict[str, str] | None:
    rows = browser.evaluate(session, f"""{ROWS}(document.getElementById('jobs'),
        document.querySelectorAll('#jobs tr.job[data-job="{job_id}"]'))""")
    return rows[0] if rows else None


def alloc_rows(browser: Chromium, session: str, job_id: str) -> list[dict[str, str]]:
    inner = f"""document.querySelector('#jobs tr.allocs[data-job="{job_id}"] table')"""
    return browser.evaluate(session, f"""{inner} ? {ROWS}({inner}, {inner}.querySelectorAll('tr.alloc')) : []""")


def test_the_live_view_shows_a_service_s_replicas_their_slaves_and_a_scale(tmp_path: Path, browser: Chromium) -> None:
    """Two replicas on two simulated slaves read 2/2, and opened, each allocation with its
    slave, state and address; a scale to three shows the third (the page asks for the
    job's view again on its events); a new version shows its rollout until it is done."""
    cluster = Cluster(tmp_path)
    try:
        master = cluster.start_master(1)
        slaves = [cluster.start_slave(name, "--runtime", "simulated") for name in ("a", "b")]
        spec = {"name": "web", "image": "claud/busybox:latest", "type": "service", "count": 2, "stop_timeout": 0,
                "env": {"CLAUD_SIM_SECONDS": "inf"}, "ports": [{"name": "http", "container": 8080, "host": 0}],
                "update": {"max_parallel": 1, "min_healthy_time": 0.5, "healthy_deadline": 20}}
        job_id = cluster.submit(**spec)["id"]
        session = browser.open(master.url + "/ui")
        browser.resize(session, 1280, 800)
        sign_in(browser, session, cluster.token)
        wait_until(lambda: (row := job_row(browser, session, job_id)) and row["running"] == "2/2", 20,
                   what="the job's row to read 2/2")
        assert alloc_rows(browser, session, job_id) == []  # closed until asked
        browser.evaluate(session, f"""document.querySelector('#jobs button.toggle[data-job="{job_id}"]').click()""")

        def shown(count: int) -> list[dict[str, str]] | None:
            rows = alloc_rows(browser, session, job_id)
            ok = [r["index"] for r in rows] == [str(i) for i in range(count)] and all(
                r["state"] == "running" and r["ports"].startswith("http ") for r in rows)
            return rows if ok else None

        rows = wait_until(lambda: shown(2), 20, what="both allocations, running")
        view = cluster.job(job_id)
        assert {r["slave"] for r in rows} == {s.id for s in slaves}  # spread, one on each
        for row, alloc in zip(rows, view["allocations"], strict=True):
            assert (row["allocation"], row["slave"]) == (alloc["id"], alloc["slave_id"])
            assert row["ports"] == f"http {alloc['ports'][0]['address']}"
        asks = f"performance.getEntriesByType('resource').filter(e => e.name.endsWith('/v1/jobs/{job_id}')).length"
        asked = browser.evaluate(session, asks)

        scaled = cluster.http.post(f"/v1/jobs/{job_id}/scale", json={"count": 3})
        assert scaled.status_code == 200, scaled.text
        rows = wait_until(lambda: shown(3), 20, what="the third allocation, running")
        assert rows[2]["slave"] in {s.id for s in slaves}
        assert [r["allocation"] for r in rows[:2]] == [a["id"] for a in view["allocations"]]  # nothing replaced
        wait_until(lambda: job_row(browser, session, job_id)["running"] == "3/3", 10, what="the row to read 3/3")
        assert browser.evaluate(session, asks) > asked  # asked again on the job's events
        assert browser.evaluate(session, "document.getElementById('events-state').textContent") == "live"

        # A new version rolls out one allocation at a time: the row says so, then that it is done.
        version = cluster.job(job_id)["version"] + 1
        updated = cluster.http.put(f"/v1/jobs/{job_id}", json={**spec, "count": 3, "env": {
            "CLAUD_SIM_SECONDS": "inf", "VERSION": "two"}})
        assert updated.status_code == 200, updated.text
        wait_until(lambda: job_row(browser, session, job_id)["version"] == f"v{version} rolling out", 10,
                   what="the rollout shown")
        wait_until(lambda: job_row(browser, session, job_id)["version"] == f"v{version} rolled out"
                   and all(r["version"] == f"v{version}" for r in alloc_rows(browser, session, job_id)), 40,
                   what="the rollout done, every allocation at the new version")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(session, ARTIFACTS / "live-view-replicas.png")
        assert browser.console_errors() == []
    finally:
        cluster.close()
