"""The asyncio client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

import msgspec

from herald._core.durable_message import StoredMessage
from herald._core.history import (
    PUBLISH_HISTORY,
    READ_HISTORY,
    Counters,
    HistoryLost,
    HistoryTopic,
    Page,
    check_history,
    history_key,
    meta_key,
    parse_page,
)
from herald._core.message import Message
from herald._core.offsets import Position, normalize_id
from herald._core.options import CertReqs
from herald._core.resp import prefix
from herald._core.streams import (
    DEAD_SUFFIX,
    TOPICS_KEY,
    TOPICS_VERSION_KEY,
    DurableTopic,
    check_policy,
    dead_topic,
    differing_fields,
    validate_msg_id,
)
from herald._core.topics import (
    check_headers,
    check_user_name,
    is_inbox,
    is_pattern,
    match,
    validate_subscription,
    validate_topic,
)
from herald._core.url import Endpoint, parse_url, with_options
from herald._core.wire import Codec, Encoder, Foreign, decode
from herald._durable import admin as _admin
from herald._durable import replay as _replay
from herald._durable.acked import Settled, wait_settled
from herald._durable.admin import DeadLetter, TopicInfo
from herald._durable.consumer import ConsumeOptions, Consumer, ConsumerSetup
from herald._durable.keyed import publish_keyed, validate_key
from herald._durable.publish import Scripts
from herald._durable.publish import declare as durable_declare
from herald._durable.publish import delete as durable_delete
from herald._durable.publish import publish as durable_publish
from herald._durable.publish import publish_many as durable_publish_many
from herald._durable.publish import trim as durable_trim
from herald._io.cluster import new_link
from herald._io.link import BLOCKED, FLUSHED, MAX_BATCH_MESSAGES, Link, Prefix
from herald._io.sentinel import SentinelResolver
from herald._pubsub.cluster import new_subscriber
from herald._pubsub.recovery import check_start
from herald._pubsub.request import Requests
from herald._pubsub.subscriber import Subscriber
from herald._pubsub.subscription import Gap, Handler, Overflow, Subscription

from ._errors import (
    ClientClosed,
    ConfigurationError,
    ConnectionFailed,
    HeraldError,
    MessageTooLarge,
    NotPersisted,
    NotReplicated,
    PermissionDenied,
    ReservedName,
    ServerError,
    Timeout,
)
from ._server import EmbeddedServer, discover, new_password
from ._tracing import Tracing, make_tracing, trace_consumer, trace_subscription

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("herald")

_PUBLISH = b"PUBLISH"
_PREFIX_CACHE_MAX = 10_000
# How a topic is published: PUBLISH prefix, bare, durable spec, history spec (cached per topic).
_Route = tuple[bytes, bool, DurableTopic | None, HistoryTopic | None]


class TopicPolicy(msgspec.Struct, frozen=True, omit_defaults=True):
    """How a topic is published, stored in Redis so every client agrees.

    Attributes:
        bare: publish the payload alone, without Herald's envelope, for plain Redis subscribers.
        sharded: on a cluster, publish live messages with ``SPUBLISH`` (the default: the
            message stays in its shard); ``False`` publishes with ``PUBLISH``, which plain
            ``SUBSCRIBE`` clients receive and the cluster bus copies to every node (see
            ``docs/scaling.md``). Other deployments ignore it.
        durable: every publish is also appended to the topic's stream, for consumer groups
            (see ``docs/durable.md``).
        max_len: durable topics: keep at most this many entries...
        max_age: ...and none older than this many seconds; entries a group has not acked
            are kept anyway unless ``trim_unacked``.
        dedup_window: durable topics: seconds during which a publish with the same ``msg_id``
            is stored once (0: no deduplication).
        trim_unacked: let ``max_len``/``max_age`` remove entries some group has not acked.
        history: recoverable topics: keep the last this many messages, each with an offset,
            so that subscribers recover what they missed (see ``docs/recoverable.md``).
        history_ttl: recoverable topics: drop the history after this many seconds without a
            publish (the offsets and epoch are kept).
        fsync: durable topics: every confirmed publish returns only once the message is
            fsynced to the server's AOF, as ``publish(..., fsync=True)`` does.
    """

    bare: bool = False
    sharded: bool = True
    durable: bool = False
    max_len: int | None = None
    max_age: float | None = None
    dedup_window: float = 120.0
    trim_unacked: bool = False
    history: int = 0
    history_ttl: float | None = None
    fsync: bool = False


_policy_decode = msgspec.json.Decoder(TopicPolicy).decode
_DEAD_POLICY = msgspec.json.encode(TopicPolicy(durable=True))


def _durable_topic(topic: str, policy: TopicPolicy) -> DurableTopic:
    return DurableTopic(
        topic,
        max_len=policy.max_len,
        max_age=policy.max_age,
        dedup_window=policy.dedup_window,
        trim_unacked=policy.trim_unacked,
        fsync=policy.fsync,
        policy_json=msgspec.json.encode(policy),
        dead_json=b"" if topic.endswith(DEAD_SUFFIX) else _DEAD_POLICY,
    )


@dataclass(frozen=True, slots=True)
class PubAck:
    """The server's answer to a confirmed publish.

    Attributes:
        receivers: live deliveries the server made (per subscribed channel and matching pattern).
        offset: durable topics: the stream entry id the message was stored as; recoverable
            topics: the message's offset.
        duplicate: durable topics: the ``msg_id`` was seen within the dedup window; nothing
            was stored and ``offset`` is the first publish's entry.
        epoch: recoverable topics: the history's epoch.
    """

    receivers: int
    offset: str | int | None = None
    duplicate: bool = False
    epoch: int | None = None


@dataclass
class ClientStats:
    """Counters of one client."""

    published: int
    reconnects: int
    gaps: int
    publish_errors: int
    connected: bool
    late_replies: int = 0  # replies that found no pending request (timed out, cancelled)
    recovered: int = 0  # recoverable topics: messages delivered from history after a break
    duplicates: int = 0  # recoverable topics: messages received twice, delivered once
    history_lost: int = 0  # recoverable topics: HistoryLost reports


class AsyncClient:
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
    ) -> None:
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
        self.batch = batch
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
            "max_pending_bytes": max_pending_bytes,
        }
        self.endpoint: Endpoint | None = (
            with_options(parse_url(url), self._connection_options) if url else None
        )
        self._link: Link | None = None
        self._subscriber: Subscriber | None = None
        self._requests: Requests | None = None
        self._server: EmbeddedServer | None = None
        self._prefixes: dict[str, _Route] = {}
        # Routes of topics only Herald writes (reply inboxes, dead-letter topics): kept out of
        # _prefixes, so that publish's fast path never finds them and the slow path refuses them.
        self._internal: dict[str, _Route] = {}
        self._fsync_waits: dict[tuple[int, int], asyncio.Future[Any]] = {}  # see _wait_fsync
        self._history_totals = Counters()
        self._durable: Scripts | None = None
        self._consumers: set[Consumer] = set()
        self._policies: dict[str, TopicPolicy] = {}
        self._policy_version: bytes | None = None
        self._warned_bare: set[str] = set()
        self._persistent: bool | None = None  # None: not known (CONFIG refused), see connect
        self._warned_volatile = False
        self._policy_task: asyncio.Task[None] | None = None
        self._connect_lock: asyncio.Lock | None = None
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
            tag = self._encoder.publisher_id.hex()[:8]
            link = new_link(self.endpoint, name=f"{self._name}-{tag}-pub", **self._link_options)
            await link.connect()
            self._link = link
            self._route_plain()
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
        """Read the server's Pub/Sub output-buffer limit (the point where it cuts a slow reader);
        warn about a limit of 0 and about a ``maxmemory-policy`` that evicts keys."""
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
        # An evicting policy loses data silently when memory is full; noeviction refuses writes,
        # which publishers see (ServerError "OOM ...").
        try:
            reply = await self._link.execute("CONFIG", "GET", "maxmemory-policy")
            policy = reply[1].decode() if len(reply) > 1 else ""
        except (HeraldError, AttributeError, UnicodeDecodeError):
            return
        if policy.startswith(("allkeys-", "volatile-")):
            victims = (
                "durable streams, history and topic policies among them"
                if policy.startswith("allkeys-")
                else "idempotency keys among them (duplicates within the dedup window)"
            )
            log.warning(
                "the server's maxmemory-policy is %s: when memory is full it evicts keys, %s; "
                "set it to noeviction so that publishes fail visibly instead",
                policy,
                victims,
            )
        await self._check_persistence()

    async def _check_persistence(self) -> None:
        """Read whether the server persists anything (AOF, or RDB save points): durable topics
        on a server that does not lose every stored message when it restarts."""
        assert self._link is not None
        try:
            aof = await self._link.execute("CONFIG", "GET", "appendonly")
            save = await self._link.execute("CONFIG", "GET", "save")
            self._persistent = persists(aof, save)
        except (HeraldError, AttributeError, IndexError, UnicodeDecodeError):
            return  # CONFIG refused by the ACL: nothing known, nothing said
        self._warn_volatile()

    def _warn_volatile(self) -> None:
        """Warn once when this client uses durable topics on a server without persistence
        (not on the throwaway embedded server it started itself: nothing there outlives it)."""
        if self._persistent is not False or self._warned_volatile or self._server is not None:
            return
        durable = sorted(t for t, p in self._policies.items() if p.durable)
        if durable:
            self._warned_volatile = True
            log.warning(
                "durable topics (%s) on a server without persistence (appendonly no, no save "
                "points): a restart of the server loses every stored message and every consumer "
                "group's position; turn on AOF (appendonly yes)",
                ", ".join(durable[:3]) + (", ..." if len(durable) > 3 else ""),
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
        # A password: other local users must not reach the data of this process's server.
        server = EmbeddedServer(persist=False, password=new_password())
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
        log.info("started an embedded Valkey at %s", server.display_url)
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
            for consumer in list(self._consumers):  # first: they ack and hand back on _link
                await consumer.close()
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

    def _prefix(self, topic: str) -> _Route:
        """(PUBLISH prefix, bare, durable spec, history spec) of a topic, cached."""
        entry = self._prefixes.get(topic) or self._internal.get(topic)
        if entry is None:
            raw = validate_topic(topic)
            policy = self._policies.get(topic)
            durable = _durable_topic(topic, policy) if policy and policy.durable else None
            history = (
                HistoryTopic(topic, policy.history, policy.history_ttl)
                if policy and policy.history
                else None
            )
            reserved = self._reserved(topic)
            # The client's envelope=False applies to live topics only: a durable or recoverable
            # topic's stored messages, and requests' replies, need the envelope.
            bare = (policy is not None and policy.bare) or (
                not self.envelope and durable is None and history is None and reserved is None
            )
            entry = (prefix(_PUBLISH, raw), bare, durable, history)
            cache = self._internal if reserved else self._prefixes
            if len(cache) >= _PREFIX_CACHE_MAX:
                cache.clear()
            cache[topic] = entry
        return entry

    def _reserved(self, topic: str) -> str | None:
        """Why only Herald may publish to ``topic``, or ``None`` when anyone may."""
        if not isinstance(topic, str):
            return None  # InvalidTopic, from validate_topic
        if is_inbox(topic):
            return "the reply inboxes of requests are written by responders only"
        if topic.endswith(DEAD_SUFFIX):
            own = self._policies.get(topic)
            parent = self._policies.get(topic[: -len(DEAD_SUFFIX)])
            if (own is not None and own.durable) or (parent is not None and parent.durable):
                return "dead letters are written by Herald only (see replay_dead)"
        return None

    def _check_publish(self, topic: str, headers: Mapping[str, str] | None) -> None:
        """Refuse what only Herald may publish: reserved headers, reserved topics."""
        if headers:
            check_headers(headers)
        reason = self._reserved(topic)
        if reason is not None:
            raise ReservedName(topic, reason)

    def _frame(
        self, topic: str, data: Any, headers: Mapping[str, str] | None
    ) -> tuple[bytes, bytes, bool]:
        """(command prefix, frame, bare) of a request or reply: always in an envelope."""
        pfx, frame, bare, _, _ = self._encode(topic, data, headers, True)
        return pfx, frame, bare

    def _declared_bare(self, topic: str) -> bool:
        """Whether the topic's stored policy is bare (not only this client's default)."""
        policy = self._policies.get(topic)
        return policy is not None and policy.bare

    def _encode(
        self,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        envelope: bool | None = None,
    ) -> tuple[bytes, bytes, bool, DurableTopic | None, HistoryTopic | None]:
        pfx, bare, durable, history = self._prefix(topic)
        if envelope is not None and envelope == bare:  # the caller's choice overrides
            if not envelope:
                if history is not None:
                    raise ConfigurationError(
                        f"topic {topic!r} is recoverable: its messages need the envelope"
                    )
                if headers:
                    raise ConfigurationError("a message without envelope carries no headers")
            bare = not envelope
        if history is not None:
            frame = self._encoder.envelope(data, headers, 0, 0)  # the script fills them in
        elif not bare:
            frame = self._encoder.envelope(data, headers)
        else:
            if headers and topic not in self._warned_bare:
                self._warned_bare.add(topic)
                log.warning("topic %r is bare: its messages carry no headers", topic)
            frame = self._encoder.payload(data)[1]
        if len(frame) > self.max_message_size:
            raise MessageTooLarge(len(frame), self.max_message_size)
        return pfx, frame, bare, durable, history

    @overload
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: Literal[True],
        msg_id: str | None = None,
        key: str | None = None,
        replicas: int = 0,
        envelope: bool | None = None,
        fsync: bool = False,
    ) -> PubAck: ...

    @overload
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: bool | None = None,
        msg_id: str | None = None,
        key: str | None = None,
        replicas: int = 0,
        envelope: bool | None = None,
        fsync: bool = False,
    ) -> PubAck | None: ...

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        headers: Mapping[str, str] | None = None,
        confirm: bool | None = None,
        msg_id: str | None = None,
        key: str | None = None,
        replicas: int = 0,
        envelope: bool | None = None,
        fsync: bool = False,
    ) -> PubAck | None:
        """Publish one message.

        Returns ``None`` at once without a round trip; with ``confirm=True`` waits for the
        server and returns a :class:`PubAck` whose ``receivers`` is the server's delivery count:
        one per subscribed channel and per matching pattern of every connection (a connection
        with both counts, and receives, twice).
        While the server is unreachable, messages are kept (up to ``max_pending_bytes``) and
        sent after the reconnect; a confirmed publish waits up to ``publish_timeout`` for the
        connection to come back.

        On a durable topic the message is stored in the topic's stream and published live in
        one server-side step, and ``confirm`` defaults to True: the :class:`PubAck` then has the
        entry id (``offset``); ``confirm=False`` sends it without waiting. ``msg_id`` makes the
        publish idempotent there: the same ``msg_id`` within the topic's ``dedup_window`` is
        stored once (``PubAck.duplicate``). Live topics ignore ``msg_id``: a publisher cannot
        know whether a topic is durable, that is the topic's policy. ``key`` is a durable
        message's ordering key (``consume(..., ordered_by_key=True)``); live topics ignore it.
        ``replicas=N`` (durable topics, confirmed publishes): after the store, wait (``WAIT``,
        up to ``publish_timeout``) until ``N`` replicas have it, so that a failover cannot lose
        an acknowledged message (see ``docs/scaling.md``); other topics ignore it.
        ``envelope=False`` sends this message's payload alone, for plain Redis subscribers
        (see the client's ``envelope``); ``True`` wraps it even on a bare topic.
        ``fsync=True`` (durable topics, confirmed publishes): return only once the server has
        the message fsynced to its AOF (``WAITAOF``; with ``replicas=N``, on N replicas' AOF
        too), so that a crash of the server process or machine cannot lose an acknowledged
        message. With ``appendfsync everysec`` that waits for the next fsync (up to about a
        second; concurrent publishes share it); with ``appendfsync always`` it costs a round
        trip. Needs AOF on the server (``ConfigurationError`` otherwise); other topics ignore it.

        Raises:
            InvalidTopic, MessageTooLarge, TypeError: before anything is sent (TypeError: a
                payload the codec cannot encode, NaN and infinities in JSON among them).
            ConfigurationError: ``envelope=False`` with headers, or on a recoverable topic.
            ReservedName: a header name starts with ``herald-``, or the topic is Herald's
                (a reply inbox ``_herald.inbox.*``, a durable topic's ``<topic>.dead``).
            NotReplicated: with ``replicas``, fewer replicas acknowledged in time; the message
                is stored on the primary.
            NotPersisted: with ``fsync``, not confirmed on disk within ``publish_timeout``;
                the message is stored (in memory).
            Timeout: the send buffer stayed full (or, with ``confirm=True``, the connection
                stayed down) for ``publish_timeout``; the message was not queued.
            ConnectionLost: with ``confirm=True``, the connection died before the reply.
        """
        if headers:
            check_headers(headers)
        if self._tracing is not None and self._tracing.active():
            return await self._publish_traced(
                self._tracing, topic, data, headers, confirm, msg_id, key, replicas, envelope, fsync
            )
        link = self._link
        entry = self._prefixes.get(topic)
        if (
            link is not None
            and entry is not None
            and not confirm
            and not entry[1]
            and envelope is not False
            and entry[2] is None
            and entry[3] is None
        ):
            # The hot path: a known live topic, fire-and-forget.
            frame = self._encoder.envelope(data, headers)
            if len(frame) > self.max_message_size:
                raise MessageTooLarge(len(frame), self.max_message_size)
            await self._publish_live(link, entry[0], [frame], self.batch)
            return None
        return await self._publish(
            topic, data, headers, confirm, msg_id, key, replicas, envelope, fsync
        )

    async def _publish(
        self,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        confirm: bool | None,
        msg_id: str | None,
        key: str | None,
        replicas: int,
        envelope: bool | None,
        fsync: bool,
    ) -> PubAck | None:
        """``publish`` past its fast path (headers checked): any topic, any option."""
        link = self._link
        if link is None:
            await self.connect()
            link = self._link
            assert link is not None
        self._check_publish(topic, None)
        pfx, frame, bare, durable, history = self._encode(topic, data, headers, envelope)
        if history is not None:
            return await self._publish_history(history, [frame], confirm)
        if durable is not None:
            if (replicas or fsync) and confirm is False:
                raise ConfigurationError(
                    "replicas= and fsync= need a confirmed publish (confirm=True)"
                )
            if key is not None:
                ack = await self._publish_keyed(frame, durable, key, msg_id, confirm)
            else:
                ack = await self._publish_durable(frame, durable, msg_id, confirm)
            if (fsync or durable.fsync) and ack is not None:
                await self._wait_fsync(link, durable, replicas, ack)
            elif replicas and ack is not None:
                await self._wait_replicas(link, durable, replicas, ack)
            return ack
        if confirm:
            # Wait for the connection before queuing: a Timeout then means "not sent", never
            # "sent later by surprise".
            if not link.connected:
                await link.wait_connected(self.publish_timeout)
            receivers = int(await link.execute(_PUBLISH, topic, frame))
            self.published += 1
            return PubAck(receivers)
        await self._publish_live(link, pfx, [frame], self.batch and not bare)
        return None

    async def _publish_traced(
        self,
        tracing: Tracing,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        confirm: bool | None,
        msg_id: str | None,
        key: str | None,
        replicas: int,
        envelope: bool | None,
        fsync: bool,
    ) -> PubAck | None:
        """``publish`` in a producer span, its trace context added to the headers."""
        if self._link is None:
            await self.connect()
        with tracing.publishing(topic, headers, self._carries_headers(topic, envelope), data) as (
            span,
            sent,
        ):
            ack = await self._publish(
                topic, data, sent, confirm, msg_id, key, replicas, envelope, fsync
            )
            if ack is not None and ack.offset is not None:
                span.set_attribute("messaging.herald.offset", ack.offset)
            return ack

    def _carries_headers(self, topic: str, envelope: bool | None) -> bool:
        """Whether a publish to ``topic`` sends an envelope, which carries headers."""
        if not isinstance(topic, str):
            return False  # InvalidTopic, from the publish
        try:
            bare = self._prefix(topic)[1]
        except HeraldError:
            return False  # the publish raises it
        return envelope if envelope is not None else not bare

    async def _publish_live(
        self, link: Link, pfx: Prefix, frames: list[bytes], batchable: bool
    ) -> None:
        status = link.try_publish(pfx, frames, batchable)
        while status == BLOCKED:
            await link.wait_writable(self.publish_timeout)
            status = link.try_publish(pfx, frames, batchable)
        self.published += len(frames)
        if status == FLUSHED:
            await asyncio.sleep(0)  # a publisher in a tight loop still lets other tasks run

    async def publish_many(
        self,
        topic: str,
        items: Iterable[Any],
        *,
        headers: Mapping[str, str] | None = None,
        envelope: bool | None = None,
    ) -> None:
        """Publish several messages to one topic, in order, without waiting for the server.

        Cheaper per message than ``publish`` in a loop: one call encodes them all and queues
        them at once (into batch frames on a live topic). On a durable topic each message is
        stored as with ``publish(confirm=False)``: its XADD and PUBLISH, queued in one burst.
        ``envelope`` is ``publish``'s.

        Example::

            await hub.publish_many("prices.tech", [{"px": 1.5 + i} for i in range(100)])
        """
        if self._link is None:
            await self.connect()
        tracing = self._tracing
        if tracing is not None and tracing.active():
            items = list(items)
            with tracing.publishing(
                topic, headers, self._carries_headers(topic, envelope), count=len(items)
            ) as (_, sent):
                return await self._publish_many(topic, items, sent, envelope)
        return await self._publish_many(topic, items, headers, envelope)

    async def _publish_many(
        self,
        topic: str,
        items: Iterable[Any],
        headers: Mapping[str, str] | None,
        envelope: bool | None,
    ) -> None:
        link = self._link
        assert link is not None
        self._check_publish(topic, headers)
        pfx, bare, durable, history = self._prefix(topic)
        if envelope is not None and envelope == bare:  # not the topic's form: one at a time
            for data in items:
                await self.publish(topic, data, headers=headers, confirm=False, envelope=envelope)
            return
        if history is not None:
            frames = [self._encoder.envelope(data, headers, 0, 0) for data in items]
            for frame in frames:
                if len(frame) > self.max_message_size:
                    raise MessageTooLarge(len(frame), self.max_message_size)
            for i in range(0, len(frames), MAX_BATCH_MESSAGES):
                await self._publish_history(history, frames[i : i + MAX_BATCH_MESSAGES], False)
            return
        if durable is not None and not bare:
            frames = [self._encoder.envelope(data, headers) for data in items]
            for frame in frames:
                if len(frame) > self.max_message_size:
                    raise MessageTooLarge(len(frame), self.max_message_size)
            await durable_publish_many(self._scripts(), durable, frames, self.publish_timeout)
            self.published += len(frames)
            return
        if bare or durable is not None:
            for data in items:
                await self.publish(topic, data, headers=headers, confirm=False)
            return
        encode = self._encoder.envelope
        limit = self.max_message_size
        frames = [encode(data, headers) for data in items]
        for frame in frames:
            if len(frame) > limit:
                raise MessageTooLarge(len(frame), limit)
        # Chunks keep one call from overshooting the outage buffer by more than a batch frame.
        for i in range(0, len(frames), MAX_BATCH_MESSAGES):
            await self._publish_live(link, pfx, frames[i : i + MAX_BATCH_MESSAGES], self.batch)

    def _publish_threadsafe(
        self,
        topic: str,
        data: Any,
        headers: Mapping[str, str] | None,
        confirm: bool | None,
        envelope: bool | None = None,
    ) -> Coroutine[Any, Any, PubAck | None] | None:
        """Publish live from any thread; for a durable or recoverable topic return the
        coroutine that publishes it, to be run on the loop."""
        link = self._link
        if link is None:
            raise ClientClosed("client is not connected")
        pfx, frame, bare, durable, history = self._encode(topic, data, headers, envelope)
        if history is not None:
            return self._publish_history(history, [frame], confirm)
        if durable is not None:
            if durable.fsync and confirm is not False:
                return self._publish_fsynced(link, frame, durable, confirm)
            return self._publish_durable(frame, durable, None, confirm)
        link.publish_threadsafe(pfx, frame, self.batch and not bare, self.publish_timeout)
        self.published += 1
        return None

    async def _publish_fsynced(
        self, link: Link, frame: bytes, durable: DurableTopic, confirm: bool | None
    ) -> PubAck | None:
        ack = await self._publish_durable(frame, durable, None, confirm)
        if ack is not None:
            await self._wait_fsync(link, durable, 0, ack)
        return ack

    async def _publish_durable(
        self, frame: bytes, durable: DurableTopic, msg_id: str | None, confirm: bool | None
    ) -> PubAck | None:
        link = self._link
        assert link is not None
        if msg_id is not None:
            validate_msg_id(msg_id)
        if confirm is False:
            await durable_publish(
                self._scripts(), durable, frame, msg_id, False, self.publish_timeout
            )
            self.published += 1
            return None
        if not link.connected:
            await link.wait_connected(self.publish_timeout)
        reply = await durable_publish(
            self._scripts(), durable, frame, msg_id, True, self.publish_timeout
        )
        assert reply is not None
        self.published += 1
        offset, duplicate, receivers = reply
        return PubAck(receivers, offset, duplicate)

    async def _wait_replicas(
        self, link: Link, durable: DurableTopic, replicas: int, ack: PubAck
    ) -> None:
        """``WAIT`` on the connection that stored the message (its node's, on a cluster).

        WAIT blocks its connection: it is sent in slices shorter than half the probe timeout,
        so that the liveness probe queued behind it is answered in time and a slow replica
        is a ``NotReplicated``, not a connection declared dead."""
        node = link.link_for_key(durable.stream_raw) if hasattr(link, "link_for_key") else link
        loop = asyncio.get_running_loop()
        deadline = None if self.publish_timeout is None else loop.time() + self.publish_timeout
        probe = node.probe_timeout if node.probe_interval > 0 else None
        stored_on = node.connection
        while True:
            left = None if deadline is None else max(0.001, deadline - loop.time())
            step = min(x for x in (left, probe / 2 if probe else None, 3600.0) if x is not None)
            acked = int(await node.execute("WAIT", replicas, max(1, int(step * 1000))))
            if stored_on is None or node.connection is not stored_on:
                # A WAIT on another connection (after a reconnect, maybe to a restarted or new
                # primary) says nothing of the write: in doubt.
                raise NotReplicated(0, replicas, ack)
            if acked >= replicas:
                return
            if deadline is not None and loop.time() >= deadline:
                raise NotReplicated(acked, replicas, ack)

    async def _wait_fsync(
        self, link: Link, durable: DurableTopic, replicas: int, ack: PubAck
    ) -> None:
        """``WAITAOF 1 <replicas>`` on the connection that stored the message: it returns once
        everything that connection wrote is fsynced to the AOF (and on ``replicas`` replicas').

        One WAITAOF covers every write sent before it on its connection, so publishes share
        the one in flight: a publish whose reply came while it was pending was sent before
        it (replies come in order). Like WAIT it blocks the connection, so it is sent in
        slices shorter than half the probe timeout.

        Only a WAITAOF answered on the connection that carried the write counts: one sent
        after a reconnect (queued while the link was down) would answer for the restarted
        server's writes, not this one, so the publish is then in doubt (``NotPersisted``)."""
        node = link.link_for_key(durable.stream_raw) if hasattr(link, "link_for_key") else link
        loop = asyncio.get_running_loop()
        deadline = None if self.publish_timeout is None else loop.time() + self.publish_timeout
        probe = node.probe_timeout if node.probe_interval > 0 else None
        key = (id(node), replicas)
        stored_on = node.connection
        while True:
            pending = self._fsync_waits.get(key)
            if pending is None or pending.done():
                left = None if deadline is None else max(0.001, deadline - loop.time())
                step = min(x for x in (left, probe / 2 if probe else None, 3600.0) if x is not None)
                pending = node.execute("WAITAOF", 1, replicas, max(1, int(step * 1000)))
                self._fsync_waits[key] = pending
            try:
                local, fsynced = (int(x) for x in await asyncio.shield(pending))
            except ServerError as exc:
                if "appendonly" in str(exc).lower():
                    raise ConfigurationError(
                        "fsync=True needs AOF on the server (appendonly yes)"
                    ) from exc
                raise
            if stored_on is None or node.connection is not stored_on:
                raise NotPersisted(0, 0, replicas, ack)
            if local >= 1 and fsynced >= replicas:
                return
            if deadline is not None and loop.time() >= deadline:
                raise NotPersisted(local, fsynced, replicas, ack)

    async def _publish_history(
        self, history: HistoryTopic, frames: list[bytes], confirm: bool | None
    ) -> PubAck | None:
        """Publish to a recoverable topic: one script stores and publishes (``_history``).
        Fire-and-forget publishes of one event-loop iteration share one script call."""
        link = self._link
        assert link is not None
        scripts = self._scripts()
        if confirm:
            if not link.connected:
                await link.wait_connected(self.publish_timeout)
            _, last, epoch, receivers = await scripts.call(
                PUBLISH_HISTORY, history.keys, [*history.args, *frames]
            )
            self.published += len(frames)
            return PubAck(int(receivers), int(last), epoch=int(epoch))
        scripts.ensure(PUBLISH_HISTORY)
        await self._publish_live(link, history, frames, True)
        return None

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
        sub = Subscription(
            _Registry(self),
            unique,
            max_pending=max_pending,
            overflow=overflow,
            on_gap=on_gap,
            handler=handler,
            since=since,
            epoch=epoch,
            last=last,
            on_history_lost=on_history_lost,
            error_text=error_text,
            foreign=foreign,
        )
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
                    version = await self._link.execute("GET", TOPICS_VERSION_KEY)
                    if version != self._policy_version:
                        await self._load_policies()
        found: dict[str, str | None] = {}
        for name in names:
            if is_pattern(name):
                for topic, p in self._policies.items():
                    if p.history and topic not in found and match(name, topic):
                        found[topic] = name
            elif (policy := self._policies.get(name)) is not None and policy.history:
                found[name] = None
        return found

    async def _read_history(self, topic: str, after: int, limit: int) -> Page:
        await self.connect()
        reply = await self._scripts().call(
            READ_HISTORY, [meta_key(topic), history_key(topic)], [after, limit]
        )
        return parse_page(reply)

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

    # -- request/reply (docs/request-reply.md) -----------------------------------------------

    async def request(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Send a request and return the first reply.

        Responders are subscriptions of ``topic`` whose handler returns a value, or that call
        :meth:`Message.reply`.

        Raises:
            NoResponders: at once, when nobody is subscribed to ``topic``.
            Timeout: no reply within ``timeout`` seconds (counted from the call).
            ResponderFailed: the responder's handler raised.

        Example::

            reply = await hub.request("geo.lookup", {"ip": "1.2.3.4"}, timeout=1.0)
            print(reply.data)
        """
        tracing = self._tracing
        if tracing is None or not tracing.active():
            return await self._request_table().request(topic, data, timeout, headers)
        if self._link is None:
            await self.connect()
        with tracing.publishing(topic, headers, True, data, operation="request") as (_, sent):
            return await self._request_table().request(topic, data, timeout, sent)

    async def request_many(
        self,
        topic: str,
        data: Any,
        *,
        max_replies: int | None = None,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> list[Message]:
        """Send a request to every responder and gather their replies (scatter/gather).

        Returns the replies that arrived, in arrival order, once ``max_replies`` are in, or as
        many as the server counted receivers of the request (one per subscribed connection:
        several subscriptions of one client to the topic count once, see
        ``docs/request-reply.md``), or when ``timeout`` passes: then possibly fewer, possibly
        none. Error replies are included (``herald-error`` header).

        Raises:
            NoResponders: at once, when nobody is subscribed to ``topic``.
            Timeout: the request itself could not be sent within ``timeout``.

        Example::

            replies = await hub.request_many("cache.size", None, timeout=0.5)
            total = sum(r.data for r in replies)
        """
        tracing = self._tracing
        if tracing is None or not tracing.active():
            return await self._request_table().request_many(
                topic, data, max_replies, timeout, headers
            )
        if self._link is None:
            await self.connect()
        with tracing.publishing(topic, headers, True, data, operation="request") as (_, sent):
            return await self._request_table().request_many(topic, data, max_replies, timeout, sent)

    def _request_table(self) -> Requests:
        if self._requests is None:
            self._requests = Requests(self, _Registry(self))
        return self._requests

    # -- topic policies ----------------------------------------------------------------------

    async def declare(
        self,
        topic: str,
        *,
        bare: bool = False,
        sharded: bool = True,
        durable: bool = False,
        max_len: int | None = None,
        max_age: float | None = None,
        dedup_window: float = 120.0,
        trim_unacked: bool = False,
        history: int = 0,
        history_ttl: float | None = None,
        update: bool = False,
        fsync: bool = False,
    ) -> TopicPolicy:
        """Store a topic's policy in Redis; every client applies it within ``policy_refresh``.

        See :class:`TopicPolicy` for the fields. A durable topic's dead-letter topic
        ``<topic>.dead`` is declared durable too, unless it already is declared.

        Raises:
            ConfigurationError: the topic is declared already with other settings (the message
                names them); pass ``update=True`` to change them.
            ReservedName: the topic is a reply inbox (``_herald.inbox.*``).

        Example::

            await hub.declare("legacy.events", bare=True)  # plain payloads for redis-py readers
            await hub.declare("legacy.events", bare=True, sharded=False, update=True)  # cluster
            await hub.declare("orders", durable=True, max_age=7 * 86400)
            await hub.declare("prices", history=1000, history_ttl=3600)  # recoverable
        """
        validate_topic(topic)
        check_user_name(topic)  # a policy on an inbox (bare, durable) would break its replies
        check_policy(durable, max_len, max_age, dedup_window, trim_unacked)
        if fsync and not durable:
            raise ConfigurationError("fsync applies to durable topics")
        check_history(history, history_ttl, durable=durable, bare=bare)
        policy = TopicPolicy(
            bare=bare,
            sharded=sharded,
            durable=durable,
            max_len=max_len,
            max_age=None if max_age is None else float(max_age),
            dedup_window=float(dedup_window),
            trim_unacked=trim_unacked,
            history=history,
            history_ttl=None if history_ttl is None else float(history_ttl),
            fsync=fsync,
        )
        dead = dead_topic(topic) if durable and not topic.endswith(DEAD_SUFFIX) else ""
        if dead:
            validate_topic(dead)
        await self.connect()
        current = await durable_declare(
            self._scripts(), topic, msgspec.json.encode(policy), update, dead, _DEAD_POLICY
        )
        if current is not None:
            stored = _policy_decode(current)
            if stored != policy:
                diff = ", ".join(
                    f"{f}={getattr(stored, f)!r} (not {getattr(policy, f)!r})"
                    for f in differing_fields(stored, policy)
                )
                raise ConfigurationError(
                    f"topic {topic!r} is declared with {diff}; pass update=True to change it"
                )
        await self._load_policies()
        return policy

    async def delete_topic(self, topic: str) -> bool:
        """Forget a topic's policy (it is live again) and delete its stream and idempotency
        keys; its consumers stop. ``<topic>.dead`` is a topic of its own and stays.

        Returns whether the topic was declared.
        """
        validate_topic(topic)
        await self.connect()
        assert self._link is not None
        existed = await durable_delete(self._link, topic)
        await self._load_policies()
        return existed

    async def trim(self, topic: str) -> int:
        """Apply a durable topic's retention (``max_len``, ``max_age``) now; return the number
        of entries removed. Publishers and consumers also do this periodically."""
        validate_topic(topic)
        await self.connect()
        durable = self._prefix(topic)[2]
        return 0 if durable is None else await durable_trim(self._scripts(), durable)

    # -- consuming durable topics (docs/durable.md) ------------------------------------------

    def consume(
        self,
        topic: str,
        group: str,
        consumer: str | None = None,
        **options: Unpack[ConsumeOptions],
    ) -> Consumer:
        """Consume a durable topic as one consumer of a consumer group; see :class:`Consumer`
        for the options.

        Use as ``async with hub.consume(...) as c: async for msg in c``, or with ``handler=``
        (``c = await hub.consume(..., handler=fn)``) to run a function on every message.

        Example::

            async with hub.consume("orders", "billing") as orders:
                async for msg in orders:
                    await bill(msg.data)
                    await msg.ack()
        """
        validate_topic(topic)
        if self._closed:
            raise ClientClosed("client closed")
        consumer_ = Consumer(self, topic, group, consumer, **options)
        if self._tracing is not None:
            trace_consumer(self._tracing, consumer_)
        self._consumers.add(consumer_)
        return consumer_

    async def _consumer_setup(self, topic: str) -> ConsumerSetup:
        await self.connect()
        await self._load_policies()  # fresh: it may have been declared a moment ago
        durable = self._prefix(topic)[2]
        if durable is None:
            raise ConfigurationError(
                f"topic {topic!r} is not durable: declare it first, e.g. "
                f"declare({topic!r}, durable=True)"
            )
        assert self._link is not None
        assert self.endpoint is not None
        tag = self._encoder.publisher_id.hex()[:8]
        return ConsumerSetup(
            self._scripts(),
            durable,
            self.endpoint,
            self._link_options,
            f"{self._name}-{tag}",
        )

    def _durable_spec(self, topic: str) -> DurableTopic | None:
        return self._prefix(topic)[2]

    def _consumer_closed(self, consumer: Consumer) -> None:
        self._consumers.discard(consumer)

    async def topics(self) -> dict[str, TopicPolicy]:
        """Declared topics and their policies (a topic nobody declared is live)."""
        await self._load_policies()
        return dict(self._policies)

    # -- reading and looking after durable topics (docs/durable.md) --------------------------

    async def history(
        self, topic: str, *, since: Position | None = None, limit: int = 100
    ) -> list[StoredMessage]:
        """Up to ``limit`` stored messages of a durable or recoverable topic, oldest first, read
        without a consumer group (nothing is acked, no group moves).

        Args:
            since: ``None`` (the oldest entry on), an entry id (the entries *after* it: pass the
                last ``offset`` you got to read on), or a point in time (a ``datetime``, naive
                meaning local time, or seconds since the epoch: entries stored at or after it).
                On a recoverable topic: ``None`` or an offset (an int: the messages after it).

        Example::

            page = await hub.history("orders", since=datetime(2024, 5, 1, tzinfo=UTC))
            more = await hub.history("orders", since=page[-1].offset)
        """
        validate_topic(topic)
        await self.connect()
        await self._load_policies()  # fresh: it may have been declared a moment ago
        if self._prefix(topic)[3] is not None:
            if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
                raise ConfigurationError(f"topic {topic!r} is recoverable: since is an offset")
            after = since or 0
            limit = max(0, min(limit, 10_000))
            # Each stored frame holds one publish call's messages: at most ``limit`` frames hold
            # the first ``limit`` messages after the offset.
            page = await self._read_history(topic, after, limit)
            found = [
                StoredMessage(m, m.offset)
                for frame in page.envelopes
                for m in decode(topic, frame)
                if isinstance(m.offset, int) and m.offset > after
            ]
            return found[:limit]
        execute = await self._durable_reader(topic)
        return await _replay.history(execute, topic, since, limit)

    async def replay(
        self,
        topic: str,
        *,
        since: Position | None = None,
        until: Position | None = None,
        page: int = 1000,
    ) -> AsyncIterator[StoredMessage]:
        """Every stored message of a durable topic from ``since`` (as in :meth:`history`) up to
        ``until`` (an entry id, included, or a point in time), read ``page`` entries at a time.
        Without ``until`` it ends at the end of the stream.

        Example::

            async for msg in hub.replay("orders", since=time.time() - 3600):
                print(msg.offset, msg.data)
        """
        execute = await self._durable_reader(topic)
        async for msg in _replay.replay(execute, topic, since, until, page):
            yield msg

    async def topic_info(self, topic: str) -> TopicInfo:
        """What a topic holds now: policy, stream length, first and last entries, consumer
        groups with their pending entries, lag and consumers, and its dead letters.

        Example::

            info = await hub.topic_info("orders")
            for group in info.groups:
                print(group.name, group.pending, group.lag)
        """
        validate_topic(topic)
        await self.connect()
        await self._load_policies()
        return await _admin.topic_info(self.execute, topic, self._policies.get(topic))

    async def dead_letters(
        self, topic: str, *, since: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``topic`` (the entries of ``<topic>.dead``), oldest
        first; ``since``: after that dead letter's offset.

        Example::

            for dead in await hub.dead_letters("orders"):
                print(dead.offset, dead.reason, dead.deliveries, dead.message.data)
        """
        execute = await self._durable_reader(topic)
        return await _admin.dead_letters(execute, topic, since, limit)

    async def replay_dead(self, topic: str, offsets: Iterable[str] | None = None) -> dict[str, str]:
        """Put dead letters back on their topic, after a fix: each is stored again as a new
        entry (every group of the topic gets it again), published live, and removed from
        ``<topic>.dead``, in one atomic step per dead letter. Dead letters already gone are
        skipped, so replaying twice is harmless.

        Args:
            offsets: the dead letters' offsets (``DeadLetter.offset``); ``None``: all of them.

        Returns:
            {dead letter offset: its new entry id on ``topic``} for those put back.

        Example::

            dead = await hub.dead_letters("orders")
            await hub.replay_dead("orders", [d.offset for d in dead if "timeout" in d.reason])
        """
        await self._durable_reader(topic)
        wanted = None if offsets is None else [normalize_id(o) for o in offsets]
        return await _admin.replay_dead(self._scripts(), self.execute, topic, wanted)

    async def wait_acked(
        self, topic: str, offset: str, group: str, *, timeout: float | None = 10.0
    ) -> Settled:
        """Wait until consumer group ``group`` of durable ``topic`` has settled the entry
        ``offset`` (a ``PubAck.offset``): delivered it and no longer holding it pending.

        Returns ``"acked"``, or ``"dead"`` when the group dead-lettered it (``term()``, a
        failing handler's last delivery, ``max_deliver``). A message the group will never
        read (published before it was created with ``start="new"``) counts as settled.

        Raises:
            ConfigurationError: the topic is not durable, has no group ``group``, or
                ``offset`` is not an entry id.
            Timeout: not settled within ``timeout`` seconds (``None``: no limit).

        Example::

            ack = await hub.publish("orders", order, confirm=True)
            if await hub.wait_acked("orders", ack.offset, "billing", timeout=30) == "dead":
                ...
        """
        await self._durable_reader(topic)
        return await wait_settled(self._scripts(), topic, offset, group, timeout)

    async def _durable_reader(self, topic: str) -> Callable[..., Any]:
        """The command connection's execute, once ``topic`` is known to be durable."""
        validate_topic(topic)
        await self.connect()
        await self._load_policies()  # fresh: it may have been declared a moment ago
        if self._prefix(topic)[2] is None:
            raise ConfigurationError(
                f"topic {topic!r} is not durable: it has no stream"
                + (" (it is recoverable: see history())" if self._prefix(topic)[3] else "")
            )
        assert self._link is not None
        return self._link.execute

    async def _publish_keyed(
        self,
        frame: bytes,
        durable: DurableTopic,
        key: str,
        msg_id: str | None,
        confirm: bool | None,
    ) -> PubAck | None:
        """A durable publish with an ordering key (see ``_keyed``)."""
        link = self._link
        assert link is not None
        validate_key(key)
        if msg_id is not None:
            validate_msg_id(msg_id)
        if confirm is not False and not link.connected:
            await link.wait_connected(self.publish_timeout)
        reply = await publish_keyed(
            self._scripts(), durable, frame, key, msg_id, confirm is not False, self.publish_timeout
        )
        self.published += 1
        if reply is None:
            return None
        offset, duplicate, receivers = reply
        return PubAck(receivers, offset, duplicate)

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
            self._internal.clear()
            self._route_plain()
            self._warn_volatile()

    def _route_plain(self) -> None:
        """Tell a cluster link which channels plain SUBSCRIBE clients read (PUBLISH them)."""
        set_unsharded = getattr(self._link, "set_unsharded", None)
        if set_unsharded is not None:
            unsharded = {t.encode() for t, p in self._policies.items() if not p.sharded}
            set_unsharded(unsharded, self.sharded)

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
            publish_errors=(link.errors if link else 0)
            + (self._durable.errors if self._durable else 0),
            connected=bool(link and link.connected),
            late_replies=self._requests.late_replies if self._requests else 0,
            recovered=self._history_totals.recovered,
            duplicates=self._history_totals.duplicates,
            history_lost=self._history_totals.history_lost,
        )

    async def execute(self, *args: str | bytes | int | float) -> Any:
        """Run any Redis command on the client's command connection and return its reply."""
        await self.connect()
        assert self._link is not None
        return await self._link.execute(*args)


def persists(aof: Any, save: Any) -> bool:
    """Whether a server with these ``CONFIG GET appendonly`` and ``CONFIG GET save`` replies
    keeps its data across a restart (AOF on, or at least one RDB save point).

    >>> persists([b"appendonly", b"no"], [b"save", b""])
    False
    >>> persists([b"appendonly", b"no"], [b"save", b"3600 1 300 100"])
    True
    """
    return bool(aof[1].decode().lower() == "yes" or save[1].decode().strip())


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
