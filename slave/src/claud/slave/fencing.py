"""The fencing lease: how long this slave may keep jobs running without a leader.

The leader declares a silent slave dead (and runs its jobs elsewhere) only
after a timeout longer than the lease it hands out. So if the slave stops its
containers once the lease is over, a job never runs in two places at once.

The lease is measured from when the successful request was *sent*: the master
granted it at some moment after that, so counting from the send can only end
the lease early, never late. All times are ``time.monotonic()`` seconds, so a
wall-clock jump cannot stretch it.
"""

from __future__ import annotations


class Lease:
    """Expires ``seconds`` after the send time of the last request a leader answered."""

    def __init__(self, seconds: float, now: float) -> None:
        # Before any reply, the process start counts as the last success: a slave
        # restarted into a partition still stops its old containers in time.
        self._seconds = seconds
        self._last_success = now

    @property
    def seconds(self) -> float:
        return self._seconds

    @property
    def deadline(self) -> float:
        return self._last_success + self._seconds

    def renew(self, sent_at: float, seconds: float) -> None:
        # A long poll answered now was sent long ago; it must not pull the
        # deadline back behind what a recent heartbeat already earned.
        self._last_success = max(self._last_success, sent_at)
        self._seconds = seconds

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def remaining(self, now: float) -> float:
        return self.deadline - now
