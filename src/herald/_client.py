"""The asyncio client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from herald._core.history import (
    READ_HISTORY,
    Counters,
    Page,
    history_key,
    meta_key,
    parse_page,
)
from herald._core.options import CertReqs, byte_count
from herald._core.topics import (
    check_user_name,
    validate_subscription,
)
from herald._core.url import Endpoint, parse_url, shards_endpoint, with_options
from herald._core.wire import Codec, Encoder, Foreign
from herald._durable.consumer import Consumer
from herald._durable.publish import Scripts
from herald._io.cluster import new_link
from herald._io.interface import Connection
from herald._io.sentinel import SentinelResolver
from herald._io.server_checks import check_server_limits, warn_volatile
from herald._io.sharded import shard_resolvers
from herald._pubsub.cluster import new_subscriber
from herald._pubsub.recovery import check_start
from herald._pubsub.request import Requests
from herald._pubsub.responders import Responder
from herald._pubsub.subscriber import Subscriber
from herald._pubsub.subscription import (
    Gap,
    Handler,
    Overflow,
    Subscription,
    SubscriptionOptions,
)

from ._client_commands import Commands
from ._client_durable import Route
from ._client_request import RequestReply
from ._errors import (
    ClientClosed,
    ConfigurationError,
    ConnectionFailed,
    HeraldError,
    HistoryLost,
    Timeout,
)
from ._models import ClientStats
from ._pipeline import Spares
from ._policies import Policies
from ._server import EmbeddedServer, discover, start_private, stop_private
from ._tracing import Tracing, make_tracing, trace_subscription

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("herald")


class AsyncClient(Commands, RequestReply):
    """Publish and subscribe with asyncio.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://h:p,h:p`` or
            ``redis+sentinel://h:p,h:p/name`` (``rediss+`` for TLS; query options
            ``ssl_ca_certs=``, ``ssl_certfile=``, ``ssl_keyfile=``, ``ssl_check_hostname=``,
            ``ssl_cert_reqs=``: see ``docs/scaling.md``); ``None`` means ``$HERALD_URL``, else
            the server ``herald serve`` runs, else (``start_embedded``) a fresh embedded Valkey
            owned by this client and stopped with it.
        codec: payload codec for values that are not ``bytes`` or ``str``: json or msgpack.
        batch: pack consecutive publishes to one topic into one frame when they queue up.
        envelope: ``False`` publishes live topics' payloads alone, without Herald's envelope
            (no id, timestamp or headers), as plain Redis subscribers expect: ``bytes``
            unchanged, ``str`` as UTF-8, other values in ``codec`` (JSON by default). Durable
            and recoverable topics, requests and replies keep the envelope; ``publish``'s
            ``envelope`` argument chooses per message.
        sharded: ``False`` publishes live messages on a cluster with ``PUBLISH`` instead of
            ``SPUBLISH``, so that plain ``SUBSCRIBE`` clients receive them (every node then
            carries every message: see ``docs/scaling.md``); a topic's ``sharded=False``
            policy does this for one topic. Other deployments ignore it.
        max_message_size: largest encoded message accepted by ``publish``.
        publish_timeout: how long ``publish`` waits for buffer space before :class:`Timeout`.
        probe_interval: seconds between liveness probes on each connection (0 disables).
        probe_timeout: how long a probe may take before the connection is declared dead.
        shards: spread topics over several independent servers instead of one ``url``: a list
            of URLs (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``), each
            named by its ``host:port`` (a Sentinel group by its primary's name), or a mapping
            of name -> URL. Each topic lives on one of them, chosen from its name and the
            shards' names (``docs/scaling.md``, "Shards"); every client must list the same
            names. ``redis+shards://h1:6379,h2:6379`` as ``url`` is the same for standalone
            servers that share credentials and options.
        tracing: ``True`` makes OpenTelemetry spans (publish, receive, process, settle,
            request, reply) with the global tracer provider, and carries the trace context in
            the messages' ``traceparent``/``tracestate`` headers; a ``TracerProvider`` uses
            that provider. Needs the ``otel`` extra (``docs/tracing.md``).
        username, password, db, ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs,
            ssl_check_hostname, sentinel_username, sentinel_password: the URL's options (see
            ``docs/configuration.md``), given in code; ``None`` leaves the URL's (or the
            default). An option the URL also gives must have the same value, else
            :class:`ConfigurationError`; TLS options need a ``rediss://`` URL.

    Example::

        async with herald.AsyncClient("redis://localhost:6379") as hub:
            await hub.publish("news.sport", {"title": "3:1"})
    """

    # herald.Client repeats the public signatures on purpose: see the note in _sync.py.

    def __init__(
        self,
        url: str | None = None,
        *,
        codec: Codec = "json",
        batch: bool = True,
        envelope: bool = True,
        sharded: bool = True,
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
        tracing: bool | TracerProvider = False,
        username: str | None = None,
        password: str | None = None,
        db: int | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cert_reqs: CertReqs | None = None,
        ssl_check_hostname: bool | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        shards: Sequence[str] | Mapping[str, str] | None = None,
    ) -> None:
        if shards is not None and url is not None:
            raise ConfigurationError("give either url= or shards=, not both")
        self.url = url
        # Keywords that say how to connect, applied to the URL's endpoint (with_options).
        self._connection_options: dict[str, Any] = {
            "username": username,
            "password": password,
            "db": db,
            "ssl_ca_certs": ssl_ca_certs,
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
            "ssl_cert_reqs": ssl_cert_reqs,
            "ssl_check_hostname": ssl_check_hostname,
            "sentinel_username": sentinel_username,
            "sentinel_password": sentinel_password,
        }
        self.batch = bool(batch)  # compiled, Link takes a bool only
        self.envelope = envelope
        self.sharded = sharded
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
            "max_pending_bytes": byte_count("max_pending_bytes", max_pending_bytes),
        }
        if shards is not None and any(v is not None for v in self._connection_options.values()):
            raise ConfigurationError(
                "with shards=, connection options go in each shard's URL (or the "
                "redis+shards:// URL), not in keyword arguments"
            )
        self.endpoint: Endpoint | None = (
            shards_endpoint(shards)
            if shards is not None
            else with_options(parse_url(url), self._connection_options)
            if url
            else None
        )
        self._link: Connection | None = None
        self._subscriber: Subscriber | None = None
        self._requests: Requests | None = None
        self._server: EmbeddedServer | None = None
        self._prefixes: dict[str, Route] = {}
        # Routes of topics only Herald writes (reply inboxes, dead-letter topics): kept out of
        # _prefixes, so that publish's fast path never finds them and the slow path refuses them.
        self._internal: dict[str, Route] = {}
        self._fsync_waits: dict[tuple[int, int], asyncio.Future[Any]] = {}  # see wait_fsync
        self._history_totals = Counters()
        self._durable: Scripts | None = None
        self._consumers: set[Consumer] = set()
        self._responders: set[Responder] = set()
        self._policies = Policies()
        self._warned_bare: set[str] = set()
        self._persistent: bool | None = None  # None: not known (CONFIG refused), see connect
        self._warned_volatile = False
        self._policy_task: asyncio.Task[None] | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._spares = Spares()  # dedicated connections: blocking commands, WATCH
        self._closed = False
        # None unless tracing was asked for: what each traced path checks, and all it costs
        self._tracing: Tracing | None = make_tracing(tracing)
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
                self.endpoint = with_options(
                    parse_url(await self._default_url()), self._connection_options
                )
            if self.endpoint.sentinel is not None and "resolver" not in self._link_options:
                # Every connection of this client asks the sentinels where the primary is.
                self._link_options["resolver"] = SentinelResolver(self.endpoint)
            if self.endpoint.shards and "resolvers" not in self._link_options:
                self._link_options["resolvers"] = shard_resolvers(self.endpoint)
            tag = self._encoder.publisher_id.hex()[:8]
            link = new_link(self.endpoint, name=f"{self._name}-{tag}-pub", **self._link_options)
            await link.connect()
            self._link = link
            self._route_plain()
            try:
                await self._load_policies()
                self.pubsub_buffer_limit, self._persistent = await check_server_limits(link)
            except BaseException:
                # e.g. an ACL user who may not read herald:topics: leave nothing running.
                self._link = None
                await link.close()
                raise
            if self.policy_refresh > 0:
                self._policy_task = asyncio.get_running_loop().create_task(self._watch_policies())

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
        self._server = await start_private()
        return self._server.url

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
            for consumer in list(self._consumers):  # first: they ack and hand back on _link
                await consumer.close()
            for responder in list(self._responders):
                await responder.close()
            if self._subscriber is not None:
                await self._subscriber.close()
            await self._spares.close()
            if self._link is not None:
                try:
                    await self.flush()
                except (HeraldError, TimeoutError) as exc:  # close anyway
                    log.warning("closing: messages not yet sent may be lost: %s", exc)
                await self._link.close()
        finally:
            if self._server is not None:
                server, self._server = self._server, None
                await stop_private(server)

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- publishing (publish and publish_many: _client_publish) -------------------------------

    def _scripts(self) -> Scripts:
        if self._durable is None:
            assert self._link is not None
            self._durable = Scripts(self._link)
        return self._durable

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
        since: int | None = None,
        epoch: int | None = None,
        last: int | None = None,
        on_history_lost: Callable[[HistoryLost], Any] | None = None,
        error_text: bool = False,
        foreign: Foreign = "bytes",
    ) -> Subscription:
        """Subscribe to topics and glob patterns (``*``, ``?``, ``[a-z]``, ``\\`` escapes).

        Use as ``async with hub.subscribe(...) as sub``, or ``sub = await hub.subscribe(...)``;
        with ``handler`` every message is passed to it (a function or coroutine function), in
        order, on this client's event loop until the subscription is closed: a plain function
        is called as the message arrives when nothing is queued before it, else from the
        subscription's task (it must not block: that would hold up the connection).

        Recoverable topics (declared with ``history``; see ``docs/recoverable.md``) start at
        the first message published after the subscribe, or ``last`` messages earlier, or
        after offset ``since`` (one topic; with its ``epoch`` if known, to detect a reset).
        Their messages arrive in order, none twice, none missed across reconnects; history
        that no longer reaches back raises :class:`HistoryLost` from the iterator, or calls
        ``on_history_lost`` (and the subscription goes on).

        A handler that returns a value for a request answers it (``docs/request-reply.md``);
        when it raises, the requester gets an error reply with the exception's type and an
        error id (logged here with the exception), not its message: ``error_text=True`` sends
        the message too, for exceptions whose text is fit for the requester.

        ``foreign`` says how to read *foreign* payloads, published without Herald's envelope by
        another program (redis-cli, redis-py, Node): ``"bytes"`` (the default) delivers them
        unchanged, ``"json"`` decodes them as JSON (``{"user":"bob"}`` arrives as a dict, also
        for a typed handler), ``"text"`` as UTF-8. One that does not decode is delivered as
        bytes with ``decode_error`` set (``msg.foreign`` stays true), counted in
        ``stats.undecodable`` and logged; a typed handler skips it (``stats.invalid``).

        Raises:
            ReservedName: a name in the reply inbox namespace ``_herald.inbox.*``.

        Example::

            async with hub.subscribe("news.*") as sub:
                async for msg in sub:
                    print(msg.topic, msg.data)
        """
        if not names:
            raise ConfigurationError("subscribe needs at least one topic or pattern")
        for name in names:
            validate_subscription(name)
            check_user_name(name)
        unique = tuple(dict.fromkeys(names))
        check_start(unique, since, epoch, last)
        if self._closed:
            raise ClientClosed("client closed")
        options = SubscriptionOptions(
            max_pending=max_pending,
            overflow=overflow,
            on_gap=on_gap,
            since=since,
            epoch=epoch,
            last=last,
            on_history_lost=on_history_lost,
            error_text=error_text,
            foreign=foreign,
        )
        sub = Subscription(self._registry(), unique, options, handler)
        if self._tracing is not None:
            trace_subscription(self._tracing, sub)
        return sub

    async def _history_topics(self, names: tuple[str, ...]) -> dict[str, str | None]:
        """The recoverable topics among ``names`` and matched by its patterns (-> pattern)."""
        await self.connect()
        assert self._link is not None
        if self._link.connected:  # else the policies in hand will do (no wait in an outage)
            with contextlib.suppress(HeraldError, TimeoutError):
                async with asyncio.timeout(self.subscribe_timeout):
                    if await self._policies.refresh(self._link.execute):
                        self._policies_changed()
        return self._policies.recoverable_among(names)

    async def _read_history(self, topic: str, after: int, limit: int) -> Page:
        await self.connect()
        reply = await self._scripts().call(
            READ_HISTORY, [meta_key(topic), history_key(topic)], [after, limit]
        )
        return parse_page(reply)

    def _registry(self) -> _Registry:
        """A subscription's view of the client (connects the subscriber on first use)."""
        return _Registry(self)

    async def _get_subscriber(self) -> Subscriber:
        if self._subscriber is None:
            await self.connect()
            assert self.endpoint is not None
            tag = self._encoder.publisher_id.hex()[:8]
            assert self._link is not None
            self._subscriber = new_subscriber(
                self._link,
                self.endpoint,
                name=f"{self._name}-{tag}-sub",
                subscribe_timeout=self.subscribe_timeout,
                replier=self._request_table(),
                **self._link_options,
            )
        return self._subscriber

    async def _load_policies(self) -> None:
        assert self._link is not None
        if await self._policies.load(self._link.execute):
            self._policies_changed()

    def _policies_changed(self) -> None:
        """Forget the routes made from the old policies."""
        self._prefixes.clear()
        self._internal.clear()
        self._route_plain()

    def _warn_volatile(self, topic: str) -> None:
        """Warn once when this client uses a durable topic (declares, publishes, consumes,
        reads it) on a server without persistence; not for the throwaway embedded server it
        started itself (nothing there outlives it), nor for durable topics others use."""
        if self._persistent is False and not self._warned_volatile and self._server is None:
            self._warned_volatile = True
            warn_volatile(topic)

    def _route_plain(self) -> None:
        """Tell a cluster link which channels plain SUBSCRIBE clients read (PUBLISH them)."""
        if self._link is not None:
            self._link.set_unsharded(self._policies.unsharded(), self.sharded)

    async def _watch_policies(self) -> None:
        assert self._link is not None
        while True:
            await asyncio.sleep(self.policy_refresh)
            try:
                if await self._policies.refresh(self._link.execute):
                    self._policies_changed()
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
            publish_errors=(link.errors if link else 0)
            + (self._durable.errors if self._durable else 0),
            connected=bool(link and link.connected),
            late_replies=self._requests.late_replies if self._requests else 0,
            recovered=self._history_totals.recovered,
            duplicates=self._history_totals.duplicates,
            history_lost=self._history_totals.history_lost,
        )


class _Registry:
    """Connects the client's subscriber connection when its first subscription starts."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._real: Subscriber | None = None
        self.totals = client._history_totals

    async def add(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        self._real = await self._client._get_subscriber()
        await self._real.add(sub, names)

    async def remove(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        if self._real is not None:
            await self._real.remove(sub, names)

    def discard(self, sub: Subscription) -> None:
        if self._real is not None:
            self._real.discard(sub)

    async def history_topics(self, names: tuple[str, ...]) -> dict[str, str | None]:
        return await self._client._history_topics(names)

    async def read_history(self, topic: str, after: int, limit: int) -> Page:
        return await self._client._read_history(topic, after, limit)

    def recoverable(self, topic: str) -> bool:
        """Whether ``topic``'s policy, as this client last loaded it, keeps a history."""
        policy = self._client._policies.get(topic)
        return policy is not None and policy.history > 0
