"""The pure parts of UDP discovery: wire format, authentication, peer table.

No sockets here; tests/integration/test_discovery_netns.py sends real broadcasts.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from claud.api.discovery import (
    LIMITED_BROADCAST,
    Announcement,
    Discovery,
    PeerTable,
    Rejected,
    broadcast_addresses_from_ip_json,
    decode,
    encode,
    resolve_address,
)
from claud.api.nodes import NodeRole

SECRET = "s3cret"


def master(id_: str = "1", address: str = "10.0.0.1:8700", term: int = 3, sent_at: float = 100.0, **kw) -> Announcement:
    return Announcement(id=id_, role="master", address=address, term=term, sent_at=sent_at, **kw)


def slave(id_: str = "s1", address: str = "10.0.0.9:8701", sent_at: float = 100.0, **kw) -> Announcement:
    return Announcement(id=id_, role="slave", address=address, sent_at=sent_at, **kw)


# ------------------------------------------------------------------ wire format


def test_round_trip_without_secret() -> None:
    ann = master()
    data = encode(ann)
    assert b"\n" not in data
    assert decode(data) == ann


def test_wire_format_is_compact_versioned_json() -> None:
    data = encode(master(sent_at=1.5))
    assert data == (
        b'{"v":1,"cluster":"claud","id":"1","role":"master",'
        b'"address":"10.0.0.1:8700","term":3,"sent_at":1.5}'
    )


def test_round_trip_with_secret_and_defaults() -> None:
    ann = Announcement(id="s7", role=NodeRole.SLAVE, address="[fd00::7]:8701")
    assert ann.cluster == "claud" and ann.term == 0
    data = encode(ann, SECRET)
    payload, _, mac = data.partition(b"\n")
    assert len(mac) == 64 and json.loads(payload)["v"] == 1
    assert decode(data, secret=SECRET) == ann


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    body = json.loads(encode(master()))
    body["zone"] = "eu-1"
    assert decode(json.dumps(body).encode()) == master()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe garbage",
        b"not json at all",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"v":1}',  # no id, role, address
        b'{"v":1,"id":"1","role":"leader","address":"10.0.0.1:8700"}',  # bad role
        b'{"v":1,"id":"1","role":"master","address":"no-port"}',
        b'{"v":1,"id":"1","role":"master","address":"h:99999"}',
        b'{"v":1,"id":"","role":"master","address":"h:1"}',
        b'{"v":1,"id":"1","role":"master","address":"h:1","term":-1}',
        b'{"v":1,"id":"1","role":"master","address":"h:1","term":"x"}',
        b"{" + b" " * 5000 + b"}",  # oversized
    ],
)
def test_garbage_is_rejected_as_malformed(data: bytes) -> None:
    with pytest.raises(Rejected) as info:
        decode(data)
    assert info.value.reason == "malformed"


def test_other_versions_are_rejected() -> None:
    body = json.loads(encode(master()))
    for version in (2, 0, None, "1"):
        body["v"] = version
        with pytest.raises(Rejected) as info:
            decode(json.dumps(body).encode())
        assert info.value.reason == "version"


def test_other_clusters_are_ignored() -> None:
    theirs = encode(master(cluster="demo-b"))
    with pytest.raises(Rejected) as info:
        decode(theirs, cluster="demo-a")
    assert info.value.reason == "other_cluster"
    assert decode(theirs, cluster="demo-b").cluster == "demo-b"
    # Even when both clusters sign with their own secrets, the reason is the
    # cluster, not an attack.
    with pytest.raises(Rejected) as info:
        decode(encode(master(cluster="demo-b"), "their-secret"), cluster="demo-a", secret=SECRET)
    assert info.value.reason == "other_cluster"


# ------------------------------------------------------------- authentication


def test_hmac_accepts_the_right_secret_and_rejects_a_wrong_one() -> None:
    data = encode(master(), SECRET)
    assert decode(data, secret=SECRET) == master()
    with pytest.raises(Rejected) as info:
        decode(data, secret="another")
    assert info.value.reason == "unauthenticated"


def test_unsigned_datagrams_are_dropped_when_a_secret_is_set() -> None:
    with pytest.raises(Rejected) as info:
        decode(encode(master()), secret=SECRET)
    assert info.value.reason == "unauthenticated"


def test_tampered_payload_or_mac_is_rejected() -> None:
    data = encode(master(), SECRET)
    payload, _, mac = data.partition(b"\n")
    forged = payload.replace(b"10.0.0.1:8700", b"6.6.6.6:8700") + b"\n" + mac
    forged_term = payload.replace(b'"term":3', b'"term":9') + b"\n" + mac
    bad_mac = payload + b"\n" + (b"0" * 64)
    short_mac = payload + b"\n" + mac[:-2]
    for bad in (forged, forged_term, bad_mac, short_mac, payload + b"\n"):
        with pytest.raises(Rejected) as info:
            decode(bad, secret=SECRET)
        assert info.value.reason == "unauthenticated"


def test_signed_datagrams_are_dropped_without_a_secret() -> None:
    """A configuration mismatch shows on both sides, not only on the secret one."""
    with pytest.raises(Rejected) as info:
        decode(encode(master(), SECRET))
    assert info.value.reason == "unexpected_mac"


def test_mac_covers_the_cluster_name() -> None:
    payload, _, mac = encode(master(cluster="a"), SECRET).partition(b"\n")
    moved = payload.replace(b'"cluster":"a"', b'"cluster":"b"') + b"\n" + mac
    with pytest.raises(Rejected) as info:
        decode(moved, cluster="b", secret=SECRET)
    assert info.value.reason == "unauthenticated"


# ----------------------------------------------------------------- peer table


def test_peer_table_discovers_updates_and_expires_with_explicit_times() -> None:
    table = PeerTable(master("1"), expire_after=5.0)
    ev = table.observe(master("2", "10.0.0.2:8700", term=3, sent_at=1), now=10.0)
    assert ev is not None and ev.kind == "discovered" and ev.peer.id == "2"
    assert table.observe(slave("s1", sent_at=1), now=10.5).kind == "discovered"

    # The same again is no change, but it keeps the peer fresh.
    assert table.observe(master("2", "10.0.0.2:8700", term=3, sent_at=2), now=14.0) is None
    ev = table.observe(master("2", "10.0.0.2:8700", term=4, sent_at=3), now=14.5)
    assert ev is not None and ev.kind == "updated" and ev.previous.term == 3 and ev.peer.term == 4

    assert set(table.peers(now=15.0)) == {"2", "s1"}
    assert set(table.peers(now=15.0, role="master")) == {"2"}
    assert set(table.peers(now=15.0, role=NodeRole.SLAVE)) == {"s1"}

    # s1 was last heard at 10.5: fresh up to 15.5 inclusive, then gone.
    assert table.expire(now=15.5) == []
    assert set(table.peers(now=15.6)) == {"2"}  # stale ones are hidden even before a sweep
    expired = table.expire(now=15.6)
    assert [(e.kind, e.peer.id) for e in expired] == [("expired", "s1")]
    assert table.expire(now=15.7) == []
    assert table.next_expiry() == 14.5 + 5.0
    assert [e.peer.id for e in table.expire(now=20.0)] == ["2"]
    assert table.peers(now=20.0) == {} and table.next_expiry() is None

    # A peer that comes back is discovered again.
    assert table.observe(slave("s1", sent_at=9), now=30.0).kind == "discovered"


def test_a_stale_entry_not_yet_swept_is_rediscovered() -> None:
    table = PeerTable(slave("s9"), expire_after=2.0)
    table.observe(master("2", sent_at=1), now=0.0)
    ev = table.observe(master("2", sent_at=50), now=10.0)
    assert ev is not None and ev.kind == "discovered"


def test_self_is_ignored_but_the_same_id_in_another_role_is_not() -> None:
    table = PeerTable(master("1"), expire_after=5.0)
    assert table.observe(master("1", term=7), now=1.0) is None
    assert table.peers(now=1.0) == {}
    assert table.observe(slave("1"), now=1.0).kind == "discovered"
    assert table.peers(now=1.0, role="slave") == {"1": slave("1")}


def test_older_announcements_do_not_roll_back_a_peer() -> None:
    table = PeerTable(slave("s1"), expire_after=5.0)
    table.observe(master("2", term=5, sent_at=200.0), now=1.0)
    assert table.observe(master("2", term=4, sent_at=199.0), now=1.1) is None  # reordered or replayed
    assert table.peers(now=1.1)["2"].term == 5


def test_address_change_is_an_update() -> None:
    table = PeerTable(slave("s1"), expire_after=5.0)
    table.observe(master("2", "10.0.0.2:8700"), now=1.0)
    ev = table.observe(master("2", "10.0.0.22:8700", sent_at=101), now=2.0)
    assert ev.kind == "updated" and ev.previous.address == "10.0.0.2:8700"
    assert table.peers(now=2.0)["2"].address == "10.0.0.22:8700"


def test_master_wins_when_a_slave_shares_its_id_in_the_unfiltered_view() -> None:
    table = PeerTable(slave("me"), expire_after=5.0)
    table.observe(slave("7"), now=1.0)
    table.observe(master("7"), now=1.0)
    assert table.peers(now=1.0)["7"].role == NodeRole.MASTER


# -------------------------------------------------------------------- helpers


def test_wildcard_hosts_are_completed_with_the_source_ip() -> None:
    assert resolve_address("0.0.0.0:8701", "10.1.2.3") == "10.1.2.3:8701"
    assert resolve_address("[::]:8701", "fd00::3") == "[fd00::3]:8701"
    assert resolve_address("10.9.9.9:8701", "10.1.2.3") == "10.9.9.9:8701"
    assert resolve_address("m1.example:8700", "10.1.2.3") == "m1.example:8700"


def test_broadcast_addresses_from_ip_json() -> None:
    interfaces = [
        {"ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"],
         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
         "addr_info": [
             {"family": "inet", "local": "192.168.1.5", "prefixlen": 24, "broadcast": "192.168.1.255"},
             {"family": "inet", "local": "10.20.0.5", "prefixlen": 16},  # no brd given: derived
             {"family": "inet6", "local": "fd00::5", "prefixlen": 64},
         ]},
        {"ifname": "eth1", "flags": ["BROADCAST", "MULTICAST"],  # down
         "addr_info": [{"family": "inet", "local": "172.16.0.5", "prefixlen": 24, "broadcast": "172.16.0.255"}]},
        {"ifname": "wg0", "flags": ["POINTOPOINT", "NOARP", "UP"],
         "addr_info": [{"family": "inet", "local": "10.99.0.1", "prefixlen": 24}]},
        {"ifname": "p2p", "flags": ["BROADCAST", "UP"],
         "addr_info": [{"family": "inet", "local": "10.98.0.1", "prefixlen": 31}]},
        {"ifname": "eth2", "flags": ["BROADCAST", "UP"],
         "addr_info": [{"family": "inet", "local": "192.168.1.6", "prefixlen": 24, "broadcast": "192.168.1.255"}]},
    ]
    assert broadcast_addresses_from_ip_json(interfaces) == ["192.168.1.255", "10.20.255.255"]
    assert broadcast_addresses_from_ip_json([]) == []
    assert LIMITED_BROADCAST == "255.255.255.255"


def test_announcement_validation() -> None:
    with pytest.raises(ValidationError):
        Announcement(id="1", role="master", address="10.0.0.1")
    with pytest.raises(ValidationError):
        Announcement(id="1", role="boss", address="10.0.0.1:1")
    ann = master()
    with pytest.raises(ValidationError):
        ann.term = 5  # frozen: use Discovery.update


def test_discovery_checks_its_timing_and_updates_without_a_socket() -> None:
    with pytest.raises(ValueError):
        Discovery(master(), interval=1.0, expire_after=1.0)
    with pytest.raises(ValueError):
        Discovery(master(), port=0)
    d = Discovery(master(term=3), broadcast_addresses=["10.233.7.255"])
    d.update(term=4, address="10.0.0.1:8800")
    assert (d.me.term, d.me.address) == (4, "10.0.0.1:8800")
    assert d.peers() == {} and not d.running and d.broadcast_targets == ["10.233.7.255"]


def test_datagrams_fed_to_discovery_are_counted_resolved_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    events = []
    d = Discovery(slave("s1", address="10.0.0.9:8701"), secret=SECRET, broadcast_addresses=[],
                  on_change=events.append)
    caplog.set_level("INFO", logger="claud.discovery")

    for garbage in (b"junk", b"{}", encode(master()), encode(master(), "wrong"), encode(master(cluster="x"), SECRET)):
        d.datagram_received(garbage, "10.0.0.66")
    assert d.ignored == {"malformed": 1, "version": 1, "unauthenticated": 2, "other_cluster": 1}
    assert d.peers() == {} and not d.changed.is_set() and events == []
    # One summary line, not one per datagram.
    assert [r.claud_event for r in caplog.records] == ["discovery.ignored"]

    d.datagram_received(encode(master("2", "0.0.0.0:8700"), SECRET), "10.0.0.2")
    d.datagram_received(encode(master("2", "0.0.0.0:8700"), SECRET), "10.0.0.2")  # duplicate
    assert d.peers("master") == {"2": master("2", "10.0.0.2:8700")}
    assert d.changed.is_set() and [e.kind for e in events] == ["discovered"]

    d.datagram_received(encode(d.me, SECRET), "10.0.0.9")  # our own broadcast, looped back
    assert "s1" not in d.peers()
    d.datagram_received(encode(slave("s1", address="10.0.0.10:8701"), SECRET), "10.0.0.10")
    assert "s1" not in d.peers()
    assert [r.claud_event for r in caplog.records] == [
        "discovery.ignored", "discovery.peer_discovered", "discovery.id_conflict",
    ]
    assert d.received == 9
