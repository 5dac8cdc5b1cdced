"""The asyncio client: :class:`~claud.client.Client`'s twin, method for method.

Request building, answer parsing and failover bookkeeping are shared
(:mod:`claud.client._wire`, :mod:`claud.client._masters`); only sending and
sleeping differ, so read :class:`~claud.client.Client` for the behaviour.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
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
from claud.client._client import DEFAULT_FAILOVER_TIMEOUT, DEFAULT_POLL_INTERVAL, DEFAULT_TIMEOUT
from claud.client._events import Event, EventDecoder
from claud.client._masters import Failover, MasterRing, log, parse_masters
from claud.client._tls import untrusted_reason, verify_setting
from claud.client.errors import ClaudError, WaitTimeout


class AsyncClient:
    """A connection to a CLAUD cluster for asyncio code.

    ::

        async with AsyncClient() as claud:
            job = await claud.submit(spec)
            async for line in claud.logs(job.id, follow=True):
                print(line, end="")

    Same arguments, defaults and failover as :class:`~claud.client.Client`;
    ``transport`` is an ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        masters: str | Sequence[str] | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_cert: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
    ) -> None:
        self._ring = MasterRing(parse_masters(masters))
        self._failover_timeout = failover_timeout
        if token is None:
            token = os.environ.get("CLAUD_TOKEN")
        self._http = httpx.AsyncClient(
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
        return f"AsyncClient(masters={list(self.masters)!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    # --- jobs ---------------------------------------------------------------

    async def submit(
        self, spec: JobSpec | Mapping[str, Any], idempotency_key: str | None = None
    ) -> JobView:
        """See :meth:`Client.submit`: one idempotency key for every retry of this call."""
        return wire.parse(JobView, await self._send(wire.submit(spec, idempotency_key)))

    async def submit_batch(
        self, specs: Sequence[JobSpec | Mapping[str, Any]], idempotency_key: str | None = None
    ) -> JobBatchResult:
        """See :meth:`Client.submit_batch`: one idempotency key for the batch and every retry of it."""
        return wire.parse(JobBatchResult, await self._send(wire.submit_batch(specs, idempotency_key)))

    async def jobs(self, state: JobState | str | None = None) -> list[JobView]:
        """See :meth:`Client.jobs`: every page, in order."""
        return [job async for job in self.iter_jobs(state)]

    async def iter_jobs(
        self, state: JobState | str | None = None, page_size: int = wire.PAGE_SIZE
    ) -> AsyncGenerator[JobView, None]:
        """See :meth:`Client.iter_jobs`."""
        cursor: str | None = None
        while True:
            response = await self._send(wire.list_jobs(state, page_size, cursor))
            page = wire.parse(JobList, response)
            for job in page.jobs:
                yield job
            cursor = wire.next_page(page.next, cursor, response)
            if cursor is None:
                return

    async def job(self, job_id: str) -> JobView:
        return wire.parse(JobView, await self._send(wire.get_job(job_id)))

    async def job_events(self, job_id: str, page_size: int = wire.PAGE_SIZE) -> list[JobEvent]:
        """See :meth:`Client.job_events`."""
        events: list[JobEvent] = []
        cursor: str | None = None
        while True:
            response = await self._send(wire.job_events(job_id, page_size, cursor))
            page = wire.parse(JobEventList, response)
            events += page.events
            cursor = wire.next_page(page.next, cursor, response)
            if cursor is None:
                return events

    async def stop(self, job_id: str) -> JobView:
        return wire.parse(JobView, await self._send(wire.stop_job(job_id)))

    async def update(self, job_id: str, spec: JobSpec | Mapping[str, Any]) -> JobView:
        """See :meth:`Client.update`: a new version, sent once."""
        return wire.parse(JobView, await self._send(wire.update_job(job_id, spec)))

    async def scale(self, job_id: str, count: int) -> JobView:
        """See :meth:`Client.scale`."""
        return wire.parse(JobView, await self._send(wire.scale_job(job_id, count)))

    async def versions(self, job_id: str) -> list[JobVersionView]:
        """See :meth:`Client.versions`."""
        return wire.parse(JobVersionList, await self._send(wire.job_versions(job_id))).versions

    async def revert(self, job_id: str, version: int) -> JobView:
        """See :meth:`Client.revert`."""
        return wire.parse(JobView, await self._send(wire.revert_job(job_id, version)))

    async def exec(
        self,
        job_id: str,
        command: Sequence[str],
        alloc: str | None = None,
        timeout: float = DEFAULT_EXEC_TIMEOUT,  # noqa: ASYNC109 - the command's, as in the sync Client
    ) -> ExecResult:
        """See :meth:`Client.exec`."""
        return wire.parse(ExecResult, await self._send(wire.exec_job(job_id, command, alloc, timeout)))

    async def logs(
        self, job_id: str, follow: bool = False, tail: int | None = None, attempt: int | None = None
    ) -> AsyncGenerator[str, None]:
        """See :meth:`Client.logs`; to stop early, wrap it in ``contextlib.aclosing``."""
        if attempt is not None and follow:
            raise ValueError("an earlier attempt has ended: attempt and follow do not go together")
        if not follow:
            async with aclosing(self._attempt_logs(job_id, False, tail, {}, attempt)) as lines:
                async for line in lines:
                    yield line
            return
        streamed: str | None = None
        while (view := await self._next_attempt(job_id, streamed)) is not None:
            if streamed is not None:
                log.info("job %s: following attempt %d (%s)…", job_id, view.attempts, view.alloc_id)
            seen: dict[str, str | None] = {}
            try:
                chosen_tail = tail if streamed is None else None
                async with aclosing(self._attempt_logs(job_id, True, chosen_tail, seen)) as lines:
                    async for line in lines:
                        yield line
            except ClaudError as error:
                if not wire.attempt_ended(error):
                    raise
            streamed = seen.get("alloc") or view.alloc_id

    async def _attempt_logs(
        self, job_id: str, follow: bool, tail: int | None, seen: dict[str, str | None], attempt: int | None = None
    ) -> AsyncGenerator[str, None]:
        """One container's output; puts the allocation it came from in ``seen["alloc"]``."""
        response = await self._send(wire.job_logs(job_id, follow, tail, attempt))
        seen["alloc"] = response.headers.get(ALLOC_ID_HEADER)
        buffer = wire.LineBuffer()
        try:
            async for chunk in response.aiter_text():
                for line in buffer.feed(chunk):
                    yield line
        except httpx.HTTPError as exc:
            raise wire.stream_lost(response, exc) from exc
        finally:
            await response.aclose()
        for line in buffer.flush():
            yield line

    async def _next_attempt(self, job_id: str, streamed: str | None) -> JobView | None:
        while True:
            view = await self.job(job_id)
            if wire.attempt_to_follow(view, streamed):
                return view
            if view.state.terminal:
                return None
            await asyncio.sleep(DEFAULT_POLL_INTERVAL)

    async def watch(
        self,
        job_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - public API, as in the sync Client
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> AsyncGenerator[JobView, None]:
        """See :meth:`Client.watch`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: JobView | None = None
        while True:
            view = await self.job(job_id)
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
            await asyncio.sleep(pause)

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - public API, as in the sync Client
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> JobView:
        async with aclosing(self.watch(job_id, timeout, poll_interval)) as views:
            async for view in views:
                if view.state.terminal:
                    return view
        raise AssertionError("watch() ends only after yielding a terminal state")

    # --- nodes and cluster ----------------------------------------------------

    async def nodes(self) -> list[NodeView]:
        return [node async for node in self.iter_nodes()]

    async def iter_nodes(self, page_size: int = wire.PAGE_SIZE) -> AsyncGenerator[NodeView, None]:
        """See :meth:`Client.iter_nodes`."""
        cursor: str | None = None
        while True:
            response = await self._send(wire.list_nodes(page_size, cursor))
            page = wire.parse(NodeList, response)
            for node in page.nodes:
                yield node
            cursor = wire.next_page(page.next, cursor, response)
            if cursor is None:
                return

    async def drain(self, node_id: str, deadline: float | None = None) -> NodeView:
        return wire.parse(NodeView, await self._send(wire.drain(node_id, deadline)))

    async def undrain(self, node_id: str) -> NodeView:
        return wire.parse(NodeView, await self._send(wire.undrain(node_id)))

    async def cluster(self) -> ClusterView:
        return wire.parse(ClusterView, await self._send(wire.cluster()))

    async def chaos(self, action: ChaosAction | str, target: str, seconds: float | None = None) -> ChaosResult:
        return wire.parse(ChaosResult, await self._send(wire.chaos(action, target, seconds)))

    async def members(self) -> MemberList:
        return wire.parse(MemberList, await self._send(wire.members()))

    async def add_member(self, member_id: int, address: str) -> MemberList:
        return wire.parse(MemberList, await self._send(wire.add_member(member_id, address)))

    async def remove_member(self, member_id: int) -> MemberList:
        return wire.parse(MemberList, await self._send(wire.remove_member(member_id)))

    async def events(self, after: str | None = None) -> AsyncGenerator[Event, None]:
        """See :meth:`Client.events`."""
        decoder = EventDecoder()
        async with aclosing(self._stream(wire.events(after), lines=True)) as lines:
            async for line in lines:
                if (event := decoder.feed(line)) is not None:
                    yield event

    async def trace(self, after: int | str | None = None, *, all_masters: bool = False) -> AsyncGenerator[Event, None]:
        """See :meth:`Client.trace`."""
        decoder = EventDecoder()
        async with aclosing(self._stream(wire.trace(after, all_masters), lines=True)) as lines:
            async for line in lines:
                if (event := decoder.feed(line)) is not None:
                    yield event

    async def system_gc(self) -> GcResult:
        return wire.parse(GcResult, await self._send(wire.system_gc()))

    async def save_snapshot(self, path: str | Path) -> SnapshotHeader:
        data = await self._read_all(wire.save_snapshot())
        header = _backup.check(data, "the backup the leader sent")
        await asyncio.to_thread(_backup.write_atomically, path, data)
        return header

    async def restore_snapshot(self, path: str | Path) -> RestoreResult:
        data = await asyncio.to_thread(Path(path).read_bytes)
        _backup.check(data, str(path))
        response = await self._send(wire.restore_snapshot(data))
        try:
            await response.aread()
        finally:
            await response.aclose()
        return wire.parse(RestoreResult, response)

    async def _read_all(self, call: wire.Call) -> bytes:
        response = await self._send(call)
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise wire.stream_lost(response, exc) from exc
        finally:
            await response.aclose()

    # --- transport ------------------------------------------------------------

    async def _send(self, call: wire.Call) -> httpx.Response:
        failover = Failover(self._ring, self._failover_timeout)
        for url, pause in failover:
            if pause:
                await asyncio.sleep(pause)
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
                response = await self._http.send(request, stream=call.streaming)
                if call.streaming and response.is_error:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
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

    async def _stream(self, call: wire.Call, *, lines: bool) -> AsyncGenerator[str, None]:
        response = await self._send(call)
        try:
            chunks = response.aiter_lines() if lines else response.aiter_text()
            async for chunk in chunks:
                yield chunk
        except httpx.HTTPError as exc:
            raise wire.stream_lost(response, exc) from exc
        finally:
            await response.aclose()
