"""Commit for a cluster of one master: append to the durable log, then apply.

This is the quorum-of-one case of replication, with the interface the
replicated log keeps: ``propose`` returns only once the entry is durable and
applied. Proposals that arrive while a write is in flight are batched into
the next write (group commit), so throughput is bounded by fsyncs per second
times batch size, not by one fsync per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from claud.api.logfmt import log_event
from claud.master import ops
from claud.master.state import Outcome, StateMachine
from claud.master.storage import Entry, LogStore, Snapshot

log = logging.getLogger("claud.master.log")

#: Most entries written in one transaction; bounds the latency of a batch.
MAX_BATCH = 1024


class StandaloneLog:
    def __init__(
        self,
        store: LogStore,
        state: StateMachine,
        on_applied: Callable[[], None],
        snapshot_every: int,
    ) -> None:
        self._store = store
        self._state = state
        self._on_applied = on_applied
        self._snapshot_every = snapshot_every
        self._queue: list[tuple[ops.Operation, asyncio.Future[Outcome]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.term = 1
        self.commit_index = state.applied_index
        self._snapshot_index = 0

    @classmethod
    def recover(cls, store: LogStore) -> tuple[StateMachine, int]:
        """Rebuild the tables from the snapshot and the entries after it."""
        snapshot = store.snapshot()
        state = StateMachine.from_snapshot(snapshot.state) if snapshot else StateMachine()
        replayed = 0
        for entry in store.entries(state.applied_index + 1):
            state.apply(entry.index, ops.decode(entry.data))
            replayed += 1
        state.drain_changes()  # history, not news: nothing to publish
        return state, replayed

    def start(self) -> None:
        snapshot = self._store.snapshot()
        self._snapshot_index = snapshot.index if snapshot else 0
        self.term = max(1, self._store.hard_state().term)
        self._task = asyncio.create_task(self._run(), name="standalone-log")

    async def stop(self) -> None:
        """Finish the write (and snapshot) in flight, then refuse what is still queued.

        Cancelling mid-write would leave a worker thread writing to a store
        the caller is about to close.
        """
        self._stopping = True
        self._wakeup.set()
        if self._task:
            await self._task
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(RuntimeError("master is shutting down"))

    async def propose(self, op: ops.Operation) -> Outcome:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((op, fut))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and not self._stopping:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[ops.Operation, asyncio.Future[Outcome]]]) -> None:
        first = self.commit_index + 1
        entries = [Entry(first + i, self.term, ops.encode(op)) for i, (op, _) in enumerate(batch)]
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._store.append, entries)
        except Exception as exc:  # the disk refused: nobody is told "ok"
            log_event(log, "log.append_failed", logging.ERROR, error=repr(exc), entries=len(entries))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for entry, (op, fut) in zip(entries, batch):
            outcome = self._state.apply(entry.index, op)
            if not fut.done():
                fut.set_result(outcome)
        self.commit_index = entries[-1].index
        elapsed_ms = (time.perf_counter() - started) * 1000
        if elapsed_ms > 200:
            log_event(log, "log.slow_commit", logging.WARNING, entries=len(entries), ms=round(elapsed_ms))
        self._on_applied()
        if self.commit_index - self._snapshot_index >= self._snapshot_every:
            await self._snapshot()

    async def _snapshot(self) -> None:
        snap = Snapshot(index=self.commit_index, term=self.term, state=self._state.to_snapshot())
        await asyncio.to_thread(self._store.save_snapshot, snap)
        self._snapshot_index = snap.index
        log_event(log, "log.snapshot", index=snap.index, jobs=len(self._state.jobs))
