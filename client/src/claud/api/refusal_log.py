"""Rate-limited logging of refused requests, shared by masters and slaves."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from claud.api.logfmt import log_event


class RefusalLog:
    """At most one ``auth.refused`` line per client address per ``every`` seconds.

    A scanner or a misconfigured slave would otherwise write a WARNING per
    request; the line that is written counts the refusals it stands for. The
    table is bounded so that many addresses cannot grow it without end.
    """

    MAX_CLIENTS = 4096

    def __init__(self, logger: logging.Logger, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self.every, self._clock = logger, every, clock
        self._clients: dict[str, tuple[float, int]] = {}  # address -> (last logged at, suppressed since)

    def refused(self, client: str, **fields: object) -> bool:
        """Count one refusal; log it (with the suppressed count) when due. True when logged."""
        now = self._clock()
        last = self._clients.get(client)
        if last is not None and now - last[0] < self.every:
            self._clients[client] = (last[0], last[1] + 1)
            return False
        if last is None and len(self._clients) >= self.MAX_CLIENTS:
            self._forget_quiet(now)
        log_event(self._log, "auth.refused", logging.WARNING, **fields, client=client,
                  suppressed=last[1] if last else 0)
        self._clients[client] = (now, 0)
        return True

    def _forget_quiet(self, now: float) -> None:
        quiet = [c for c, (at, _) in self._clients.items() if now - at >= self.every]
        for client in quiet or list(self._clients)[: self.MAX_CLIENTS // 2]:
            del self._clients[client]
