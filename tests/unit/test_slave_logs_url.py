"""The only URL a master sends the cluster secret to, for a slave's logs: built
from a registered host:port and an allocation id, nothing else, whatever a
registration claims."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claud.api.protocol import WHOAMI_PATH
from claud.master.api import slave_logs_url


def test_a_registered_address_gives_the_logs_url() -> None:
    assert str(slave_logs_url("10.0.0.21:8701", "j1-1")) == "http://10.0.0.21:8701/v1/allocations/j1-1/logs"
    assert str(slave_logs_url("[fd00::7]:8701", "j1-1")) == "http://[fd00::7]:8701/v1/allocations/j1-1/logs"
    assert str(slave_logs_url("slave-1.example:8701", "j1-1")) == "http://slave-1.example:8701/v1/allocations/j1-1/logs"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:18900" + WHOAMI_PATH + "?",  # the issue's: a path and a query after the port
        "127.0.0.1:18900?x=1", "127.0.0.1:18900#f", "user@127.0.0.1:1", "http://127.0.0.1:1",
        "127.0.0.1", "0.0.0.0:8701", "[::]:8701", "127.0.0.1:0", "127.0.0.1:70000", "a b:1", "",
    ],
)
def test_anything_but_a_concrete_host_port_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        slave_logs_url(address, "j1-1")


@pytest.mark.parametrize("alloc_id", ["../internal/propose", "a/b", "a?b", "", "a#b", "%2e%2e"])
def test_the_allocation_id_cannot_leave_its_path(alloc_id: str) -> None:
    with pytest.raises(ValueError):
        slave_logs_url("10.0.0.21:8701", alloc_id)


@given(st.text(max_size=80), st.text(max_size=40))
def test_whatever_it_is_given_the_url_stays_on_the_logs_path_of_the_named_host(address: str, alloc_id: str) -> None:
    try:
        url = slave_logs_url(address, alloc_id)
    except ValueError:
        return
    assert url.scheme == "http" and not url.userinfo and not url.query and not url.fragment
    assert url.path == f"/v1/allocations/{alloc_id}/logs"
    host, _, port = address.rpartition(":")
    assert url.host == host.strip("[]") and url.port == int(port)
