"""Disaster recovery: a surviving master's data directory becomes a one-member cluster.

The decision here is what ``--recover-from-data-dir`` writes before the master
starts, the way etcd's ``--force-new-cluster`` does. When a quorum of masters
is lost for good, no configuration change can commit any more; an operator
then picks the survivor with the most recent data and restarts it with the
flag. It appends one configuration entry after everything its log holds: this
master the only voter, under a new cluster id, so the lost members, should
they come back with their old data, are refused as another cluster's instead
of mixing two histories. As sole voter it elects itself and commits its whole
log: everything it had committed, and the entries it held that were not yet
known committed (writes whose outcome was unknown to their clients, which
retry idempotently). Other masters then join with empty data directories via
``claud operator members add``. The flag is for one start: remove it after.
"""

from __future__ import annotations

import logging
import secrets

from claud.daemon.logfmt import log_event
from claud.master.raft_config import Configuration, Member, config_from_entry
from claud.master.storage import Entry, HardState, LogStore

log = logging.getLogger("claud.master.recovery")

__all__ = ["recover_as_one_member_cluster"]


def recover_as_one_member_cluster(store: LogStore, master_id: int, address: str) -> Configuration:
    """Append the one-member configuration to ``store`` (fsynced) and return it."""
    snapshot = store.snapshot()
    first = snapshot.index + 1 if snapshot else 1
    entries = store.entries(first)
    last_index = entries[-1].index if entries else first - 1
    last_term = entries[-1].term if entries else (snapshot.term if snapshot else 0)
    before = None
    for entry in reversed(entries):
        before = config_from_entry(entry.data)
        if before is not None:
            break
    if before is None and snapshot is not None and snapshot.config:
        before = Configuration.decode(snapshot.config)
    hard_state = store.hard_state()
    # A term above any this master has seen or voted in: no other master's
    # entry or vote can ever be taken for this one's.
    term = max(hard_state.term, last_term) + 1
    configuration = Configuration((Member(master_id, address, True),), cluster_id=secrets.token_hex(8))
    store.append([Entry(last_index + 1, term, configuration.entry_data())])
    store.save_hard_state(HardState(term=term, voted_for=master_id))
    log_event(
        log, "recovery.one_member_cluster", logging.WARNING,
        cluster=configuration.cluster_id, was_cluster=before.cluster_id if before else None,
        was_members=",".join(map(str, sorted(before.ids))) if before else None,
        index=last_index + 1, term=term, recorded_commit=store.commit_index(),
        action="remove --recover-from-data-dir before the next start; add masters with empty data "
        "directories: claud operator members add ID ADDRESS",
    )
    return configuration
