"""Rate-limited logging of refused requests, shared by masters and slaves."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from claud.daemon.logfmt import log_event


class RefusalLog:
    """At most one ``auth.refused`` line per client address per ``every`` seconds.

    A scanner or a misconfigured slave would otherwise write a WARNING per
    request; the line that is written counts the refusals it stands for. The
    table is bounded so that many addresses cannot grow it without end.
    """

    MAX_CLIENTS = 4096
    #: Stands for every address the full table has no room for.
    OVERFLOW = "(other addresses)"

    #: Stands for every address the full table has no room for.
    OVERFLOW = "(other addresses)"

    def __init__(self, logger: logging.Logger, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self.every, self._clock = logger, every, clock
        self._clients: dict[str, tuple[float, int]] = {}  # address -> (last logged at, suppressed since)
        self._overflow: tuple[float, int] | None = None  # the same, for the addresses with no room

    def refused(self, client: str, **fields: object) -> bool:
        """Count one refusal; log it (with the suppressed count) when due. True when logged."""
        now = self._clock()
        last = self._clients.get(client)
        overflow = False
        if last is None and len(self._clients) >= self.MAX_CLIENTS:
            self._forget_quiet(now)
            if len(self._clients) >= self.MAX_CLIENTS:
                # No room without forgetting an address still inside its period (which
                # would then log again early): the newcomer shares one line with the rest.
                overflow, client, last = True, self.OVERFLOW, self._overflow
        if last is not None and now - last[0] < self.every:
            self._remember(client, overflow, (last[0], last[1] + 1))
            return False
        log_event(self._log, "auth.refused", logging.WARNING, **fields, client=client,
                  suppressed=last[1] if last else 0)
        self._remember(client, overflow, (now, 0))
        return True

    def _remember(self, client: str, overflow: bool, state: tuple[float, int]) -> None:
        if overflow:
            self._overflow = state
        else:
            self._clients[client] = state

    def _forget_quiet(self, now: float) -> None:
        for client in [c for c, (at, _) in self._clients.items() if now - at >= self.every]:
            del self._clients[client]
