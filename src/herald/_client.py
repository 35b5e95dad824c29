"""The asyncio client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, overload

import msgspec

from ._errors import (
    ClientClosed,
    ConfigurationError,
    ConnectionFailed,
    HeraldError,
    MessageTooLarge,
    PermissionDenied,
    Timeout,
)
from ._link import Link
from ._resp import prefix
from ._server import EmbeddedServer, discover
from ._subscriber import Subscriber
from ._subscription import Gap, Handler, Overflow, Subscription
from ._topics import validate_subscription, validate_topic
from ._url import Endpoint, parse_url
from ._wire import Codec, Encoder

log = logging.getLogger("herald")

TOPICS_KEY = "herald:topics"  # hash: topic -> JSON policy
TOPICS_VERSION_KEY = "herald:topics:version"  # incremented by every declare/delete
_PUBLISH = b"PUBLISH"
_PREFIX_CACHE_MAX = 10_000


class TopicPolicy(msgspec.Struct, frozen=True, omit_defaults=True):
    """How a topic is published, stored in Redis so every client agrees.

    Attributes:
        bare: publish the payload alone, without Herald's envelope, for plain Redis subscribers.
    """

    bare: bool = False


_policy_decode = msgspec.json.Decoder(TopicPolicy).decode


@dataclass(frozen=True, slots=True)
class PubAck:
    """The server's answer to a confirmed publish.

    Attributes:
        receivers: live deliveries the server made (per subscribed channel and matching pattern).
    """

    receivers: int


@dataclass
class ClientStats:
    """Counters of one client."""

    published: int
    reconnects: int
    gaps: int
    publish_errors: int
    connected: bool


class AsyncClient:
    """Publish and subscribe with asyncio.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://``; ``None`` means ``$HERALD_URL``, else
            the server ``herald serve`` runs, else (``start_embedded``) a fresh embedded Valkey
            owned by this client and stopped with it.
        codec: payload codec for values that are not ``bytes`` or ``str``: json or msgpack.
        batch: pack consecutive publishes to one topic into one frame when they queue up.
        max_message_size: largest encoded message accepted by ``publish``.
        publish_timeout: how long ``publish`` waits for buffer space before :class:`Timeout`.
        probe_interval: seconds between liveness probes on each connection (0 disables).
        probe_timeout: how long a probe may take before the connection is declared dead.

    Example::

        async with herald.AsyncClient("redis://localhost:6379") as hub:
            await hub.publish("news.sport", {"title": "3:1"})
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        codec: Codec = "json",
        batch: bool = True,
        max_message_size: int = 1024 * 1024,
        connect_timeout: float = 5.0,
        publish_timeout: float | None = 10.0,
        subscribe_timeout: float = 10.0,
        probe_interval: float = 5.0,
        probe_timeout: float | None = None,
        max_pending_bytes: int = 8 * 1024 * 1024,
        policy_refresh: float = 1.0,
        start_embedded: bool = True,
        name: str = "herald",
    ) -> None:
        self.url = url
        self.batch = batch
        self.max_message_size = max_message_size
        self.publish_timeout = publish_timeout
        self.subscribe_timeout = subscribe_timeout
        self.policy_refresh = policy_refresh
        self.start_embedded = start_embedded
        self._encoder = Encoder(codec)
        self._name = name
        self._link_options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "probe_interval": probe_interval,
            "probe_timeout": probe_timeout,
            "max_pending_bytes": max_pending_bytes,
        }
        self.endpoint: Endpoint | None = parse_url(url) if url else None
        self._link: Link | None = None
        self._subscriber: Subscriber | None = None
        self._server: EmbeddedServer | None = None
        self._prefixes: dict[str, tuple[bytes, bool]] = {}
        self._policies: dict[str, TopicPolicy] = {}
        self._policy_version: bytes | None = None
        self._warned_bare: set[str] = set()
        self._policy_task: asyncio.Task[None] | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._closed = False
        self.published = 0
        # (hard, soft, soft seconds) of the server's pubsub output buffer, if readable
        self.pubsub_buffer_limit: tuple[int, int, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect (done implicitly by the first call that needs it)."""
        if self._link is not None:
            return
        if self._closed:
            raise ClientClosed("client closed")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._link is not None:
                return
            if self.endpoint is None:
                self.endpoint = parse_url(await self._default_url())
            tag = self._encoder.publisher_id.hex()[:8]
            link = Link(self.endpoint, name=f"{self._name}-{tag}-pub", **self._link_options)
            await link.connect()
            self._link = link
            try:
                await self._load_policies()
                await self._check_server_limits()
            except BaseException:
                # e.g. an ACL user who may not read herald:topics: leave nothing running.
                self._link = None
                await link.close()
                raise
            if self.policy_refresh > 0:
                self._policy_task = asyncio.get_running_loop().create_task(self._watch_policies())

    async def _check_server_limits(self) -> None:
        """Read the server's Pub/Sub output-buffer limit: the point where it cuts a slow reader."""
        assert self._link is not None
        try:
            reply = await self._link.execute("CONFIG", "GET", "client-output-buffer-limit")
        except HeraldError:
            return  # CONFIG may be refused by the ACL; nothing to learn then
        self.pubsub_buffer_limit = _pubsub_limit(reply)
        hard = self.pubsub_buffer_limit[0] if self.pubsub_buffer_limit else None
        if hard == 0:
            log.warning(
                "the server has no client-output-buffer-limit for pubsub: a stalled subscriber "
                "can grow the server's memory without bound"
            )

    async def _default_url(self) -> str:
        if url := os.environ.get("HERALD_URL"):
            return url
        if url := discover():
            return url
        if not self.start_embedded:
            raise ConnectionFailed(
                "no Herald server is running: start one with `herald serve`, "
                "or pass a URL (--url or $HERALD_URL)"
            )
        server = EmbeddedServer(persist=False)
        # Launched on the loop's thread, not a to_thread worker: the server dies with the thread
        # that started it (PR_SET_PDEATHSIG), and the loop's thread lives as long as this client.
        server.launch()
        try:
            await asyncio.to_thread(server.wait_ready)
        except BaseException:  # failed, or cancelled by Ctrl-C: leave no server behind
            server.kill()
            server.cleanup()
            raise
        self._server = server
        log.info("started an embedded Valkey at %s", server.url)
        return server.url

    async def close(self) -> None:
        """Close connections and subscriptions; stop the embedded server this client started."""
        if self._closed:
            return
        self._closed = True
        if self._policy_task is not None:
            self._policy_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._policy_task
        try:
            if self._subscriber is not None:
                await self._subscriber.close()
            if self._link is not None:
                try:
                    await self.flush()
                except (HeraldError, TimeoutError) as exc:  # close anyway
                    log.warning("closing: messages not yet sent may be lost: %s", exc)
                await self._link.close()
        finally:
            if self._server is not None:
                server, self._server = self._server, None
                await _stop_server(server)

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- publishing --------------------------------------------------------------------------

    def _prefix(self, topic: str) -> tuple[bytes, bool]:
        entry = self._prefixes.get(topic)
        if entry is None:
            raw = validate_topic(topic)
            policy = self._policies.get(topic)
            entry = (prefix(_PUBLISH, raw), policy is not None and policy.bare)
            if len(self._prefixes) >= _PREFIX_CACHE_MAX:
                self._prefixes.clear()
            self._prefixes[topic] = entry
        return entry

    def _frame(
        self, topic: str, data: Any, headers: Mapping[str, str] | None
    ) -> tuple[bytes, bytes, bool]:
        pfx, bare = self._prefix(topic)
        if not bare:
            frame = self._encoder.envelope(data, headers)
        else:
            if headers and topic not in self._warned_bare:
                self._warned_bare.add(topic)
                log.warning("topic %r is bare: its messages carry no headers", topic)
            frame = self._encoder.payload(data)[1]
        if len(frame) > self.max_message_size:
            raise MessageTooLarge(len(frame), self.max_message_size)
        return pfx, frame, bare

    @overload
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: Literal[True],
    ) -> PubAck: ...

    @overload
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: bool = False,
    ) -> PubAck | None: ...

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: bool = False,
    ) -> PubAck | None:
        """Publish one message.

        Returns ``None`` at once without a round trip; with ``confirm=True`` waits for the
        server and returns a :class:`PubAck` whose ``receivers`` is the server's delivery count:
        one per subscribed channel and per matching pattern of every connection (a connection
        with both counts, and receives, twice).
        While the server is unreachable, messages are kept (up to ``max_pending_bytes``) and
        sent after the reconnect; a confirmed publish waits up to ``publish_timeout`` for the
        connection to come back.

        Raises:
            InvalidTopic, MessageTooLarge, TypeError: before anything is sent.
            Timeout: the send buffer stayed full (or, with ``confirm=True``, the connection
                stayed down) for ``publish_timeout``; the message was not queued.
            ConnectionLost: with ``confirm=True``, the connection died before the reply.
        """
        link = self._link
        if link is None:
            await self.connect()
            link = self._link
            assert link is not None
        pfx, frame, bare = self._frame(topic, data, headers)
        if confirm:
            # Wait for the connection before queuing: a Timeout then means "not sent", never
            # "sent later by surprise".
            if not link.connected:
                await link.wait_connected(self.publish_timeout)
            receivers = int(await link.execute(_PUBLISH, topic, frame))
            self.published += 1
            return PubAck(receivers)
        if link.blocked:
            await link.wait_writable(self.publish_timeout)
        self.published += 1
        if link.publish_nowait(pfx, frame, self.batch and not bare):
            await asyncio.sleep(0)  # a publisher in a tight loop still lets other tasks run
        return None

    def _publish_threadsafe(self, topic: str, data: Any, headers: Mapping[str, str] | None) -> None:
        link = self._link
        if link is None:
            raise ClientClosed("client is not connected")
        pfx, frame, bare = self._frame(topic, data, headers)
        link.publish_threadsafe(pfx, frame, self.batch and not bare, self.publish_timeout)
        self.published += 1

    async def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until everything published so far has been written and answered by the server.

        During an outage this waits for the reconnect (messages buffered meanwhile go first).
        """
        link = self._link
        if link is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await link.wait_connected(None)
                await link.execute("PING")
        except TimeoutError:
            raise Timeout(f"flush not answered within {timeout}s", timeout) from None

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(
        self,
        *names: str,
        handler: Handler | None = None,
        max_pending: int = 10_000,
        overflow: Overflow = "drop_oldest",
        on_gap: Callable[[Gap], Any] | None = None,
    ) -> Subscription:
        """Subscribe to topics and glob patterns (``*``, ``?``, ``[a-z]``, ``\\`` escapes).

        Use as ``async with hub.subscribe(...) as sub``, or ``sub = await hub.subscribe(...)``;
        with ``handler`` every message is passed to it (a function or coroutine function) on a
        task of this client until the subscription is closed.

        Example::

            async with hub.subscribe("news.*") as sub:
                async for msg in sub:
                    print(msg.topic, msg.data)
        """
        if not names:
            raise ConfigurationError("subscribe needs at least one topic or pattern")
        for name in names:
            validate_subscription(name)
        if self._closed:
            raise ClientClosed("client closed")
        return Subscription(
            _Registry(self),
            tuple(dict.fromkeys(names)),
            max_pending=max_pending,
            overflow=overflow,
            on_gap=on_gap,
            handler=handler,
        )

    async def _get_subscriber(self) -> Subscriber:
        if self._subscriber is None:
            await self.connect()
            assert self.endpoint is not None
            tag = self._encoder.publisher_id.hex()[:8]
            self._subscriber = Subscriber(
                self.endpoint,
                name=f"{self._name}-{tag}-sub",
                subscribe_timeout=self.subscribe_timeout,
                **self._link_options,
            )
        return self._subscriber

    # -- topic policies ----------------------------------------------------------------------

    async def declare(self, topic: str, *, bare: bool = False) -> TopicPolicy:
        """Store a topic's policy in Redis; every client applies it within ``policy_refresh``.

        Example::

            await hub.declare("legacy.events", bare=True)  # plain payloads for redis-py readers
        """
        validate_topic(topic)
        await self.connect()
        assert self._link is not None
        policy = TopicPolicy(bare=bare)
        await self._link.execute("HSET", TOPICS_KEY, topic, msgspec.json.encode(policy))
        await self._link.execute("INCR", TOPICS_VERSION_KEY)
        self._apply_policies({**self._policies, topic: policy})
        return policy

    async def topics(self) -> dict[str, TopicPolicy]:
        """Declared topics and their policies (a topic nobody declared is live)."""
        await self._load_policies()
        return dict(self._policies)

    async def _load_policies(self) -> None:
        assert self._link is not None
        try:
            version, raw = await asyncio.gather(
                self._link.execute("GET", TOPICS_VERSION_KEY),
                self._link.execute("HGETALL", TOPICS_KEY),
            )
        except PermissionDenied as exc:
            # An ACL user without access to the registry can still use live topics.
            if self._policy_version != b"denied":
                log.warning(
                    "cannot read topic policies (%s, %s): every topic is treated as live; "
                    "grant read access to these keys (%s)",
                    TOPICS_KEY,
                    TOPICS_VERSION_KEY,
                    exc,
                )
            self._policy_version = b"denied"
            return
        policies: dict[str, TopicPolicy] = {}
        it = iter(raw)
        for k, v in zip(it, it, strict=True):
            try:
                policies[k.decode()] = _policy_decode(v)
            except (msgspec.DecodeError, UnicodeDecodeError):
                log.warning("ignoring undecodable policy of topic %r in %s", k, TOPICS_KEY)
        self._policy_version = version
        self._apply_policies(policies)

    def _apply_policies(self, policies: dict[str, TopicPolicy]) -> None:
        if policies != self._policies:
            self._policies = policies
            self._prefixes.clear()

    async def _watch_policies(self) -> None:
        assert self._link is not None
        while True:
            await asyncio.sleep(self.policy_refresh)
            try:
                version = await self._link.execute("GET", TOPICS_VERSION_KEY)
                if version != self._policy_version:
                    await self._load_policies()
            except Exception as exc:  # connection trouble: the link reconnects by itself
                log.debug("policy refresh failed: %s", exc)

    # -- introspection -----------------------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        link = self._link
        sub = self._subscriber
        return ClientStats(
            published=self.published,
            reconnects=(link.reconnects if link else 0) + (sub.link.reconnects if sub else 0),
            gaps=sub.gaps if sub else 0,
            publish_errors=link.errors if link else 0,
            connected=bool(link and link.connected),
        )

    async def execute(self, *args: str | bytes | int | float) -> Any:
        """Run any Redis command on the client's command connection and return its reply."""
        await self.connect()
        assert self._link is not None
        return await self._link.execute(*args)


def _pubsub_limit(reply: Any) -> tuple[int, int, int] | None:
    # reply: [b"client-output-buffer-limit", b"normal 0 0 0 replica ... pubsub 33554432 8388608 60"]
    try:
        words = reply[1].decode().split()
        i = words.index("pubsub")
        return int(words[i + 1]), int(words[i + 2]), int(words[i + 3])
    except (IndexError, ValueError, AttributeError, UnicodeDecodeError):
        return None


async def _stop_server(server: EmbeddedServer, timeout: float = 10.0) -> None:
    # Waited for on the loop, not in to_thread: when atexit closes a Client at interpreter exit
    # the default executor is already shut down and to_thread raises RuntimeError.
    server.terminate()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.running and loop.time() < deadline:  # noqa: ASYNC110 - a process, not a task
        await asyncio.sleep(0.01)
    server.kill()  # only if it did not finish its shutdown in time
    server.cleanup()


class _Registry:
    """Connects the client's subscriber connection when its first subscription starts."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._real: Subscriber | None = None

    async def add(self, sub: Subscription) -> None:
        self._real = await self._client._get_subscriber()
        await self._real.add(sub)

    async def remove(self, sub: Subscription) -> None:
        if self._real is not None:
            await self._real.remove(sub)

    def discard(self, sub: Subscription) -> None:
        if self._real is not None:
            self._real.discard(sub)
