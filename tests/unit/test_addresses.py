"""claud.daemon.addresses.parse_host_port: the one host:port parser of masters, slaves and discovery."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claud.daemon.addresses import parse_host_port


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8700", ("127.0.0.1", 8700)),
        (" m1:1 ", ("m1", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("[fd00::7]:8701", ("fd00::7", 8701)),
        ("0.0.0.0:8701", ("0.0.0.0", 8701)),  # a listener's wildcard; callers that need a host refuse it
    ],
)
def test_host_port_parses(address: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(address) == expected


@pytest.mark.parametrize(
    "address",
    ["nohost", ":8700", "host:", "host:port", "a b:1", "h:1/v1/x", "::1:8700", "[::1", "h:1:2", "h:٣", "h:123456", ""],
)
def test_what_is_not_host_port_says_so(address: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        parse_host_port(address)


@pytest.mark.parametrize("address", ["h:0", "h:65536", "h:99999"])
def test_a_port_out_of_range_says_so(address: str) -> None:
    with pytest.raises(ValueError, match="out of range 1-65535"):
        parse_host_port(address)


@given(st.text(max_size=40))
def test_any_text_is_host_port_or_a_value_error(text: str) -> None:
    try:
        host, port = parse_host_port(text)
    except ValueError:
        return
    assert host and 1 <= port <= 65535 and not any(c.isspace() or c == "/" for c in host)
