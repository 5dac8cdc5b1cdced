"""The masters' start-up invariant: a configuration that could run a job twice is refused."""

from __future__ import annotations

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


def test_the_defaults_and_the_fast_profile_pass() -> None:
    defaults = MasterSettings(id=1)
    needed, _ = defaults.fencing_bound()
    assert needed <= defaults.node_dead_after
    fast = MasterSettings(id=1, **FAST)
    assert fast.fencing_bound()[0] <= fast.node_dead_after == 4.0


def test_a_long_election_timeout_is_refused_naming_every_term() -> None:
    # The case: lease and dead-after agree, but a deposed leader can renew leases
    # for about two election timeouts, so a cut-off slave still runs its jobs at dead-after.
    with pytest.raises(ValidationError) as err:
        MasterSettings(id=1, election_timeout=3, slave_lease=9, fence_stop_grace=0, node_dead_after=11)
    message = str(err.value)
    for term in ("slave_lease", "election_timeout", "heartbeat_interval", "fence_stop_grace rounded up",
                 "stop fan-out margin", "two slaves"):
        assert term in message, term


def test_the_grace_counts_in_whole_seconds_as_docker_rounds_it() -> None:
    # 1.0 + 0.5 + 0.25 + 1 + 1 = 3.75 with a 1 s grace; a 1.01 s grace is a 2 s `docker stop -t`.
    MasterSettings(id=1, **{**FAST, "node_dead_after": 3.75})
    with pytest.raises(ValidationError, match="rounded up \\(2s\\)"):
        MasterSettings(id=1, **{**FAST, "fence_stop_grace": 1.01, "node_dead_after": 4.5})
    MasterSettings(id=1, **{**FAST, "fence_stop_grace": 1.01, "node_dead_after": 4.75})


@pytest.mark.parametrize("field, value", [
    ("slave_lease", 1.5), ("election_timeout", 0.4), ("heartbeat_interval", 0.6), ("fence_stop_grace", 1.5),
])
def test_lengthening_any_term_alone_breaks_the_fast_profile(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=r"node_dead_after \(4s\) must be at least"):
        MasterSettings(id=1, **{**FAST, field: value})
