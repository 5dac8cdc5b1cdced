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


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "*", "0", "0x0", "0.0", "::0", "0:0::0", "::ffff:0.0.0.0",
                                  "[::]"])
def test_every_spelling_of_the_unspecified_address_names_no_host(host: str) -> None:
    from claud.daemon.addresses import names_no_host

    assert names_no_host(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.0.0.7", "slave-1", "claud-slave1", "0.0.0.1", "fe80::1%eth0"])
def test_concrete_hosts_name_a_host(host: str) -> None:
    from claud.daemon.addresses import names_no_host

    assert not names_no_host(host)


@pytest.mark.parametrize("address", ["0.0.0.0:8701", "[::]:8701", "0:8701", "[::ffff:0.0.0.0]:8701", "h:0", "h:70000"])
def test_a_heartbeat_must_come_from_an_address_the_masters_can_reach(address: str) -> None:
    from claud.master.api import ApiError, check_slave_address

    with pytest.raises(ApiError) as info:
        check_slave_address(address)
    assert (info.value.status, info.value.field) == (422, "address")
    assert slave_logs_url("10.0.0.7:8701", "j1-1")  # and a concrete one passes both
    check_slave_address("10.0.0.7:8701")
