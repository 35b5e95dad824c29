"""The local topology harness (``herald.testing``): real processes, real signals."""

from __future__ import annotations

import pytest

from herald.testing import CommandError, LocalCluster, LocalSentinel, call


def test_cluster_covers_every_slot_with_replicas(cluster: LocalCluster) -> None:
    ranges = cluster.slot_map()
    assert ranges[0][0] == 0
    assert ranges[-1][1] == 16383
    assert sum(last - first + 1 for first, last, _, _ in ranges) == 16384
    assert len(cluster.primaries()) == 3
    for _, _, primary, replicas in ranges:
        assert primary.role() == "master"
        assert [r.role() for r in replicas] == ["slave"]
    assert cluster.url.startswith("redis+cluster://127.0.0.1:")
    assert len(cluster.url.split(",")) == 6


def test_cluster_routes_keys_by_slot(cluster: LocalCluster) -> None:
    counts: dict[int, int] = {}
    for i in range(60):
        key = f"harness:{i}"
        node = cluster.primary_for(key)
        assert node.call("SET", key, i) == b"OK"
        counts[node.port] = counts.get(node.port, 0) + 1
        # Every other primary redirects.
        other = next(p for p in cluster.primaries() if p is not node)
        with pytest.raises(CommandError, match="MOVED"):
            other.call("GET", key)
    assert len(counts) == 3
    assert sum(counts.values()) == 60


def test_cluster_kill_pause_restart_and_migrate(own_cluster: LocalCluster) -> None:
    c = own_cluster
    slot = c.keyslot("{busy}")
    c.primary_for(slot).call("SET", "{busy}k", "v")
    old = c.primary_for(slot)
    replica = c.replicas_of(old)[0]
    c.wait_ok()
    c.kill(old)
    new = c.wait_failover(old)
    assert new is replica
    assert new.role() == "master"
    assert new.call("GET", "{busy}k") == b"v"
    c.restart(old)
    c.wait_ok()
    assert old.role() == "slave"
    target = next(p for p in c.primaries() if p is not new)
    c.migrate_slot(slot, target)
    assert c.primary_for("{busy}k") is target
    assert target.call("GET", "{busy}k") == b"v"
    assert int(new.call("CLUSTER", "COUNTKEYSINSLOT", slot)) == 0
    # SIGSTOP: the paused primary is failed over and rejoins as a replica once resumed.
    old = next(p for p in c.primaries() if p is not target)
    c.pause(old)
    new = c.wait_failover(old)
    assert new is not old
    c.resume(old)
    c.wait_ok()
    assert old.role() == "slave"


def test_sentinel_group(sentinel: LocalSentinel) -> None:
    primary = sentinel.primary
    assert sentinel.role(primary) == "master"
    assert [sentinel.role(r) for r in sentinel.replicas()] == ["slave"]
    hosts, name = sentinel.url.removeprefix("redis+sentinel://").split("/")
    assert name == "herald"
    assert len(hosts.split(",")) == 3
    for s in sentinel.sentinels:
        reply = call(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "herald")
        assert int(reply[1]) == primary.port


def test_sentinel_with_passwords() -> None:
    with LocalSentinel(replicas=1, sentinels=1, password="pw", sentinel_password="spw") as g:
        assert g.url.endswith("/herald?sentinel_password=spw")
        assert g.url.startswith("redis+sentinel://:pw@")
        with pytest.raises(CommandError, match="NOAUTH"):
            call(g.sentinels[0].port, "SENTINEL", "MASTERS")
        assert g.role(g.primary) == "master"
