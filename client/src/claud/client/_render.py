"""How the CLI shows things to a human: rich tables, one line per event or state change.

Everything here returns renderables or strings; writing them out, and
choosing JSON instead, is the CLI's business. User-supplied text (job names,
messages, labels) always goes into :class:`rich.text.Text`, never through
markup, so a job called ``[red]x`` prints as typed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from claud.api.jobs import AllocationView, JobEvent, JobState, JobVersionView, JobView, PortView, RolloutState
from claud.api.nodes import ClusterView, MemberList, MemberView, NodeState, NodeView
from claud.client._events import Event
from claud.client.verify import Verdict

JOB_STATE_STYLES: Mapping[JobState, str] = {
    JobState.PENDING: "yellow",
    JobState.SCHEDULED: "cyan",
    JobState.STARTING: "cyan",
    JobState.RUNNING: "green",
    JobState.COMPLETED: "bold green",
    JobState.FAILED: "bold red",
    JobState.STOPPING: "magenta",
    JobState.STOPPED: "magenta",
    JobState.LOST: "red",
}

NODE_STATE_STYLES: Mapping[NodeState, str] = {
    NodeState.ALIVE: "green",
    NodeState.SUSPECT: "yellow",
    NodeState.DEAD: "bold red",
    NodeState.DRAINING: "magenta",
}

ROLLOUT_STYLES: Mapping[RolloutState, str] = {
    RolloutState.RUNNING: "yellow",
    RolloutState.COMPLETE: "green",
    RolloutState.FAILED: "bold red",
}

HEALTH_STYLES: Mapping[str, str] = {"healthy": "green", "unhealthy": "red"}

NONE = "-"
#: Characters of a command shown in ``claud job history`` before it is cut.
SHORT_COMMAND = 40


def text(value: Any, style: str = "") -> Text:
    return Text(NONE if value is None or value == "" else str(value), style=style)


def job_state(state: JobState) -> Text:
    return Text(state.value, style=JOB_STATE_STYLES.get(state, ""))


def timestamp(at: datetime | None) -> str:
    """UTC, to the second: the same on every operator's screen and in every log."""
    if at is None:
        return NONE
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(at: datetime | None, now: datetime | None = None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long ago, as kubectl shows it."""
    if at is None:
        return NONE
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return duration(((now or datetime.now(UTC)) - at).total_seconds())


def duration(total: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: whole units, rounded down."""
    seconds = max(0, int(total))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def pairs(mapping: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in mapping.items()) or NONE


def replicas(job: JobView) -> str:
    """``running/desired``, e.g. ``2/3``.

    A master from before replicas sends neither number: its one allocation is
    running when the job is, and the spec's count is what it wants."""
    fields = job.model_fields_set
    running = job.running if "running" in fields else int(job.state is JobState.RUNNING)
    desired = job.desired if "desired" in fields else job.count
    return f"{running}/{desired}"


def jobs_table(jobs: Iterable[JobView]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "TYPE", "STATE", "NODE", "RUNNING", "ATTEMPTS", "EXIT", "AGE", "INFO"):
        table.add_column(column, no_wrap=column != "INFO")
    for job in jobs:
        table.add_row(
            text(job.id),
            text(job.name),
            text(job.type.value),
            job_state(job.state),
            text(job.node_id),
            text(replicas(job)),
            text(job.attempts),
            text(job.exit_code),
            text(age(job.created_at)),
            text(job.pending_reason or job.message),
        )
    return table


def job_details(job: JobView) -> RenderableType:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    rows: list[tuple[str, Text]] = [
        ("ID", text(job.id)),
        ("Name", text(job.name)),
        ("State", job_state(job.state)),
        ("Version", text(job.version)),
        ("Replicas", text(f"{replicas(job)} running")),
        ("Type", text(job.type.value)),
        ("Image", text(job.image)),
        ("Command", text(" ".join(job.command) if job.command else "(image default)")),
        ("Resources", text(f"{job.resources.cpu:g} cpu, {job.resources.memory_mb} MiB")),
        ("Restart", text(f"{job.restart.policy.value}, max retries {job.restart.max_retries}")),
        ("Constraints", text(pairs(job.constraints.labels))),
        ("Env", text(pairs(job.env))),
        ("Node", text(job.node_id)),
        ("Container", text(job.container_id)),
        ("Attempts", text(job.attempts)),
        ("Exit code", text(job.exit_code)),
        ("Created", text(timestamp(job.created_at))),
        ("Updated", text(timestamp(job.updated_at))),
    ]
    for port in job.ports:
        host = "dynamic" if port.host == 0 else str(port.host)
        where = port.address or f"(not placed; host port {host})"
        rows.append((f"Port {port.name}", text(f"{where} -> container {port.container}/tcp")))
    if job.check is not None:
        health = job.health.value if job.health else "not checked yet"
        style = HEALTH_STYLES.get(health, "")
        rows.append(("Health", text(f"{health} ({job.check.kind} check)", style)))
    for volume in job.volumes:
        source = f"volume {volume.name}" if volume.name else f"host {volume.host_path}"
        rows.append(("Volume", text(f"{source} at {volume.path}{' (read-only)' if volume.read_only else ''}")))
    if job.pending_reason:
        rows.append(("Pending", text(job.pending_reason, "yellow")))
    if job.message:
        rows.append(("Message", text(job.message)))
    if job.rollout is not None:
        rows.append(("Rollout", rollout_line(job)))
    for label, value in rows:
        facts.add_row(label, value)
    parts: list[RenderableType] = [facts]
    if job.allocations:
        parts += [Text(), allocations_table(job.allocations)]
    if job.events:
        parts += [Text(), events_table(job)]
    return parts[0] if len(parts) == 1 else Group(*parts)


def rollout_line(job: JobView) -> Text:
    """``v3 running: 1 of 3 replaced`` (the master's message says how far it got)."""
    rollout = job.rollout
    assert rollout is not None
    why = f": {rollout.message}" if rollout.message else ""
    return text(f"v{rollout.version} {rollout.state.value}{why}", ROLLOUT_STYLES.get(rollout.state, ""))


def addresses(ports: Iterable[PortView]) -> str:
    """``http=10.0.0.5:21417,admin=...``: where each published port of an allocation is reached."""
    return ",".join(f"{port.name}={port.address}" for port in ports if port.address) or NONE


def allocations_table(allocations: Iterable[AllocationView]) -> Table:
    """One line per allocation: which copy, which attempt, where it runs and how it is."""
    table = Table(title="Allocations", title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in ("INDEX", "ID", "VERSION", "STATE", "SLAVE", "HEALTH", "ADDRESSES", "INFO"):
        table.add_column(column, no_wrap=column != "INFO")
    for alloc in sorted(allocations, key=lambda a: a.index):
        health = alloc.health.value if alloc.health else None
        table.add_row(
            text(alloc.index),
            text(alloc.id),
            text(alloc.version),
            job_state(alloc.state),
            text(alloc.slave_id),
            text(health, HEALTH_STYLES.get(health or "", "")),
            text(addresses(alloc.ports)),
            text(alloc.pending_reason or alloc.message),
        )
    return table


def events_table(job: JobView) -> Table:
    events = Table(
        title="Events", title_justify="left", box=None, header_style="bold", pad_edge=False
    )
    # Which allocation an event is about matters once there are several; one alone needs no column.
    by_index = len(job.allocations) > 1 or any(event.index for event in job.events or ())
    columns = ("TIME", "STATE", *(("INDEX",) if by_index else ()), "ATTEMPT", "NODE", "MESSAGE")
    for column in columns:
        events.add_column(column, no_wrap=column != "MESSAGE")
    for event in job.events or ():
        events.add_row(
            text(timestamp(event.at)),
            job_state(event.state),
            *((text(event.index),) if by_index else ()),
            text(event.attempt),
            text(event.node_id),
            text(event.message),
        )
    return events


def short_command(command: list[str]) -> str:
    """The argv on one line, cut at SHORT_COMMAND characters."""
    line = " ".join(command) if command else "(image default)"
    return line if len(line) <= SHORT_COMMAND else line[: SHORT_COMMAND - 1] + "\u2026"


def versions_table(versions: Iterable[JobVersionView]) -> Table:
    """``claud job history``: each version kept, newest first, as the masters list them."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("VERSION", "AT", "STABLE", "IMAGE", "COUNT", "COMMAND"):
        table.add_column(column, no_wrap=column != "COMMAND")
    for version in versions:
        table.add_row(
            text(version.version),
            text(timestamp(version.at)),
            Text("yes", style="green") if version.stable else text("no"),
            text(version.spec.image),
            text(version.spec.count),
            text(short_command(version.spec.command)),
        )
    return table


def job_version_line(job: JobView, what: str) -> str:
    """``job j1 scaled to 3: version 4, 2/3 running, rollout running``: what ``update``,
    ``scale`` and ``revert`` answered."""
    rollout = job.rollout
    rolling = f", rollout {rollout.state.value}" if rollout is not None and rollout.version == job.version else ""
    return f"job {job.id} {what}: version {job.version}, {replicas(job)} running{rolling}"


def nodes_table(nodes: Iterable[NodeView]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = (
        "ID",
        "ROLE",
        "ADDRESS",
        "STATE",
        "CPU FREE",
        "MEM FREE (MiB)",
        "JOBS",
        "LABELS",
        "HEARTBEAT",
    )
    for column in columns:
        table.add_column(column, no_wrap=True)
    for node in nodes:
        res = node.resources
        has_capacity = res.cpu_total > 0 or res.memory_mb_total > 0
        table.add_row(
            text(node.id),
            text(node.role.value),
            text(node.address),
            Text(node.state.value, style=NODE_STATE_STYLES.get(node.state, "")),
            text(f"{res.cpu_free:g}/{res.cpu_total:g}" if has_capacity else None),
            text(f"{res.memory_mb_free}/{res.memory_mb_total}" if has_capacity else None),
            text(node.allocations),
            text(pairs(node.labels)),
            text(f"{age(node.last_heartbeat)} ago" if node.last_heartbeat else None),
        )
    return table


def cluster_view(cluster: ClusterView) -> RenderableType:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    if cluster.leader_id is None:
        leader = Text("none (no quorum, or an election in progress)", style="bold red")
    else:
        leader = text(f"{cluster.leader_id} ({cluster.leader_address or 'address unknown'})")
    facts.add_row("Leader", leader)
    facts.add_row("Term", text(cluster.term))
    facts.add_row("Commit index", text(cluster.commit_index))
    facts.add_row("Quorum", text(f"{cluster.quorum} of {len(cluster.masters)}"))
    gc = cluster.last_gc
    facts.add_row("Last GC", text(
        None if gc is None
        else f"{age(gc.at)} ago: {gc.jobs} jobs, {gc.slaves} slaves (index {gc.index})"
    ))
    masters = Table(
        title="Masters", title_justify="left", box=None, header_style="bold", pad_edge=False
    )
    for column in ("ID", "ADDRESS", "ROLE", "MATCH INDEX", "REACHABLE"):
        masters.add_column(column, no_wrap=True)
    for master in cluster.masters:
        masters.add_row(
            text(master.id),
            text(master.address),
            text(master.role, "bold" if master.role == "leader" else ""),
            text(master.match_index),
            Text("yes", style="green") if master.reachable else Text("no", style="bold red"),
        )
    if cluster.cluster_id is not None:
        facts.add_row("Cluster id", text(cluster.cluster_id))
    if not cluster.members:
        return Group(facts, Text(), masters)
    return Group(facts, Text(), masters, Text(), members_table(cluster.members))


def members_table(members: list[MemberView]) -> Table:
    table = Table(title="Members", title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "ADDRESS", "ROLE", "MATCH INDEX", "MEMBER ID"):
        table.add_column(column, no_wrap=True)
    for member in members:
        table.add_row(
            text(member.id), text(member.address), text(member.role.value, "bold" if member.role == "voter" else ""),
            text(member.match_index), text(member.member_id),
        )
    return table


def member_list(found: MemberList) -> RenderableType:
    if found.cluster_id is None:
        return Text("no configuration yet: the cluster has not bootstrapped (every --cluster-size master must be up)")
    head = text(f"cluster {found.cluster_id}, configuration at index {found.configuration_index}")
    return Group(head, Text(), members_table(found.members))


def job_event_line(job_id: str, event: JobEvent) -> str:
    """One progress line for ``claud run --wait``."""
    where = f" on {event.node_id}" if event.node_id else ""
    why = f": {event.message}" if event.message else ""
    return f"{timestamp(event.at)} job {job_id} {event.state.value}{where}{why}"


def job_state_line(job: JobView) -> str:
    """A progress line when the master gave no events, only the current state."""
    where = f" on {job.node_id}" if job.node_id else ""
    why = f": {job.pending_reason or job.message}" if (job.pending_reason or job.message) else ""
    return f"{timestamp(job.updated_at)} job {job.id} {job.state.value}{where}{why}"


def job_outcome_line(job: JobView) -> str:
    code = f" (exit code {job.exit_code})" if job.exit_code is not None else ""
    why = f": {job.message}" if job.message and job.state is not JobState.COMPLETED else ""
    return f"job {job.id} {job.state.value}{code}{why}"


#: A trace event's own keys, shown first (the rest follow as key=value).
_TRACE_KEYS = ("id", "at", "master", "kind")


def trace_event_line(event: Event) -> str:
    """One line per event of ``claud events --trace``: when, which master, what, its fields."""
    data = event.data if isinstance(event.data, dict) else {"data": event.data}
    at = data.get("at")
    when = (datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]
            if isinstance(at, int | float) and not isinstance(at, bool) and 0 < at < 1e11 else NONE)
    fields = " ".join(f"{key}={json.dumps(value) if isinstance(value, str) and ' ' in value else value}"
                      for key, value in data.items() if key not in _TRACE_KEYS and value is not None)
    return f"{when} master {data.get('master', NONE)} {event.type} {fields}".rstrip()


def cluster_event_line(event: Event) -> str:
    """One line per event of ``claud events``, tolerant of payloads it does not know."""
    data = event.data if isinstance(event.data, dict) else {"message": event.data}
    subject = data.get("id") or data.get("job_id") or data.get("node_id") or NONE
    state = data.get("state") or NONE
    node = data.get("node_id") if event.type == "job" else None
    message = data.get("message") or data.get("pending_reason")
    when = data.get("at") or data.get("updated_at") or data.get("last_heartbeat")
    try:
        at = datetime.fromisoformat(when) if isinstance(when, str) else None
    except ValueError:
        at = None
    where = f" on {node}" if node else ""
    why = f": {message}" if message else ""
    return f"{timestamp(at or datetime.now(UTC))} {event.type} {subject} {state}{where}{why}"


def verdict(found: Verdict) -> RenderableType:
    """``claud verify``: one row per finding, job by job, under a line saying what was judged."""
    window = (f"{timestamp(datetime.fromtimestamp(found.since, UTC))} to "
              f"{timestamp(datetime.fromtimestamp(found.until, UTC))}")
    summary = f"{found.jobs} jobs and {found.containers} containers judged, {window}: "
    if found.ok:
        return Text(summary + "nothing found", style="green")
    counts = {"overlap": len(found.overlaps), "missing": len(found.missing),
              "stuck": len(found.stuck), "unplaceable": len(found.unplaceable)}
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("JOB", "FINDING", "DETAIL"):
        table.add_column(column, no_wrap=column != "DETAIL")
    for row in found.findings():
        table.add_row(text(row["job_id"]), text(row["kind"], FINDING_STYLES[row["kind"]]), text(finding_detail(row)))
    heading = Text(summary + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n), style="bold red")
    return Group(heading, table)


FINDING_STYLES: Mapping[str, str] = {"overlap": "bold red", "missing": "bold red", "stuck": "red",
                                     "unplaceable": "yellow"}


def finding_detail(row: Mapping[str, Any]) -> str:
    kind = row["kind"]
    if kind == "overlap":
        sides = [f"{c['container_id'][:12]} ({c['alloc_id'] or NONE} on {c['slave_id'] or NONE}, "
                 f"{c['start'] or 'before the record'} to {c['end'] or 'still running'})" for c in row["containers"]]
        return f"{row['seconds']:.3f}s at once from {row['began'] or 'the record start'}: " + " and ".join(sides)
    if kind == "missing":
        return "acknowledged, unknown to the masters"
    if kind == "stuck":
        return f"{row['state']} with no transition for {duration(row['seconds'])} (since {row['since']})"
    return f"pending for {duration(row['seconds'])}: {row['reason']}"
