"""Prometheus text exposition of the master's tables, without a client library."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from claud.api import JobState, NodeState

if TYPE_CHECKING:
    from claud.master.master import Master


def render_metrics(master: Master) -> str:
    jobs = Counter(job.state for job in master.state.jobs.values())
    slaves = Counter(
        NodeState.DRAINING if slave.draining and slave.state == NodeState.ALIVE else slave.state
        for slave in master.state.slaves.values()
    )
    lines = [
        "# HELP claud_jobs Jobs by state.",
        "# TYPE claud_jobs gauge",
        *(f'claud_jobs{{state="{s.value}"}} {jobs.get(s, 0)}' for s in JobState),
        "# HELP claud_slaves Slaves by state.",
        "# TYPE claud_slaves gauge",
        *(f'claud_slaves{{state="{s.value}"}} {slaves.get(s, 0)}' for s in NodeState),
        "# HELP claud_commit_index Index of the last committed log entry.",
        "# TYPE claud_commit_index gauge",
        f"claud_commit_index {master.commit_index}",
        "# HELP claud_term Current leadership term.",
        "# TYPE claud_term gauge",
        f"claud_term {master.term}",
        "# HELP claud_rejected_entries_total Committed log entries this master could not apply "
        "(skipped alike on every master).",
        "# TYPE claud_rejected_entries_total counter",
        f"claud_rejected_entries_total {master.state.rejected_entries}",
        "# HELP claud_is_leader 1 when this master is the leader.",
        "# TYPE claud_is_leader gauge",
        f"claud_is_leader {int(master.is_leader)}",
    ]
    return "\n".join(lines) + "\n"
