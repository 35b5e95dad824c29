"""Herald in a FastAPI or Starlette app: one client for the app's lifetime.

``Herald`` opens an :class:`~herald.AsyncClient` when the app starts (its ``lifespan``) and
closes it when the app stops; endpoints get the client from :func:`client` (a FastAPI
dependency: ``hub: Hub``); subscriptions and durable consumers registered with
:meth:`Herald.subscriber` and :meth:`Herald.consumer` run while the app runs; :func:`relay`
forwards a subscription to a WebSocket as JSON. Needs Starlette (FastAPI for ``Hub``):
``pip install 'herald-pubsub[fastapi]'``.

Example::

    import herald
    from fastapi import FastAPI
    from herald.fastapi import Herald, Hub

    async def setup(hub: herald.AsyncClient) -> None:
        await hub.declare("orders", durable=True)  # before the consumer starts

    herald_ = Herald("redis://localhost:6379", setup=setup)
    app = FastAPI(lifespan=herald_.lifespan)

    @herald_.consumer("orders", "billing")
    async def bill(msg: herald.DurableMessage) -> None: ...

    @app.post("/orders")
    async def place(order: dict, hub: Hub) -> dict:
        ack = await hub.publish("orders", order)
        return {"offset": ack.offset}
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

try:
    from starlette.requests import HTTPConnection
    from starlette.websockets import WebSocket, WebSocketDisconnect
except ImportError as exc:  # pragma: no cover - herald installed without the extra
    raise ImportError(
        "herald.fastapi needs Starlette (FastAPI brings it): pip install 'herald-pubsub[fastapi]'"
    ) from exc


from herald import AsyncClient, ConfigurationError, Consumer, Message, Subscription

__all__ = ["Herald", "Hub", "client", "relay"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _Subscriber:
    names: tuple[str, ...]
    handler: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Consumer:
    topic: str
    group: str
    handler: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)


class Herald:
    """One Herald client for an ASGI app, opened and closed with the app.

    Args:
        url: the server, as for :class:`~herald.AsyncClient` (``None``: ``$HERALD_URL``, else
            the server of ``herald serve``).
        setup: a coroutine function run with the client once it is connected, before the
            subscriptions and consumers start: declare topics there.
        **options: the client's other options (``codec=``, ``publish_timeout=``, ...).

    The client is ``app.state.herald`` while the app runs, and :attr:`hub`. Subscriptions and
    consumers registered with the decorators start after the client connects, before the app
    takes requests, and stop before it closes.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        setup: Callable[[AsyncClient], Awaitable[Any]] | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self.setup = setup
        self.options = options
        self._hub: AsyncClient | None = None
        self._subscribers: list[_Subscriber] = []
        self._consumers: list[_Consumer] = []
        self.subscriptions: list[Subscription] = []
        self.running_consumers: list[Consumer] = []

    @property
    def hub(self) -> AsyncClient:
        """The client, while the app runs.

        Raises:
            RuntimeError: the app has not started, or has stopped.
        """
        if self._hub is None:
            raise RuntimeError("Herald's client is open only while the app runs (its lifespan)")
        return self._hub

    def subscriber(self, *names: str, **options: Any) -> Callable[[F], F]:
        """Register a handler for topics and patterns, subscribed while the app runs.

        ``options`` are :meth:`AsyncClient.subscribe`'s (``max_pending=``, ``since=``, ...). A
        handler's return value answers a request, as with ``subscribe(handler=...)``.

        Example::

            @herald_.subscriber("geo.lookup")
            def lookup(msg: herald.Message) -> dict:
                return {"country": "NZ"}
        """
        if not names:
            raise ConfigurationError("subscriber() needs at least one topic or pattern")

        def register(handler: F) -> F:
            self._subscribers.append(_Subscriber(names, handler, options))
            return handler

        return register

    def consumer(self, topic: str, group: str, **options: Any) -> Callable[[F], F]:
        """Register a handler as a consumer of a durable topic's group while the app runs.

        ``options`` are :meth:`AsyncClient.consume`'s (``ack_wait=``, ``concurrency=``,
        ``start=``, ...). Declare the topic durable in ``setup`` (or before the app starts).
        """

        def register(handler: F) -> F:
            self._consumers.append(_Consumer(topic, group, handler, options))
            return handler

        return register

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """The app's lifespan: ``FastAPI(lifespan=herald_.lifespan)``, or
        ``Starlette(lifespan=...)``. To combine it with your own, enter it inside yours:
        ``async with herald_.lifespan(app): yield``."""
        hub = AsyncClient(self.url, **self.options)
        try:
            await hub.connect()
            self._hub = hub
            app.state.herald = hub
            if self.setup is not None:
                await self.setup(hub)
            for s in self._subscribers:
                sub = await hub.subscribe(*s.names, handler=s.handler, **s.options)
                self.subscriptions.append(sub)
            for c in self._consumers:
                consumer = await hub.consume(c.topic, c.group, handler=c.handler, **c.options)
                self.running_consumers.append(consumer)
            yield
        finally:
            # Everything is closed even when one close fails (the client last): the first
            # failure is raised once all are done.
            self._hub = None
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_callback(hub.close)
                for sub in self.subscriptions:
                    stack.push_async_callback(sub.close)
                for consumer in self.running_consumers:
                    stack.push_async_callback(consumer.close)
                self.running_consumers.clear()
                self.subscriptions.clear()


def client(conn: HTTPConnection) -> AsyncClient:
    """The app's client (``app.state.herald``), for an endpoint: a FastAPI dependency, or call
    it with a Starlette ``Request`` or ``WebSocket``.

    Raises:
        RuntimeError: the app has no Herald lifespan running.
    """
    hub = getattr(conn.app.state, "herald", None)
    if not isinstance(hub, AsyncClient):
        raise RuntimeError("no Herald client: create the app with lifespan=Herald(...).lifespan")
    return hub


if TYPE_CHECKING:
    Hub = Annotated[AsyncClient, "the app's Herald client"]
else:
    try:
        from fastapi import Depends

        Hub = Annotated[AsyncClient, Depends(client)]
    except ImportError:  # Starlette alone: call client(request) instead
        Hub = AsyncClient
# An endpoint parameter ``hub: Hub`` gets the app's client (FastAPI).


def message_json(msg: Message) -> dict[str, Any]:
    """A message as the JSON object :func:`relay` sends: ``topic``, ``data``, ``offset``,
    ``id``, ``headers`` (bytes payloads as text, undecodable bytes replaced)."""
    data = msg.data
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data).decode("utf-8", "replace")
    return {
        "topic": msg.topic,
        "data": data,
        "offset": msg.offset,
        "id": msg.id,
        "headers": msg.headers,
    }


async def relay(
    websocket: WebSocket,
    hub: AsyncClient,
    *names: str,
    encode: Callable[[Message], Mapping[str, Any]] = message_json,
    **options: Any,
) -> None:
    """Accept a WebSocket and send it every message of a subscription, as JSON text frames,
    until the client disconnects (or the subscription ends).

    ``options`` are :meth:`AsyncClient.subscribe`'s (``last=10`` for a recoverable topic's
    recent messages first). The subscription is made before the socket is accepted, so no
    message published after the handshake is missed. What the client sends is read and
    ignored (a relay is one way; publish through an HTTP endpoint).

    Example::

        @app.websocket("/ws/prices")
        async def prices(websocket: WebSocket) -> None:
            await relay(websocket, client(websocket), "prices.*")
    """
    async with hub.subscribe(*names, **options) as sub:
        await websocket.accept()

        async def forward() -> None:
            async for msg in sub:
                await websocket.send_json(dict(encode(msg)))

        async def until_closed() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass

        sending = asyncio.ensure_future(forward())
        closed = asyncio.ensure_future(until_closed())
        try:
            done, _ = await asyncio.wait({sending, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, closed):
                task.cancel()
            await asyncio.gather(sending, closed, return_exceptions=True)
        if sending in done:
            sending.result()  # a subscription that failed raises here
            with contextlib.suppress(RuntimeError):
                await websocket.close()
