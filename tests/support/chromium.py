"""Headless Chromium driven over the DevTools protocol, through a pipe.

``--remote-debugging-pipe`` makes Chromium read protocol commands on fd 3 and
write answers and events on fd 4, each a JSON message ended by a NUL byte: no
port, no WebSocket library. Only what the dashboard tests need is here.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


class ChromiumUnavailable(RuntimeError):
    """No Chromium binary on this machine."""


def chromium_binary() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome")
    return next((found for name in names if (found := shutil.which(name))), None)


class Chromium:
    def __init__(self) -> None:
        binary = chromium_binary()
        if binary is None:
            raise ChromiumUnavailable("chromium is not installed (apt-get install -y chromium)")
        self._profile = tempfile.mkdtemp(prefix="claud-chromium-")
        commands_r, self._commands = os.pipe()
        self._events, events_w = os.pipe()
        # Above 9 so that moving them onto 3 and 4 never closes one of them.
        commands_r, events_w = (self._high(fd) for fd in (commands_r, events_w))
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}", "about:blank"]  # fmt: skip
        # Chromium wants the pipe on fds 3 and 4 exactly; bash puts it there (dash cannot name fds above 9).
        script = f'exec "$@" 3<&{commands_r} 4>&{events_w} {commands_r}<&- {events_w}>&-'
        with open(Path(self._profile) / "stderr.log", "wb") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                ["bash", "-c", script, "bash", *argv], pass_fds=(commands_r, events_w),
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        os.close(commands_r)
        os.close(events_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    @staticmethod
    def _high(fd: int) -> int:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return high

    # ------------------------------------------------------------------ protocol

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 20) -> dict[str, Any]:
        """One command; its result (or AssertionError with the protocol's error)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("chromium did not answer in time")
            ready, _, _ = select.select([self._events], [], [], left)
            if ready:
                chunk = os.read(self._events, 1 << 16)
                if not chunk:
                    raise AssertionError(f"chromium exited: {self.stderr()[-2000:]}")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def stderr(self) -> str:
        try:
            return (Path(self._profile) / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ pages

    def open(self, url: str) -> str:
        """A new tab at ``url``; its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Runtime.enable", session=session)
        self.send("Log.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of ``expression`` in the page (awaited when it is a promise)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=session)  # fmt: skip
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def resize(self, session: str, width: int, height: int) -> None:
        """Give the page a viewport of ``width`` x ``height`` CSS pixels."""
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)  # fmt: skip

    def screenshot(self, session: str, path: Path) -> None:
        """Save what the page shows now as a PNG."""
        data = self.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        path.write_bytes(base64.b64decode(data))

    def console_errors(self) -> list[str]:
        """Errors the pages reported so far: uncaught exceptions, console.error, and the
        browser's own error entries (a refused request, a policy violation)."""
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError, OSError):
                self.send("Browser.close", timeout=5)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for fd in (self._commands, self._events):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
