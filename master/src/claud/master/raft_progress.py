"""The leader's view of one follower, and how fast to feed it.

The decision here is flow control. A follower whose match point is unknown is
*probed*: one append at a time, moving back on each refusal, so a lagging or
diverged follower costs one message per round trip rather than a window of
useless ones. Once an append succeeds at the probe's point the follower is
*replicated to*: up to ``max_inflight`` appends in flight, ``next`` advanced
optimistically. A follower behind the leader's snapshot is sent that snapshot,
and nothing else goes to it until it answers or the snapshot is presumed lost.
What to send, and when a match commits, stay the core's decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Progress", "ProgressState"]


class ProgressState(StrEnum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    next: int
    match: int = 0
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    inflight: list[tuple[int, int]] = field(default_factory=list)  # (last index sent, heartbeat round)
    snapshot_elapsed: int = 0
    active: bool = False  # heard from since the last check-quorum

    # ------------------------------------------------------------ states

    def become_probe(self) -> None:
        """Start again from the last known match (appends in flight are forgotten)."""
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot_elapsed = 0
        self.inflight.clear()

    # ------------------------------------------------------------ sending

    def can_send(self, last_index: int, max_inflight: int) -> bool:
        """Whether another append may go now. A probe goes even with nothing
        new (it finds the match point); replication waits for new entries."""
        if self.state is ProgressState.SNAPSHOT:
            return False
        if self.state is ProgressState.PROBE:
            return not self.probe_sent
        return len(self.inflight) < max_inflight and self.next <= last_index

    def sent(self, last: int, heartbeat_round: int) -> None:
        """An append ending at ``last`` went out."""
        if self.state is ProgressState.PROBE:
            self.probe_sent = True
        else:
            self.next = last + 1
            self.inflight.append((last, heartbeat_round))

    # ------------------------------------------------------------ answers and time

    def acked(self, match_index: int) -> bool:
        """The follower holds the leader's log up to ``match_index``; True when
        that moved the match point (a commit may follow)."""
        advanced = match_index > self.match
        if advanced:
            self.match = match_index
        if self.state is ProgressState.PROBE and match_index >= self.next - 1:
            # The probe found the match point: switch to pipelining.
            self.become_replicate()
        self.inflight = [f for f in self.inflight if f[0] > match_index]
        self.next = max(self.next, self.match + 1)
        return advanced

    def probe_from(self, next_index: int) -> None:
        """A probe was refused: the next one goes from ``next_index``, never
        back past the match point."""
        self.next = max(next_index, self.match + 1)
        self.probe_sent = False

    def snapshot_done(self, match_index: int) -> None:
        """The follower answered a snapshot: probe on from what it now holds."""
        self.match = max(self.match, match_index)
        self.become_probe()

    def heartbeat(self, heartbeat_round: int) -> None:
        """A new heartbeat round: a probe may go again, and appends unanswered
        for a whole heartbeat interval are presumed lost (back to probing)."""
        if self.state is ProgressState.REPLICATE and self.inflight and self.inflight[0][1] <= heartbeat_round - 2:
            self.become_probe()
        self.probe_sent = False

    def tick(self, election_ticks: int) -> None:
        """A snapshot unanswered for an election timeout is presumed lost: the
        next round probes, which sends it again."""
        if self.state is ProgressState.SNAPSHOT:
            self.snapshot_elapsed += 1
            if self.snapshot_elapsed >= election_ticks:
                self.state = ProgressState.PROBE
