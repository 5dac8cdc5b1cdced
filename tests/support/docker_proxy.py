"""A unix socket in front of the Docker engine's, which a test can switch off and on.

Give a slave ``--docker-host`` :attr:`DockerSocketProxy.url` and it talks to
the engine only through here. :meth:`off` is an engine that stopped
answering, as far as the agent can tell: the socket refuses every new
connection (the path stays, nothing listens: ``ECONNREFUSED``) and every open
one is cut, events streams included. :meth:`on` listens again at the same
path. The engine itself, and the containers, carry on as they were: only the
agent loses sight of them, which is the fault under test.

Threaded, one pair of pump threads per connection: an agent opens a few dozen
at most.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading

DOCKER_SOCKET = "/var/run/docker.sock"


class DockerSocketProxy:
    def __init__(self, target: str = DOCKER_SOCKET) -> None:
        self.target = target
        self._dir = tempfile.mkdtemp(prefix="claud-dock-")
        self.path = os.path.join(self._dir, "docker.sock")
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        # Bound once, kept for the proxy's whole life: while off it listens on nothing.
        self._bound: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._refuse()  # off until switched on

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    @property
    def is_on(self) -> bool:
        return self._server is not None

    def on(self) -> DockerSocketProxy:
        """Forward new connections to the engine again (idempotent)."""
        with self._lock:
            if self._server is not None:
                return self
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            server.bind(self.path)
            server.listen(128)
            self._server = server
            if self._bound is not None:
                self._bound.close()
                self._bound = None
        threading.Thread(target=self._accept, args=(server,), name="docker-proxy-accept", daemon=True).start()
        return self

    def off(self) -> None:
        """The engine stops answering: new connections refused, every open one cut (idempotent)."""
        with self._lock:
            server, self._server = self._server, None
            conns, self._conns = self._conns, set()
            if server is not None:
                server.close()
                self._refuse()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _refuse(self) -> None:
        # Refused, not missing: a unix socket nobody listens on, as a stopped dockerd
        # leaves it. Bound but never listening, so connect() gets ECONNREFUSED.
        placeholder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        placeholder.bind(self.path)
        self._bound = placeholder

    def close(self) -> None:
        self.off()
        with self._lock:
            if self._bound is not None:
                self._bound.close()
                self._bound = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DockerSocketProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- forwarding ---

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # switched off
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                if self._server is not server:  # switched off meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="docker-proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            # Closed once both directions are done with it: the other pump closes its pair too.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
