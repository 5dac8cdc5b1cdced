"""The blocking client. :mod:`claud.client._async_client` is its twin, method for method."""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from claud.api.backup import GcResult, RestoreResult, SnapshotHeader
from claud.api.chaos import ChaosAction, ChaosResult
from claud.api.jobs import (
    DEFAULT_EXEC_TIMEOUT,
    ExecResult,
    JobBatchResult,
    JobEvent,
    JobEventList,
    JobList,
    JobSpec,
    JobState,
    JobVersionList,
    JobVersionView,
    JobView,
)
from claud.api.nodes import ClusterView, MemberList, NodeList, NodeView
from claud.api.protocol import ALLOC_ID_HEADER
from claud.client import _backup
from claud.client import _wire as wire
from claud.client._events import Event, EventDecoder
from claud.client._masters import Failover, MasterRing, log, parse_masters
from claud.client._tls import untrusted_reason, verify_setting
from claud.client.errors import ClaudError, WaitTimeout

#: Per request. Connecting is short so that a dead master is skipped quickly;
#: reading is longer because a submit answers only once a quorum has the job.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
#: How long one call keeps trying other masters (an election takes a few seconds).
DEFAULT_FAILOVER_TIMEOUT = 15.0
DEFAULT_POLL_INTERVAL = 0.25


class Client:
    """A connection to a CLAUD cluster through any of its masters.

    ::

        with Client("127.0.0.1:8700,127.0.0.1:8710", token="s3cret") as claud:
            job = claud.submit({"name": "hello", "image": "claud/busybox:latest",
                                "command": ["echo", "hi"]})
            print(claud.wait(job.id).state)

    Any master serves any call (followers forward writes to the leader), so the
    client keeps to the master that last answered and moves on to the next one
    when it is unreachable or answers 503, for up to ``failover_timeout``
    seconds per call. ``masters`` and ``token`` default to ``$CLAUD_MASTERS``
    and ``$CLAUD_TOKEN``. ``https://`` masters are verified against
    ``ca_cert``, a CA bundle file (default ``$CLAUD_CACERT``, else the
    system's CAs); one that fails the check raises
    :class:`~claud.client.errors.Untrusted`. ``client_cert`` and
    ``client_key`` (``$CLAUD_CLIENT_CERT``, ``$CLAUD_CLIENT_KEY``) are
    presented to masters that require a client certificate. ``transport``
    replaces the network, e.g. with an ``httpx.MockTransport`` in tests.
    """

    def __init__(
        self,
        masters: str | Sequence[str] | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        ca_cert: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
    ) -> None:
        self._ring = MasterRing(parse_masters(masters))
        self._failover_timeout = failover_timeout
        if token is None:
            token = os.environ.get("CLAUD_TOKEN")
        self._http = httpx.Client(
            transport=transport,
            verify=verify_setting(ca_cert, client_cert, client_key),
            timeout=timeout,
            headers=wire.auth_headers(token),
            follow_redirects=False,
        )
        self._stream_timeout = wire.streaming_timeout(self._http.timeout)

    @property
    def masters(self) -> tuple[str, ...]:
        """The masters' base URLs, in the order given."""
        return self._ring.urls

    def __repr__(self) -> str:
        return f"Client(masters={list(self.masters)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()

    # --- jobs ---------------------------------------------------------------

    def submit(
        self, spec: JobSpec | Mapping[str, Any], idempotency_key: str | None = None
    ) -> JobView:
        """Submit a job; answers once a quorum of masters has it.

        Without ``idempotency_key`` one is generated for this call, so a retry
        after a lost answer, on this master or another, never creates a
        second job. A dict spec is validated locally first
        (:class:`~claud.client.errors.InvalidSpec` names the field).
        """
        return wire.parse(JobView, self._send(wire.submit(spec, idempotency_key)))

    def submit_batch(
        self, specs: Sequence[JobSpec | Mapping[str, Any]], idempotency_key: str | None = None
    ) -> JobBatchResult:
        """Submit 1-1000 jobs together: all are accepted or none is, as one log entry,
        answered once a quorum has them; ``ids`` follow the order of ``specs``.

        One ``idempotency_key`` (generated when not given) covers the batch and
        every retry of it: job ``i`` is keyed ``<key>/<i>``, so the specs carry
        no key of their own. An invalid spec is an
        :class:`~claud.client.errors.InvalidSpec` naming ``jobs.<i>.<field>``.
        """
        return wire.parse(JobBatchResult, self._send(wire.submit_batch(specs, idempotency_key)))

    def jobs(self, state: JobState | str | None = None) -> list[JobView]:
        """All jobs, or those in ``state``, oldest first; list views carry no events.

        Fetched a page at a time (see :meth:`iter_jobs`), each page from
        whichever master answers.
        """
        return list(self.iter_jobs(state))

    def iter_jobs(
        self, state: JobState | str | None = None, page_size: int = wire.PAGE_SIZE
    ) -> Generator[JobView, None, None]:
        """Like :meth:`jobs`, one page of ``page_size`` jobs requested at a time, as the iteration needs them.

        A job submitted meanwhile shows up if it sorts after the pages already
        read; no job is yielded twice.
        """
        cursor: str | None = None
        while True:
            response = self._send(wire.list_jobs(state, page_size, cursor))
            page = wire.parse(JobList, response)
            yield from page.jobs
            cursor = wire.next_page(page.next, cursor, response)
            if cursor is None:
                return

    def job(self, job_id: str) -> JobView:
        """One job, with every transition it went through in ``events``."""
        return wire.parse(JobView, self._send(wire.get_job(job_id)))

    def job_events(self, job_id: str, page_size: int = wire.PAGE_SIZE) -> list[JobEvent]:
        """Every transition the masters keep of the job (its latest ones), oldest first, a page at a time."""
        events: list[JobEvent] = []
        cursor: str | None = None
        while True:
            response = self._send(wire.job_events(job_id, page_size, cursor))
            page = wire.parse(JobEventList, response)
            events += page.events
            cursor = wire.next_page(page.next, cursor, response)
            if cursor is None:
                return events

    def stop(self, job_id: str) -> JobView:
        """Ask for the job to be stopped; its state becomes ``stopped`` once its container is."""
        return wire.parse(JobView, self._send(wire.stop_job(job_id)))

    def update(self, job_id: str, spec: JobSpec | Mapping[str, Any]) -> JobView:
        """Give the job a new spec, as its next version; answers once a quorum has it.

        A change of ``count`` alone scales; any other change is rolled out by the
        leader, ``update.max_parallel`` allocations at a time (``rollout`` in the
        view follows it). A dict spec is validated locally first
        (:class:`~claud.client.errors.InvalidSpec` names the field);
        :class:`~claud.client.errors.Conflict` once the job is finished or stopping.
        Sent to another master only if the first could not have taken it: a lost
        answer is an error (see :meth:`versions` for what happened).
        """
        return wire.parse(JobView, self._send(wire.update_job(job_id, spec)))

    def scale(self, job_id: str, count: int) -> JobView:
        """Ask for ``count`` allocations (1-100), as a new version; nothing running is replaced.

        Sent once, as :meth:`update` is."""
        return wire.parse(JobView, self._send(wire.scale_job(job_id, count)))

    def versions(self, job_id: str) -> list[JobVersionView]:
        """The job's versions the masters keep (the last 10), newest first, each with its spec."""
        return wire.parse(JobVersionList, self._send(wire.job_versions(job_id))).versions

    def revert(self, job_id: str, version: int) -> JobView:
        """Roll the job back to ``version``'s spec, as a new version (rolled out as an update is).

        :class:`~claud.client.errors.JobNotFound` when that version is not kept
        (:meth:`versions` lists those that are). Sent once, as :meth:`update` is."""
        return wire.parse(JobView, self._send(wire.revert_job(job_id, version)))

    def exec(
        self, job_id: str, command: Sequence[str], alloc: str | None = None, timeout: float = DEFAULT_EXEC_TIMEOUT
    ) -> ExecResult:
        """Run ``command`` (an argv) in the job's running container, through its slave; not interactive.

        ``alloc`` makes sure it runs in that allocation (409 :class:`Conflict` if it is not the running one).
        Answers the exit code and output (each stream cut at 1 MiB, ``truncated`` then). Raises
        :class:`Conflict` (``not_running``) if the job has no running container, and
        :class:`ServerError` (``exec_timeout``) after ``timeout`` seconds (at most 600). The
        command is never sent twice: a lost answer is an error, not a retry on another master.
        """
        return wire.parse(ExecResult, self._send(wire.exec_job(job_id, command, alloc, timeout)))

    def logs(
        self, job_id: str, follow: bool = False, tail: int | None = None, attempt: int | None = None
    ) -> Generator[str, None, None]:
        """The job's output, line by line with line endings kept.

        ``attempt`` (1, 2, ...) picks an earlier attempt's output, while its slave
        still keeps the exited container; it cannot be followed. Without
        ``follow``, the output of the job's latest attempt so far. With
        ``follow``, the iterator waits for the job's container to start,
        streams it, and moves on to each next attempt (a restart is a new
        container) until the job has ended; ``tail`` applies to the first
        attempt shown. Nothing is requested until the first iteration; to stop
        early and release the connection at once, wrap it in
        ``contextlib.closing``.
        """
        if attempt is not None and follow:
            raise ValueError("an earlier attempt has ended: attempt and follow do not go together")
        if not follow:
            yield from self._attempt_logs(job_id, False, tail, attempt)
            return
        streamed: str | None = None
        while (view := self._next_attempt(job_id, streamed)) is not None:
            if streamed is not None:
                log.info("job %s: following attempt %d (%s)…", job_id, view.attempts, view.alloc_id)
            try:
                alloc = yield from self._attempt_logs(job_id, True, tail if streamed is None else None)
            except ClaudError as error:
                if not wire.attempt_ended(error):
                    raise
                alloc = None
            streamed = alloc or view.alloc_id

    def _attempt_logs(
        self, job_id: str, follow: bool, tail: int | None, attempt: int | None = None
    ) -> Generator[str, None, str | None]:
        """One container's output; returns the allocation it came from, when the master names it."""
        response = self._send(wire.job_logs(job_id, follow, tail, attempt))
        buffer = wire.LineBuffer()
        try:
            for chunk in response.iter_text():
                yield from buffer.feed(chunk)
        except httpx.HTTPError as exc:
            raise wire.stream_lost(response, exc) from exc
        finally:
            response.close()
        yield from buffer.flush()
        alloc_id: str | None = response.headers.get(ALLOC_ID_HEADER)
        return alloc_id

    def _next_attempt(self, job_id: str, streamed: str | None) -> JobView | None:
        """Poll until the job has an attempt to stream other than ``streamed``; None once it has ended."""
        while True:
            view = self.job(job_id)
            if wire.attempt_to_follow(view, streamed):
                return view
            if view.state.terminal:
                return None
            time.sleep(DEFAULT_POLL_INTERVAL)

    def watch(
        self,
        job_id: str,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Generator[JobView, None, None]:
        """Yield the job now, then again at each change, and stop after a terminal state.

        Raises :class:`~claud.client.errors.WaitTimeout` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: JobView | None = None
        while True:
            view = self.job(job_id)
            if wire.job_changed(last, view):
                yield view
            last = view
            if view.state.terminal:
                return
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"job {job_id} is still {view.state.value} after {timeout:g}s", job=view
                    )
                pause = min(pause, remaining)
            time.sleep(pause)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> JobView:
        """Block until the job is completed, failed or stopped, and return it."""
        for view in self.watch(job_id, timeout, poll_interval):
            if view.state.terminal:
                return view
        raise AssertionError("watch() ends only after yielding a terminal state")

    # --- nodes and cluster ----------------------------------------------------

    def nodes(self) -> list[NodeView]:
        """Masters by id, then slaves by id, as the answering masters know them (page by page)."""
        return list(self.iter_nodes())

    def iter_nodes(self, page_size: int = wire.PAGE_SIZE) -> Generator[NodeView, None, None]:
        """Like :meth:`nodes`, one page of ``page_size`` nodes requested at a time."""
        cursor: str | None = None
        while True:
            response = self._send(wire.list_nodes(page_size, cursor))
            page = wire.parse(NodeList, response)
            yield from page.nodes
            cursor = wire.next_page(page.next, cursor, response)
            if cursor is None:
                return

    def drain(self, node_id: str, deadline: float | None = None) -> NodeView:
        """Move the slave's jobs elsewhere and place no new ones on it.

        With ``deadline`` (seconds), batch jobs may finish until then; what
        still runs at the deadline is killed and placed elsewhere."""
        return wire.parse(NodeView, self._send(wire.drain(node_id, deadline)))

    def undrain(self, node_id: str) -> NodeView:
        """Let the scheduler place jobs on a drained slave again."""
        return wire.parse(NodeView, self._send(wire.undrain(node_id)))

    def cluster(self) -> ClusterView:
        """Leader, term, commit index and the masters' replication status."""
        return wire.parse(ClusterView, self._send(wire.cluster()))

    def chaos(self, action: ChaosAction | str, target: str, seconds: float | None = None) -> ChaosResult:
        """Break a process of a demo cluster on purpose (its masters and slaves run with
        ``--demo-faults``): ``kill``, ``pause`` (``seconds``, default 15), ``resume``,
        ``partition`` (until ``heal``, or ``seconds``) or ``heal`` the master or slave
        whose id is ``target``. What it did; ``ClaudError`` with code ``chaos_disabled``
        from any other cluster, ``NotFound`` for an unknown target.

        Not retried on another master once one has answered: a fault is taken once."""
        return wire.parse(ChaosResult, self._send(wire.chaos(action, target, seconds)))

    # --- operator: the cluster configuration ---------------------------------

    def members(self) -> MemberList:
        """The cluster configuration: each master's id, address, voter or learner, match index."""
        return wire.parse(MemberList, self._send(wire.members()))

    def add_member(self, member_id: int, address: str) -> MemberList:
        """Add a master as a learner; the leader makes it a voter once it has caught up.

        ``Conflict`` while another change is not committed yet (retry)."""
        return wire.parse(MemberList, self._send(wire.add_member(member_id, address)))

    def remove_member(self, member_id: int) -> MemberList:
        """Remove a master from the configuration (``NotFound`` if it is no member)."""
        return wire.parse(MemberList, self._send(wire.remove_member(member_id)))

    def events(self, after: str | None = None) -> Generator[Event, None, None]:
        """Every job and node transition from now on, until the iterator is closed; with
        ``after`` (an event's ``id``), first those the master kept since that one."""
        decoder = EventDecoder()
        with closing(self._stream(wire.events(after), lines=True)) as lines:
            for line in lines:
                if (event := decoder.feed(line)) is not None:
                    yield event

    def trace(self, after: int | str | None = None, *, all_masters: bool = False) -> Generator[Event, None, None]:
        """The answering master's consensus trace (elections, votes, appends, heartbeats, job
        transitions), from its ring after trace id ``after`` (default: what it still holds),
        then live, until the iterator is closed. Each event's ``id`` resumes the stream.

        ``all_masters``: every master's trace that master can reach, merged, with each
        one's ``status`` and ``relay.lost``/``relay.back``; ``after`` and the ids are
        then cursors (``"1:17647…,2:17647…"``)."""
        decoder = EventDecoder()
        with closing(self._stream(wire.trace(after, all_masters), lines=True)) as lines:
            for line in lines:
                if (event := decoder.feed(line)) is not None:
                    yield event

    def system_gc(self) -> GcResult:
        """Run a GC pass now (the masters' --job-gc-* and --node-gc-after settings); the ids it removed."""
        return wire.parse(GcResult, self._send(wire.system_gc()))

    def save_snapshot(self, path: str | Path) -> SnapshotHeader:
        """Write a consistent backup of the cluster's tables, from the leader, to ``path`` (atomically, 0600)."""
        data = self._read_all(wire.save_snapshot())
        header = _backup.check(data, "the backup the leader sent")
        _backup.write_atomically(path, data)
        return header

    def restore_snapshot(self, path: str | Path) -> RestoreResult:
        """Replace the cluster's jobs and slaves tables with the backup in ``path`` (checked here first)."""
        data = Path(path).read_bytes()
        _backup.check(data, str(path))
        response = self._send(wire.restore_snapshot(data))
        try:
            response.read()
        finally:
            response.close()
        return wire.parse(RestoreResult, response)

    def _read_all(self, call: wire.Call) -> bytes:
        response = self._send(call)
        try:
            return response.read()
        except httpx.HTTPError as exc:
            raise wire.stream_lost(response, exc) from exc
        finally:
            response.close()

    # --- transport ------------------------------------------------------------

    def _send(self, call: wire.Call) -> httpx.Response:
        """Send ``call`` to the first master that serves it.

        The answer is read in full, except a streaming call's success, which
        the caller must close.
        """
        failover = Failover(self._ring, self._failover_timeout)
        for url, pause in failover:
            if pause:
                time.sleep(pause)
            request = self._http.build_request(
                call.method,
                url + call.path,
                params=call.params,
                json=call.json,
                content=call.content,
                headers=call.headers,
                timeout=wire.request_timeout(call, self._http.timeout, self._stream_timeout),
            )
            try:
                response = self._http.send(request, stream=call.streaming)
                if call.streaming and response.is_error:
                    with closing(response):
                        response.read()
            except httpx.TransportError as exc:
                if not wire.may_resend(call, exc):
                    raise wire.not_resent(url, exc) from exc
                if (untrusted := untrusted_reason(exc)) is not None:
                    failover.untrusted(url, untrusted)
                else:
                    failover.unreachable(url, wire.describe(exc))
                continue
            except httpx.HTTPError as exc:
                raise ClaudError(f"{url}: {wire.describe(exc)}") from exc
            if wire.should_retry(response, call):
                failover.unavailable(
                    url, wire.error_from(response, call), wire.retry_after(response)
                )
                continue
            failover.reached(url)
            if response.is_error:
                raise wire.error_from(response, call)
            return response
        raise failover.exhausted()

    def _stream(self, call: wire.Call, *, lines: bool) -> Generator[str, None, None]:
        response = self._send(call)
        try:
            yield from (response.iter_lines() if lines else response.iter_text())
        except httpx.HTTPError as exc:
            raise wire.stream_lost(response, exc) from exc
        finally:
            response.close()
