"""The masters' start-up checks: a configuration that could run a job twice is
refused; none runs its internal routes without a secret, and one that would
need a shared one refuses to start and names the flag to add."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from claud.master.settings import MasterSettings

#: The fast profile documented in the README.
FAST = dict(heartbeat_interval=0.25, slave_lease=1.0, election_timeout=0.25, fence_stop_grace=1.0,
            suspect_after=2.0, node_dead_after=4.0)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("CLAUD_")]:
        monkeypatch.delenv(name)


def test_a_slave_assumes_the_masters_default_fence_grace_until_they_answer() -> None:
    from claud.api import Assignments

    wire_default = Assignments.model_fields["fence_stop_grace"].default
    assert MasterSettings(id=1, no_discovery=True).fence_stop_grace == wire_default


def test_the_defaults_and_the_fast_profile_pass() -> None:
    defaults = MasterSettings(id=1, no_discovery=True)
    needed, _ = defaults.fencing_bound()
    assert needed <= defaults.node_dead_after
    fast = MasterSettings(id=1, no_discovery=True, **FAST)
    assert fast.fencing_bound()[0] <= fast.node_dead_after == 4.0


def test_a_long_election_timeout_is_refused_naming_every_term() -> None:
    # The case: lease and dead-after agree, but a deposed leader can renew leases
    # for about two election timeouts, so a cut-off slave still runs its jobs at dead-after.
    with pytest.raises(ValidationError) as err:
        MasterSettings(id=1, no_discovery=True, election_timeout=3, slave_lease=9, fence_stop_grace=0,
                       node_dead_after=11)
    message = str(err.value)
    for term in ("slave_lease", "election_timeout", "heartbeat_interval", "fence_stop_grace rounded up",
                 "stop fan-out margin", "two slaves"):
        assert term in message, term


def test_the_grace_counts_in_whole_seconds_as_docker_rounds_it() -> None:
    # 1.0 + 0.5 + 0.25 + 1 + 1 = 3.75 with a 1 s grace; a 1.01 s grace is a 2 s `docker stop -t`.
    MasterSettings(id=1, no_discovery=True, **{**FAST, "node_dead_after": 3.75})
    with pytest.raises(ValidationError, match="rounded up \\(2s\\)"):
        MasterSettings(id=1, no_discovery=True, **{**FAST, "fence_stop_grace": 1.01, "node_dead_after": 4.5})
    MasterSettings(id=1, no_discovery=True, **{**FAST, "fence_stop_grace": 1.01, "node_dead_after": 4.75})


@pytest.mark.parametrize("field, value", [
    ("slave_lease", 1.5), ("election_timeout", 0.4), ("heartbeat_interval", 0.6), ("fence_stop_grace", 1.5),
])
def test_lengthening_any_term_alone_breaks_the_fast_profile(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=r"node_dead_after \(4s\) must be at least"):
        MasterSettings(id=1, no_discovery=True, **{**FAST, field: value})

@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAUD_CLUSTER_SECRET_FILE", "CLAUD_NO_DISCOVERY", "CLAUD_PEERS", "CLAUD_CLUSTER_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "discovery (on by default) needs a shared secret: add --cluster-secret-file"),
        ({"no_discovery": True, "cluster_size": 3}, "a cluster of 3 masters needs a shared secret"),
        ({"no_discovery": True, "peers": "10.0.0.2:8700"}, "a cluster of 2 masters needs a shared secret"),
        ({"no_discovery": True, "advertise": "0.0.0.0:8700"}, "names no host"),
    ],
)
def test_what_needs_a_shared_secret_is_refused_without_one(fields: dict, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        MasterSettings(id=1, **fields)


def test_a_lone_master_without_discovery_may_generate_its_secret(tmp_path: Path) -> None:
    settings = MasterSettings(id=1, no_discovery=True, data_dir=tmp_path)
    assert settings.cluster_secret_file is None and settings.size == 1


def test_with_a_shared_secret_anything_goes(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    assert MasterSettings(id=1, cluster_size=3, cluster_secret_file=secret).size == 3


def test_a_wildcard_listen_address_is_never_what_a_master_announces() -> None:
    settings = MasterSettings(id=1, no_discovery=True, listen="0.0.0.0:8700")
    host, _, port = settings.advertised_address.rpartition(":")
    assert port == "8700" and host not in ("0.0.0.0", "", "::")
    assert MasterSettings(id=1, no_discovery=True, listen="0.0.0.0:8700",
                          advertise="m1.example:8700").advertised_address == "m1.example:8700"  # fmt: skip


def test_gc_and_restore_limits_are_checked_at_start() -> None:
    defaults = MasterSettings(id=1, no_discovery=True)
    assert (defaults.job_gc_after, defaults.job_gc_keep, defaults.node_gc_after) == (86400, 10_000, 86400)
    with pytest.raises(ValidationError, match=r"node_gc_after .* must be at least node_dead_after"):
        MasterSettings(id=1, no_discovery=True, node_gc_after=5)  # node_dead_after is 10
    with pytest.raises(ValidationError, match=r"max_restore_bytes .* must not exceed max_internal_request_bytes"):
        MasterSettings(id=1, no_discovery=True, max_restore_bytes=2**30)
    MasterSettings(id=1, no_discovery=True, **FAST, node_gc_after=4, job_gc_after=1, job_gc_keep=0)


def test_the_peer_gone_delay_defaults_to_a_quarter_election_timeout_within_the_bounds() -> None:
    from claud.master.replication import ELECTION_TICKS, HEARTBEAT_TICKS, peer_gone_ticks
    from claud.master.settings import MASTER_HEARTBEAT_SHARE, MASTER_TICK_SHARE

    assert (MASTER_TICK_SHARE, MASTER_HEARTBEAT_SHARE) == (1 / ELECTION_TICKS, HEARTBEAT_TICKS / ELECTION_TICKS)
    for timeout in (0.06, 0.25, 0.6, 2.0, 3.0):
        settings = MasterSettings(id=1, no_discovery=True, election_timeout=timeout, slave_lease=max(4.0, 3 * timeout),
                                  node_dead_after=100)
        assert settings.peer_gone_seconds == pytest.approx(timeout / 4)
        # The core's bounds hold for the default, whatever the timeout: 2 < ticks < 10.
        assert peer_gone_ticks(settings.peer_gone_seconds, timeout) == 3
    off = MasterSettings(id=1, no_discovery=True, peer_gone_delay=0)
    assert off.peer_gone_seconds == 0 and peer_gone_ticks(0, off.election_timeout) == 0
    highest = MasterSettings(id=1, no_discovery=True, peer_gone_delay=0.54)
    assert peer_gone_ticks(highest.peer_gone_seconds, 0.6) == 9


@pytest.mark.parametrize("delay", [0.05, 0.12, 0.55, 0.6, 1.0])
def test_a_peer_gone_delay_outside_a_heartbeat_and_the_election_timeout_is_refused(delay: float) -> None:
    with pytest.raises(ValidationError, match="peer_gone_delay"):
        MasterSettings(id=1, no_discovery=True, election_timeout=0.6, peer_gone_delay=delay)
