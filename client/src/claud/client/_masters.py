"""Which master to ask next, and when to give up.

Pure bookkeeping, no I/O: the sync and the async client drive the same
:class:`Failover` and only differ in how they send and how they sleep.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence

import httpx

from claud.client.errors import ClaudError, Unreachable, Untrusted

DEFAULT_MASTER = "http://127.0.0.1:8700"

#: The SDK says on this logger (at INFO) when it retries on another master or
#: follows a job's next attempt; silent unless the application configures
#: logging (the CLI prints these notes on stderr).
log = logging.getLogger("claud.client")
log.addHandler(logging.NullHandler())

# Between two full rounds over the masters; the first round has no pause, so
# one dead master costs nothing when another is up.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 2.0


def parse_masters(masters: str | Sequence[str] | None) -> tuple[str, ...]:
    """Turn ``"a:8700,b:8700"`` or ``["http://a:8700", ...]`` into base URLs.

    ``None`` falls back to ``$CLAUD_MASTERS``, then to :data:`DEFAULT_MASTER`,
    so a script and the CLI find the same cluster without being told twice.
    """
    if masters is None:
        masters = os.environ.get("CLAUD_MASTERS") or DEFAULT_MASTER
    if isinstance(masters, str):
        masters = [masters]
    urls: list[str] = []
    for entry in masters:
        for address in entry.split(","):
            address = address.strip()
            if address:
                url = _base_url(address)
                if url not in urls:
                    urls.append(url)
    if not urls:
        raise ValueError("no master address given")
    return tuple(urls)


def _base_url(address: str) -> str:
    candidate = address if "://" in address else f"http://{address}"
    try:
        url = httpx.URL(candidate)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{address!r} is not a master address: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"{address!r} is not a master address (expected host:port or http[s]://host:port)"
        )
    return candidate.rstrip("/")


class MasterRing:
    """The masters' base URLs, starting each request at the last one that answered.

    Sticking to the master that worked keeps a healthy client on one
    connection; a failed master is skipped for the rest of the request only,
    so a restarted master is used again as soon as the others fail.
    """

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = tuple(urls)
        self._preferred = 0

    def in_order(self) -> list[str]:
        start = self._preferred
        return [*self.urls[start:], *self.urls[:start]]

    def prefer(self, url: str) -> None:
        self._preferred = self.urls.index(url)


class Failover:
    """One request's walk over the masters until one answers or time is up.

    Iterating yields ``(master_url, pause_before)``; the caller reports each
    outcome with :meth:`unreachable` or :meth:`unavailable` and, when nothing
    answered, raises :meth:`exhausted`. The first round tries every master
    whatever the deadline (a request always gets a fair chance); later rounds
    back off exponentially, at least as long as a master's ``Retry-After``.
    """

    def __init__(
        self,
        ring: MasterRing,
        deadline_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ring = ring
        self._clock = clock
        self._deadline = clock() + deadline_seconds
        self._reasons: dict[str, str] = {}
        self._unavailable: ClaudError | None = None
        self._untrusted: dict[str, str] = {}
        self._retry_after: float | None = None
        self._last_failure: tuple[str, str] | None = None
        self._noted: set[tuple[str, str]] = set()

    def __iter__(self) -> Iterator[tuple[str, float]]:
        backoff = FIRST_BACKOFF
        pause = 0.0
        first_round = True
        while True:
            for url in self._ring.in_order():
                if not first_round:
                    remaining = self._deadline - self._clock()
                    if remaining <= 0:
                        return
                    pause = min(pause, remaining)
                self._note_retry(url, pause)
                yield url, pause
                pause = 0.0
            if len(self._untrusted) == len(self._ring.urls):
                return  # a certificate that failed verification fails again: no point waiting
            first_round = False
            pause = max(backoff, self._retry_after or 0.0)
            self._retry_after = None
            backoff = min(backoff * 2, MAX_BACKOFF)

    def reached(self, url: str) -> None:
        self._ring.prefer(url)

    def unreachable(self, url: str, reason: str) -> None:
        self._reasons[url] = reason
        self._last_failure = (url, reason)

    def untrusted(self, url: str, reason: str) -> None:
        """The master's TLS certificate failed verification: try the others, but not again."""
        self.unreachable(url, reason)
        self._untrusted[url] = reason

    def unavailable(self, url: str, error: ClaudError, retry_after: float | None) -> None:
        """A master answered but cannot serve (503 and friends): try another."""
        self._reasons[url] = str(error)
        self._last_failure = (url, str(error))
        self._unavailable = error
        if retry_after is not None:
            self._retry_after = max(self._retry_after or 0.0, retry_after)

    def _note_retry(self, url: str, pause: float) -> None:
        """Log a retry once per distinct failure, so a dead master is one line, not one per round."""
        failure, self._last_failure = self._last_failure, None
        if failure is None or failure in self._noted:
            return
        self._noted.add(failure)
        failed_url, reason = failure
        where = "" if url == failed_url else f" on {url}"
        when = f" in {pause:.1f}s" if pause >= 0.05 else ""
        log.info("%s: %s; retrying%s%s…", failed_url, reason, where, when)

    def exhausted(self) -> ClaudError:
        """The error to raise once no master served the request.

        A master that answered "no leader" tells more than one that did not
        answer at all, so it wins: the cluster is there but cannot commit.
        """
        if self._unavailable is not None:
            return self._unavailable
        if self._untrusted and set(self._untrusted) == set(self._reasons):
            listed = ", ".join(f"{url} ({reason})" for url, reason in self._untrusted.items())
            return Untrusted(
                f"no master's TLS certificate could be verified: {listed}; give the cluster's CA "
                "with --ca-cert or CLAUD_CACERT",
                reasons=self._untrusted,
            )
        listed = ", ".join(f"{url} ({reason})" for url, reason in self._reasons.items())
        return Unreachable(f"no master reachable: {listed}", reasons=self._reasons)
