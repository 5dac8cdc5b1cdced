"""The dashboard in a real browser (headless Chromium): it holds no token in
its URL, and values a job's submitter chose render as text, never as markup.

The payloads would, if any ran, change ``document.title`` or make the browser
request a URL on a local listener this test watches; neither may happen.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

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
        assert "location" not in code  # the token is never read from (or put in) a URL
        assert "innerHTML" not in code and "insertAdjacentHTML" not in code and "document.write" not in code
    finally:
        cluster.close()


def test_hostile_job_values_render_as_text_and_run_nothing(
    tmp_path: Path, browser: Chromium, listener: Listener
) -> None:
    cluster = Cluster(tmp_path)
    try:
        master = cluster.start_master(1)
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
        httpx.get(f"http:{beacon}/probe", timeout=5)  # the listener works...
        assert listener.hits == ["/probe"]
        listener.hits.clear()  # ...and from now on must hear nothing

        session = browser.open(master.url + "/ui")
        wait_until(lambda: browser.evaluate(session, "!document.getElementById('login').hidden"), 20,
                   what="the page asks for the token")
        assert browser.evaluate(session, "document.getElementById('board').hidden") is True
        # What a user does: paste the token, press the button.
        browser.evaluate(session, f"""(() => {{
            document.getElementById('token').value = {cluster.token!r};
            document.getElementById('sign-in').click(); }})()""")
        text_of_jobs = "document.getElementById('jobs').textContent"
        wait_until(lambda: all(browser.evaluate(session, f"{text_of_jobs}.includes({value!r})")
                               for value in hostile),
                   20, what="the hostile values shown, as text")

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
