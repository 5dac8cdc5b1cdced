"""Talking to the masters: which one is the leader, and which replies to trust.

The slave knows only the addresses it was given or discovered. Masters name
the leader by *id*, never by address (so masters can sit behind proxies or
NAT, where the address a master knows itself by is not the one the slave
dials), so the client learns which id answers at which of its addresses
(``X-Claud-Master-Id`` on every 200, ``master_id`` in every 421) and follows
a 421 to the address it has learned for ``leader_id``. When it has not
learned that id yet, or a master is down, it simply tries the next address.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pydantic

from claud.api import Assignments, Heartbeat, WatchRequest
from claud.api.protocol import CLUSTER_SECRET_HEADER, HEARTBEAT_PATH, JSON_CONTENT_TYPE, MASTER_ID_HEADER, WATCH_PATH
from claud.daemon.logfmt import log_event

logger = logging.getLogger(__name__)


class MastersUnavailable(Exception):
    """No master gave a leader's answer this round; the message says what each said."""


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


class MasterClient:
    """One HTTP client for all masters, following the leader among known addresses."""

    def __init__(
        self,
        addresses: list[str],
        http: httpx.AsyncClient,
        *,
        secret: str | None = None,
        request_timeout: float = 2.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self._addresses = list(addresses)
        self._http = http
        self._headers = {"Content-Type": JSON_CONTENT_TYPE}
        if secret:
            self._headers[CLUSTER_SECRET_HEADER] = secret
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._current: str | None = self._addresses[0] if self._addresses else None
        self._ids: dict[int, str] = {}  # master id -> the address where it answered
        self._leader: tuple[int | None, str] | None = None

    @property
    def current(self) -> str | None:
        return self._current

    def add_address(self, url: str) -> None:
        """A master learned from discovery: asked like the configured ones from now on."""
        if url not in self._addresses:
            self._addresses.append(url)
            log_event(logger, "master.discovered", address=url)
        if self._current is None:
            self._current = url

    @property
    def known_ids(self) -> dict[int, str]:
        return dict(self._ids)

    @property
    def leader(self) -> tuple[int | None, str] | None:
        """(leader id, address) of the last leader that answered, if any."""
        return self._leader

    def _timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(connect=self._connect_timeout, read=read, write=self._request_timeout, pool=read)

    async def heartbeat(self, heartbeat: Heartbeat) -> Assignments:
        return await self._call(HEARTBEAT_PATH, heartbeat, self._timeout(self._request_timeout))

    async def watch(self, request: WatchRequest) -> Assignments:
        # The master may legitimately hold the request for wait_seconds.
        read = request.wait_seconds + self._request_timeout
        return await self._call(WATCH_PATH, request, self._timeout(read))

    def _learn(self, master_id: int, address: str) -> None:
        # An id moves if a master was re-addressed; the newest sighting wins.
        for known_id, known_address in list(self._ids.items()):
            if known_address == address and known_id != master_id:
                del self._ids[known_id]
        self._ids[master_id] = address

    def _after(self, address: str | None) -> list[str]:
        """Every address in rotation order, starting after ``address``."""
        i = self._addresses.index(address) if address in self._addresses else -1
        return self._addresses[i + 1 :] + self._addresses[: i + 1]

    def _next_untried(self, after: str, tried: set[str]) -> str | None:
        candidates = [a for a in self._after(after) if a not in tried]
        # Addresses whose master we know to be a follower are the worst bets.
        unknown = [a for a in candidates if a not in self._ids.values()]
        preferred = unknown or candidates
        return preferred[0] if preferred else None

    def _note_leader(self, leader_id: int | None, address: str) -> None:
        if self._leader != (leader_id, address):
            self._leader = (leader_id, address)
            log_event(logger, "master.leader", leader=leader_id, address=address)

    # `timeout` is httpx's, per request and per phase (connect, read), not a deadline on the call.
    async def _call(self, path: str, body: pydantic.BaseModel, timeout: httpx.Timeout) -> Assignments:  # noqa: ASYNC109
        content = body.model_dump_json()
        tried: set[str] = set()
        problems: list[str] = []
        address: str | None = self._current
        # A redirect may revisit nothing; each address is asked at most once a round.
        while address is not None:
            tried.add(address)
            try:
                response = await self._http.post(
                    address + path, content=content, headers=self._headers, timeout=timeout
                )
            except httpx.HTTPError as exc:
                problems.append(f"{address}: {_describe(exc)}")
                address = self._give_up_on(address, tried)
                continue

            if response.status_code == 200:
                master_id = _as_int(response.headers.get(MASTER_ID_HEADER))
                try:
                    assignments = Assignments.model_validate_json(response.content)
                except pydantic.ValidationError as exc:
                    problems.append(f"{address}: malformed assignments ({exc.error_count()} errors)")
                    address = self._give_up_on(address, tried)
                    continue
                if master_id is None:
                    master_id = assignments.leader_id
                if master_id is not None:
                    self._learn(master_id, address)
                self._current = address
                self._note_leader(master_id, address)
                return assignments

            if response.status_code == 421:
                payload = self._json(response)
                master_id = _as_int(payload.get("master_id"))
                if master_id is not None:
                    self._learn(master_id, address)
                leader_id = _as_int(payload.get("leader_id"))
                leader_address = self._ids.get(leader_id) if leader_id is not None else None
                problems.append(f"{address}: not the leader (leader_id={leader_id})")
                if leader_address is not None and leader_address not in tried:
                    address = leader_address
                else:
                    address = self._next_untried(address, tried)
                continue

            problems.append(f"{address}: HTTP {response.status_code} {self._error_text(response)}")
            if response.status_code >= 500:
                address = self._give_up_on(address, tried)
            else:
                # A 4xx (bad secret, unknown endpoint) says nothing about this
                # master's health: ask the others, but keep it as the first choice.
                address = self._next_untried(address, tried)

        raise MastersUnavailable("; ".join(problems) or "no master address")

    def _give_up_on(self, address: str, tried: set[str]) -> str | None:
        if not self._addresses:
            return None
        # A master that is down or overloaded should not be the first one asked
        # next time, or every heartbeat would pay its timeout first.
        if address == self._current:
            self._current = self._after(address)[0]
        return self._next_untried(address, tried)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return payload if isinstance(payload, dict) else {}

    @classmethod
    def _error_text(cls, response: httpx.Response) -> str:
        error = cls._json(response).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error.get("code", "")) + ": " + str(error["message"])
        return response.text[:200]


class ReplyGate:
    """Refuses replies older than the one already applied.

    Terms never go back: a reply carrying a lower term than the highest this
    agent has seen comes from a deposed leader, which may no longer renew
    anything, so it is refused however often it repeats (and with it the lease
    renewal it would bring). Within one term the heartbeat and the watch run
    concurrently, so an older desired set can arrive after a newer one;
    applying it would stop a container that was just started. This assumes a
    leader's version never decreases within its term; should a master break
    that (say, a counter reset), it would repeat the lower version on every
    reply, so ``tolerance`` consecutive lower versions *of the same term* are
    believed rather than ignored forever.
    """

    def __init__(self, tolerance: int = 3) -> None:
        self._tolerance = tolerance
        self._term = -1
        self._version = -1
        self._behind = 0

    @property
    def version(self) -> int:
        return self._version

    @property
    def term(self) -> int:
        """The highest term seen; -1 before any reply."""
        return self._term

    def admit(self, assignments: Assignments) -> bool:
        if assignments.term < self._term:
            return False
        if assignments.term > self._term or assignments.version >= self._version:
            self._behind = 0
        else:
            self._behind += 1
            if self._behind < self._tolerance:
                return False
            log_event(
                logger,
                "master.version_reset",
                logging.WARNING,
                term=assignments.term,
                version=assignments.version,
                previous_version=self._version,
            )
            self._behind = 0
        self._term, self._version = assignments.term, assignments.version
        return True
