"""The pure parts of UDP discovery: wire format, authentication, peer table.

No sockets here; tests/integration/test_discovery_netns.py sends real broadcasts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from claud.api.nodes import NodeRole
from claud.daemon.discovery import (
    LIMITED_BROADCAST,
    Announcement,
    Discovery,
    PeerTable,
    Rejected,
    ReplayGuard,
    broadcast_addresses_from_ip_json,
    decode,
    encode,
    mac_key,
)

SECRET = "s3cret"


def master(id_: str = "1", address: str = "10.0.0.1:8700", term: int = 3, sent_at: float = 100.0, **kw) -> Announcement:
    return Announcement(id=id_, role="master", address=address, term=term, sent_at=sent_at, **kw)


def slave(id_: str = "s1", address: str = "10.0.0.9:8701", sent_at: float = 100.0, **kw) -> Announcement:
    return Announcement(id=id_, role="slave", address=address, sent_at=sent_at, **kw)


# ------------------------------------------------------------------ wire format


def test_wire_format_is_compact_versioned_signed_json() -> None:
    data = encode(master(sent_at=1.5, seq=7), SECRET)
    payload, sep, mac = data.partition(b"\n")
    assert payload == (
        b'{"v":2,"cluster":"claud","id":"1","role":"master",'
        b'"address":"10.0.0.1:8700","term":3,"seq":7,"sent_at":1.5}'
    )
    assert sep and len(mac) == 64


def test_there_is_no_discovery_without_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        encode(master(), "")
    with pytest.raises(ValueError, match="secret"):
        decode(b"{}", secret="")
    with pytest.raises(ValueError, match="secret"):
        Discovery(master(), broadcast_addresses=[])


def test_round_trip_with_defaults() -> None:
    ann = Announcement(id="s7", role=NodeRole.SLAVE, address="[fd00::7]:8701")
    assert ann.cluster == "claud" and ann.term == 0 and ann.seq == 0
    data = encode(ann, SECRET)
    payload, _, mac = data.partition(b"\n")
    assert len(mac) == 64 and json.loads(payload)["v"] == 2
    assert decode(data, secret=SECRET) == ann


def signed(body: dict) -> bytes:
    """A datagram signed with SECRET whatever its body: only validation can refuse it."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    return payload + b"\n" + hmac.new(mac_key(SECRET), payload, hashlib.sha256).hexdigest().encode()


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    body = json.loads(encode(master(), SECRET).partition(b"\n")[0])
    body["zone"] = "eu-1"
    assert decode(signed(body), secret=SECRET) == master()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe garbage",
        b"not json at all",
        b"[1, 2, 3]",
        b'"a string"',
        b"{" + b" " * 5000 + b"}",  # oversized
    ],
)
def test_garbage_is_rejected_as_malformed(data: bytes) -> None:
    with pytest.raises(Rejected) as info:
        decode(data, secret=SECRET)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        {"v": 2},  # no id, role, address
        {"v": 2, "id": "1", "role": "leader", "address": "10.0.0.1:8700"},  # bad role
        {"v": 2, "id": "1", "role": "master", "address": "no-port"},
        {"v": 2, "id": "1", "role": "master", "address": "h:99999"},
        {"v": 2, "id": "", "role": "master", "address": "h:1"},
        {"v": 2, "id": "1", "role": "master", "address": "h:1", "term": -1},
        {"v": 2, "id": "1", "role": "master", "address": "h:1", "term": "x"},
        {"v": 2, "id": "1", "role": "master", "address": "h:1", "seq": -1},
        {"v": 2, "id": "1", "role": "master", "address": "h:1", "seq": 2**63},
    ],
)
def test_signed_but_invalid_announcements_are_rejected_as_malformed(body: dict) -> None:
    with pytest.raises(Rejected) as info:
        decode(signed(body), secret=SECRET)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("address", ["0.0.0.0:8700", "[::]:8700", ":8700", "*:8700"])
def test_wildcard_addresses_are_refused_never_completed(address: str) -> None:
    """The source address of a datagram is no one's word: a wildcard cannot be filled in from it."""
    with pytest.raises(Rejected) as info:
        decode(signed({"v": 2, "id": "2", "role": "master", "address": address}), secret=SECRET)
    assert info.value.reason == "wildcard_address"
    with pytest.raises(ValidationError):
        master(address=address)


def test_other_versions_are_rejected() -> None:
    body = json.loads(encode(master(), SECRET).partition(b"\n")[0])
    for version in (1, 3, 0, None, "2"):
        body["v"] = version
        with pytest.raises(Rejected) as info:
            decode(signed(body), secret=SECRET)
        assert info.value.reason == "version"


def test_other_clusters_are_ignored() -> None:
    theirs = encode(master(cluster="demo-b"), SECRET)
    with pytest.raises(Rejected) as info:
        decode(theirs, cluster="demo-a", secret=SECRET)
    assert info.value.reason == "other_cluster"
    assert decode(theirs, cluster="demo-b", secret=SECRET).cluster == "demo-b"
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


def test_unsigned_datagrams_are_dropped() -> None:
    payload = encode(master(), SECRET).partition(b"\n")[0]
    with pytest.raises(Rejected) as info:
        decode(payload, secret=SECRET)
    assert info.value.reason == "unauthenticated"


def test_tampered_payload_or_mac_is_rejected() -> None:
    data = encode(master(seq=5), SECRET)
    payload, _, mac = data.partition(b"\n")
    forged = payload.replace(b"10.0.0.1:8700", b"6.6.6.6:8700") + b"\n" + mac
    forged_term = payload.replace(b'"term":3', b'"term":9') + b"\n" + mac
    forged_seq = payload.replace(b'"seq":5', b'"seq":6') + b"\n" + mac
    forged_time = payload.replace(b'"sent_at":100.0', b'"sent_at":900.0') + b"\n" + mac
    bad_mac = payload + b"\n" + (b"0" * 64)
    short_mac = payload + b"\n" + mac[:-2]
    for bad in (forged, forged_term, forged_seq, forged_time, bad_mac, short_mac, payload + b"\n"):
        assert bad != data
        with pytest.raises(Rejected) as info:
            decode(bad, secret=SECRET)
        assert info.value.reason == "unauthenticated"


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
        Discovery(master(), secret=SECRET, interval=1.0, expire_after=1.0)
    with pytest.raises(ValueError):
        Discovery(master(), secret=SECRET, port=0)
    d = Discovery(master(term=3), secret=SECRET, broadcast_addresses=["10.233.7.255"])
    d.update(term=4, address="10.0.0.1:8800")
    assert (d.me.term, d.me.address) == (4, "10.0.0.1:8800")
    assert d.peers() == {} and not d.running and d.broadcast_targets == ["10.233.7.255"]


def fresh(ann: Announcement, seq: int) -> Announcement:
    return ann.model_copy(update={"sent_at": time.time(), "seq": seq})


def test_datagrams_fed_to_discovery_are_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    events = []
    d = Discovery(slave("s1", address="10.0.0.9:8701"), secret=SECRET, broadcast_addresses=[],
                  on_change=events.append)
    caplog.set_level("INFO", logger="claud.discovery")

    unsigned = encode(master(), SECRET).partition(b"\n")[0]
    wildcard = signed({"v": 2, "id": "2", "role": "master", "address": "0.0.0.0:8700", "sent_at": time.time()})
    for garbage in (b"junk", b"{}", unsigned, encode(master(), "wrong"), encode(master(cluster="x"), SECRET),
                    wildcard, encode(master("2", seq=1), SECRET)):  # the last one is 100 s into the epoch: stale
        d.datagram_received(garbage, "10.0.0.66")
    assert d.ignored == {"malformed": 1, "version": 1, "unauthenticated": 2, "other_cluster": 1,
                         "wildcard_address": 1, "stale": 1}
    assert d.peers() == {} and not d.changed.is_set() and events == []
    # One summary line, not one per datagram.
    assert [r.claud_event for r in caplog.records] == ["discovery.ignored"]

    announced = fresh(master("2", "10.0.0.2:8700"), seq=10)
    d.datagram_received(encode(announced, SECRET), "10.0.0.2")
    d.datagram_received(encode(announced, SECRET), "10.0.0.2")  # the same datagram via another broadcast address
    assert d.peers("master") == {"2": announced}
    assert d.changed.is_set() and [e.kind for e in events] == ["discovered"]
    assert d.ignored["duplicate"] == 1

    d.datagram_received(encode(d.me, SECRET), "10.0.0.9")  # our own broadcast, looped back
    assert "s1" not in d.peers()
    d.datagram_received(encode(fresh(slave("s1", address="10.0.0.10:8701"), 1), SECRET), "10.0.0.10")
    assert "s1" not in d.peers()
    assert [r.claud_event for r in caplog.records] == [
        "discovery.ignored", "discovery.peer_discovered", "discovery.id_conflict",
    ]
    assert d.received == 11


def test_a_replay_from_another_address_moves_no_peer() -> None:
    """A recorded datagram sent again, from anywhere, changes nothing: not the address, not the term."""
    d = Discovery(slave("s1"), secret=SECRET, broadcast_addresses=[])
    old = encode(fresh(master("2", "10.0.0.2:8700", term=3), seq=100), SECRET)
    d.datagram_received(old, "10.0.0.2")
    new = fresh(master("2", "10.0.0.22:8700", term=4), seq=101)
    d.datagram_received(encode(new, SECRET), "10.0.0.22")
    assert d.peers("master")["2"] == new
    for source in ("6.6.6.6", "10.0.0.2", "10.0.0.22"):
        d.datagram_received(old, source)
    assert d.peers("master")["2"] == new
    assert d.ignored == {"replayed": 3}


def test_an_old_datagram_is_stale_even_after_its_sender_was_forgotten() -> None:
    guard = ReplayGuard(max_clock_skew=30)
    ann = master("2", seq=5, sent_at=1000.0)
    guard.admit(ann, now=1010.0)
    # Long after, the guard has forgotten the sender (it keeps only live ones)...
    guard.admit(master("3", seq=1, sent_at=5000.0), now=5000.0)
    assert ann.key not in guard._last
    # ...but the datagram is as old as it was: refused by the clock instead.
    with pytest.raises(Rejected) as info:
        guard.admit(ann, now=5000.0)
    assert info.value.reason == "stale"
    with pytest.raises(Rejected) as info:
        guard.admit(master("2", seq=6, sent_at=5031.0), now=5000.0)  # from the future, too
    assert info.value.reason == "stale"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1", "2", "3"]), st.integers(0, 20), st.floats(-100, 100),
                          st.floats(0, 200)), max_size=40))
def test_the_replay_guard_admits_each_sender_strictly_in_order_and_only_fresh(
    datagrams: list[tuple[str, int, float, float]],
) -> None:
    """Whatever arrives, in whatever order: every admitted datagram was within the skew of the
    receiver's clock and had a seq above every earlier admitted one of its sender."""
    guard = ReplayGuard(max_clock_skew=30)
    now, admitted = 1_000_000.0, {}
    for sender, seq, offset, elapsed in datagrams:
        now += elapsed
        ann = master(sender, seq=seq, sent_at=now + offset)
        try:
            guard.admit(ann, now)
        except Rejected as exc:
            assert exc.reason in ("stale", "replayed", "duplicate")
            continue
        assert abs(offset) <= 30
        last = admitted.get(sender)
        if last is not None and now - last[1] <= 60:  # still remembered
            assert seq > last[0]
        admitted[sender] = (seq, now)
