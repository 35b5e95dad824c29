"""Cluster slots (sans-I/O): CRC16 key slots against the server's CLUSTER KEYSLOT, slot-map
parsing of real CLUSTER SLOTS / SHARDS replies, MOVED/ASK, command routing keys, cluster URLs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald import ConfigurationError
from herald._core.resp import command
from herald._core.slots import (
    SLOTS,
    Node,
    SlotMap,
    command_key,
    crc16,
    encoded_key,
    key_slot,
    parse_redirect,
)
from herald._core.streams import TOPICS_KEY, TOPICS_VERSION_KEY, dedup_key, stream_key
from herald._core.url import parse_url
from herald.testing import LocalCluster


def test_crc16_known_vectors() -> None:
    assert crc16(b"123456789") == 0x31C3  # the CRC16/XMODEM check value
    assert crc16(b"") == 0
    # Values from the Redis Cluster specification's examples.
    assert key_slot("foo") == 12182
    assert key_slot("bar") == 5061
    assert (
        key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    )


def test_hash_tags() -> None:
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # empty tag: whole key hashed
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert key_slot(b"\xff{x}") == key_slot("x")


def test_herald_keys_share_their_topics_slot() -> None:
    for topic in ("orders", "a.b.c", "orders.dead"):
        assert key_slot(stream_key(topic)) == key_slot(topic.removesuffix(".dead"))
        assert key_slot(dedup_key(topic, "m1")) == key_slot(stream_key(topic))
    # The policy registry's two keys are used by one script: one slot.
    assert key_slot(TOPICS_KEY) == key_slot(TOPICS_VERSION_KEY)


def test_slots_match_the_server(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    keys = ["orders", "herald:{orders}:s", "123456789", "a{b}c", "{}x", "a{}b{c}", "{{x}}", "é{ü}"]
    for key in keys:
        assert int(node.call("CLUSTER", "KEYSLOT", key)) == key_slot(key), key


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="ab{}.:é", max_size=12) | st.binary(max_size=12),
)
def test_slots_match_the_server_random(cluster: LocalCluster, key: str | bytes) -> None:
    if not key:
        return
    assert int(cluster.nodes[0].call("CLUSTER", "KEYSLOT", key)) == key_slot(key)


def test_slot_map_from_real_replies(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    for slots in (
        SlotMap.from_cluster_slots(node.call("CLUSTER", "SLOTS")),
        SlotMap.from_cluster_shards(node.call("CLUSTER", "SHARDS")),
    ):
        assert slots.complete
        assert len(slots.shards) == 3
        assert all(len(s.replicas) == 1 for s in slots.shards)
        for first, last, primary, _ in cluster.slot_map():
            for slot in (first, last, (first + last) // 2):
                assert slots.node_for(slot) == Node(primary.host, primary.port)
        assert len(slots.nodes) == 6


def test_slot_map_moved() -> None:
    slots = SlotMap.from_cluster_slots(
        [[0, SLOTS - 1, [b"127.0.0.1", 7000, b"id"], [b"127.0.0.1", 7001, b"id2"]]]
    )
    assert slots.node_for(5) == Node("127.0.0.1", 7000)
    slots.moved(5, Node("127.0.0.1", 7002))
    assert slots.node_for(5) == Node("127.0.0.1", 7002)
    assert slots.node_for(6) == Node("127.0.0.1", 7000)
    empty = SlotMap()
    assert not empty.complete
    assert empty.node_for(0) is None


def test_parse_redirect() -> None:
    r = parse_redirect("MOVED 3999 127.0.0.1:6381")
    assert r is not None
    assert (r.kind, r.slot, r.node) == ("MOVED", 3999, Node("127.0.0.1", 6381))
    r = parse_redirect("ASK 1 ::1:7000")
    assert r is not None
    assert (r.kind, r.node) == ("ASK", Node("::1", 7000))
    r = parse_redirect("MOVED 7 :7000", default_host="10.0.0.5")
    assert r is not None
    assert r.node == Node("10.0.0.5", 7000)
    assert parse_redirect("ERR unknown command") is None
    assert parse_redirect("MOVED x y:z") is None


def test_command_keys() -> None:
    assert command_key(("XADD", "herald:{a}:s", "*", "m", b"x")) == b"herald:{a}:s"
    assert command_key(("EVALSHA", "sha", 2, "k1", "k2", "arg")) == b"k1"
    assert command_key(("EVALSHA", "sha", 0, "arg")) is None
    assert command_key(("XREADGROUP", "GROUP", "g", "c", "BLOCK", 5, "STREAMS", "s", ">")) == b"s"
    assert command_key(("XINFO", "GROUPS", "herald:{a}:s")) == b"herald:{a}:s"
    assert command_key(("XGROUP", "CREATE", "herald:{a}:s", "g", "$")) == b"herald:{a}:s"
    assert command_key(("PING",)) is None
    assert command_key(("CONFIG", "GET", "x")) is None
    assert command_key(("SCAN", 0, "MATCH", "herald:{a}:d:*")) == b"herald:{a}:d:*"
    assert command_key(("SCAN", 0, "MATCH", "x*")) is None
    assert encoded_key(command("XACK", "herald:{a}:s", "g", "1-1")) == b"herald:{a}:s"
    assert encoded_key(command("EVALSHA", "sha", 1, "k") + command("PING")) == b"k"


def test_cluster_urls() -> None:
    ep = parse_url("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001/?ssl_cert_reqs=none")
    assert ep.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (ep.host, ep.port, ep.username, ep.password, ep.tls) == (
        "10.0.0.1",
        7000,
        "u",
        "p@ss",
        False,
    )
    tls = parse_url("rediss+cluster://h1:1,h2")
    assert tls.tls
    assert tls.seeds == (("h1", 1), ("h2", 6379))
    assert parse_url("redis://h:1").seeds == ()
    with pytest.raises(ConfigurationError):
        parse_url("redis+cluster://")
    with pytest.raises(ConfigurationError):
        parse_url("redis+cluster://h:x")
    with pytest.raises(ConfigurationError):
        parse_url("redis+cluster://h:1/3")
