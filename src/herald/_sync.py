"""The threaded client: the asyncio implementation driven on one background I/O thread.

Publishing from user threads does not cross into the loop per message: it queues bytes into the
connection's write buffer under a lock and wakes the loop once per batch (see ``Link``).

Its public methods repeat :class:`~herald.AsyncClient`'s signatures on purpose: see the note at
the top of :class:`Client`. The I/O thread is ``_portal``'s, a subscription for threads
``_sync_subscription``'s.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

from herald._core.durable_message import StoredMessage
from herald._core.message import Message
from herald._core.offsets import Position
from herald._core.options import CertReqs
from herald._core.typed import UNTYPED, converter, with_type
from herald._core.wire import Codec, Foreign
from herald._durable import replay as _replay
from herald._durable.acked import Settled
from herald._durable.admin import DeadLetter, TopicInfo
from herald._durable.setup import ConsumeOptions
from herald._errors import HistoryLost
from herald._pubsub.responders import Responder, SyncResponder
from herald._pubsub.subscription import Gap, Handler, Overflow

from ._client import AsyncClient
from ._errors import ClientClosed, HeraldError
from ._models import ClientStats, PubAck, TopicPolicy
from ._pipeline import SyncPipeline, SyncScript, SyncTransaction
from ._portal import FORKED, Portal
from ._sync_consumer import SyncConsumer

# herald imports SyncSubscription from here, where Client.subscribe makes one
from ._sync_subscription import SyncSubscription as SyncSubscription

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("herald")
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _given(arguments: dict[str, Any], *leave: str) -> dict[str, Any]:
    """A Client method's keyword arguments, from its ``locals()`` taken first thing (when they
    hold the arguments alone), without ``self`` and ``leave``: passed on as given to the
    AsyncClient method of the same signature (tests/test_signatures.py keeps them identical)."""
    return {k: v for k, v in arguments.items() if k != "self" and k not in leave}


class Client:
    """Publish and subscribe from ordinary threads; the same options as :class:`AsyncClient`.

    Example::

        with herald.Client() as hub:
            hub.publish("news.sport", {"title": "3:1"})
            with hub.subscribe("news.*") as sub:
                for msg in sub:
                    print(msg.data)
    """

    # Deliberately repeated: every public method states its AsyncClient twin's parameters
    # again, in full, instead of being generated from them, so that mypy, IDEs and the API
    # reference (mkdocstrings reads the source) show the threaded API as it is. Sharing them
    # (a decorator copying the async signature) would hide the parameters from all three and
    # could not say the sync return types. tests/test_signatures.py fails when a name, kind,
    # default or annotation drifts from AsyncClient's. Only the signatures repeat: a method
    # passes its arguments on (long lists with _given), and every check, default and
    # normalisation happens once, in the AsyncClient. `duplicates` lists these blocks.

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
        options = _given(locals(), "url")
        self._pid = os.getpid()
        self._async = AsyncClient(url, **options)  # before the thread: a bad URL must not leak it
        self._portal: Portal | None = Portal()
        self._subs: list[SyncSubscription] = []
        self._consumers: list[SyncConsumer] = []
        try:
            self._portal.call(self._async.connect())
        except BaseException:
            self._portal.stop()
            self._portal = None
            raise
        _clients.add(self)

    def _live(self) -> Portal:
        if os.getpid() != self._pid:
            raise ClientClosed(FORKED)
        if self._portal is None:
            raise ClientClosed("client closed")
        return self._portal

    @property
    def url(self) -> str | None:
        ep = self._async.endpoint
        return ep.address if ep else None

    # -- publishing (signatures repeated: see the note above)

    @overload
    def publish(
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
        type: str | None = None,
    ) -> PubAck: ...

    @overload
    def publish(
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
        type: str | None = None,
    ) -> PubAck | None: ...

    def publish(
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
        type: str | None = None,
    ) -> PubAck | None:
        """Publish one message; see :meth:`AsyncClient.publish`."""
        portal = self._live()
        # Traced: on the loop, in this thread's context (its current span is the parent).
        traced = (tracing := self._async._tracing) is not None and tracing.active()
        if traced or confirm or msg_id is not None or key is not None or replicas or fsync:
            return portal.call(
                self._async.publish(
                    topic,
                    data,
                    headers=headers,
                    confirm=confirm,
                    msg_id=msg_id,
                    key=key,
                    replicas=replicas,
                    envelope=envelope,
                    fsync=fsync,
                    type=type,
                ),
                context=contextvars.copy_context() if traced else None,
            )
        self._async._check_publish(topic, headers)
        if type is not None or data.__class__ not in UNTYPED:
            headers = with_type(headers, type, data, envelope)
        stored = self._async._publish_threadsafe(topic, data, headers, confirm, envelope)
        if stored is None:
            return None
        return portal.call(stored)

    def publish_many(
        self,
        topic: str,
        items: Iterable[Any],
        *,
        headers: Mapping[str, str] | None = None,
        envelope: bool | None = None,
        type: str | None = None,
    ) -> None:
        """Publish several messages to one topic in order; see :meth:`AsyncClient.publish_many`."""
        self._live().call(
            self._async.publish_many(
                topic, list(items), headers=headers, envelope=envelope, type=type
            ),
            context=self._context(),
        )

    def _context(self) -> contextvars.Context | None:
        """This thread's context when tracing (its current span is the parent of the spans
        made on the loop), else ``None``."""
        tracing = self._async._tracing
        return contextvars.copy_context() if tracing is not None and tracing.active() else None

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until everything published so far has reached the server."""
        self._live().call(self._async.flush(timeout))

    # -- request/reply (signatures repeated: see the note above)

    def request(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Send a request and return the first reply; see :meth:`AsyncClient.request`.

        Example::

            reply = hub.request("geo.lookup", {"ip": "1.2.3.4"}, timeout=1.0)
        """
        return self._live().call(
            self._async.request(topic, data, timeout=timeout, headers=headers),
            context=self._context(),
        )

    def request_many(
        self,
        topic: str,
        data: Any,
        *,
        max_replies: int | None = None,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> list[Message]:
        """Gather the replies of every responder; see :meth:`AsyncClient.request_many`."""
        return self._live().call(
            self._async.request_many(
                topic, data, max_replies=max_replies, timeout=timeout, headers=headers
            ),
            context=self._context(),
        )

    def respond(
        self,
        topic: str,
        handler: Callable[..., Any],
        *,
        group: str,
        concurrency: int = 1,
        redeliver_after: float = 5.0,
        error_text: bool = False,
    ) -> SyncResponder:
        """Answer requests to ``topic`` as one member of a responder group; see
        :meth:`AsyncClient.respond`. The handler runs on worker threads (``concurrency`` at
        once).

        Example::

            with hub.respond("thumbnails", make_thumbnail, group="workers"):
                stop.wait()
        """
        portal = self._live()
        inner = Responder(
            self._async, topic, handler, group, concurrency, redeliver_after, error_text, True
        )
        portal.call(inner.start())
        return SyncResponder(inner, portal.call)

    # -- subscribing (signatures repeated: see the note above)

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
    ) -> SyncSubscription:
        """Subscribe; returns once the server confirmed. See :meth:`AsyncClient.subscribe`.

        With ``handler``, each message is passed to it on a thread of this subscription
        (a :class:`HistoryLost` without ``on_history_lost`` is logged there).
        """
        options = _given(locals(), "names", "handler")
        portal = self._live()
        if handler is not None:
            converter(handler)  # UnsupportedAnnotation before anything is subscribed
        sub = self._async.subscribe(*names, **options)  # the handler runs on a thread here
        portal.call(sub.start())
        wrapper = SyncSubscription(sub, portal, handler, self._async._tracing)
        self._subs.append(wrapper)
        return wrapper

    # -- durable topics and topic policies (signatures repeated: see the note above)

    def declare(
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
        """See :meth:`AsyncClient.declare`."""
        options = _given(locals(), "topic")
        return self._live().call(self._async.declare(topic, **options))

    def delete_topic(self, topic: str) -> bool:
        """See :meth:`AsyncClient.delete_topic`."""
        return self._live().call(self._async.delete_topic(topic))

    def trim(self, topic: str) -> int:
        """See :meth:`AsyncClient.trim`."""
        return self._live().call(self._async.trim(topic))

    def consume(
        self,
        topic: str,
        group: str,
        consumer: str | None = None,
        **options: Unpack[ConsumeOptions],
    ) -> SyncConsumer:
        """Consume a durable topic from threads; see :meth:`AsyncClient.consume`.

        With ``handler``, each message is passed to it on a thread of this consumer.

        Example::

            with hub.consume("orders", "billing") as orders:
                for msg in orders:
                    bill(msg.data)
                    msg.ack()
        """
        portal = self._live()
        handler = options.pop("handler", None)
        if handler is not None:
            converter(handler)  # UnsupportedAnnotation before the consumer starts
        inner = self._async.consume(topic, group, consumer, **options)
        portal.call(inner.start())
        wrapper = SyncConsumer(inner, handler, self._async._tracing)
        self._consumers.append(wrapper)
        return wrapper

    def history(
        self, topic: str, *, since: Position | None = None, limit: int = 100
    ) -> list[StoredMessage]:
        """Stored messages of a durable topic; see :meth:`AsyncClient.history`."""
        return self._live().call(self._async.history(topic, since=since, limit=limit))

    def replay(
        self,
        topic: str,
        *,
        since: Position | None = None,
        until: Position | None = None,
        page: int = 1000,
    ) -> Iterator[StoredMessage]:
        """Every stored message from ``since`` to ``until``; see :meth:`AsyncClient.replay`.

        Example::

            for msg in hub.replay("orders", since=datetime(2024, 5, 1, tzinfo=UTC)):
                print(msg.offset, msg.data)
        """
        portal = self._live()
        execute = portal.call(self._async._durable_reader(topic))
        flow = _replay.ranges(since, until, page)
        bounds = next(flow)
        while True:  # a page per call into the I/O thread, not a message
            messages = portal.call(_replay.read(execute, topic, *bounds, page))
            yield from messages
            try:
                bounds = flow.send(messages)
            except StopIteration:
                return

    def topic_info(self, topic: str) -> TopicInfo:
        """See :meth:`AsyncClient.topic_info`."""
        return self._live().call(self._async.topic_info(topic))

    def dead_letters(
        self, topic: str, *, since: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """See :meth:`AsyncClient.dead_letters`."""
        return self._live().call(self._async.dead_letters(topic, since=since, limit=limit))

    def replay_dead(self, topic: str, offsets: Iterable[str] | None = None) -> dict[str, str]:
        """See :meth:`AsyncClient.replay_dead`."""
        return self._live().call(self._async.replay_dead(topic, offsets))

    def wait_acked(
        self, topic: str, offset: str, group: str, *, timeout: float | None = 10.0
    ) -> Settled:
        """Wait until a consumer group settled a durable message; see
        :meth:`AsyncClient.wait_acked`."""
        return self._live().call(self._async.wait_acked(topic, offset, group, timeout=timeout))

    def topics(self) -> dict[str, TopicPolicy]:
        return self._live().call(self._async.topics())

    # -- Redis commands (signatures repeated: see the note above)

    def active_topics(self, pattern: str = "*") -> dict[str, int]:
        """See :meth:`AsyncClient.active_topics`."""
        return self._live().call(self._async.active_topics(pattern))

    def execute(self, *args: str | bytes | int | float, decode: bool = False) -> Any:
        """Run a Redis command and return its reply; see :meth:`AsyncClient.execute` (commands
        that would corrupt the shared connection are refused)."""
        return self._live().call(self._async.execute(*args, decode=decode))

    def execute_blocking(self, *args: str | bytes | int | float, decode: bool = False) -> Any:
        """Run a blocking command on a connection of its own; see
        :meth:`AsyncClient.execute_blocking`.

        Example::

            job = hub.execute_blocking("BLPOP", "jobs", 5)
        """
        return self._live().call(self._async.execute_blocking(*args, decode=decode))

    def pipeline(self, *, decode: bool = False, raise_on_error: bool = True) -> SyncPipeline:
        """Commands sent together, replies in order; see :meth:`AsyncClient.pipeline`.

        Example::

            with hub.pipeline() as pipe:
                pipe.queue("SET", "a", 1).queue("GET", "a")
            print(pipe.replies)  # [b'OK', b'1']
        """
        inner = self._async.pipeline(decode=decode, raise_on_error=raise_on_error)
        return SyncPipeline(inner, self._live().call)

    def transaction(
        self,
        *,
        watch: Iterable[str | bytes] = (),
        decode: bool = False,
        raise_on_error: bool = True,
    ) -> SyncTransaction:
        """``MULTI``/``EXEC``; see :meth:`AsyncClient.transaction`.

        Example::

            with hub.transaction() as tx:
                tx.queue("INCR", "visits").queue("EXPIRE", "visits", 60)
        """
        inner = self._async.transaction(watch=watch, decode=decode, raise_on_error=raise_on_error)
        return SyncTransaction(inner, self._live().call)

    def script(self, text: str) -> SyncScript:
        """A Lua script, called as ``script(keys=[...], args=[...])``; see
        :meth:`AsyncClient.script`."""
        return SyncScript(self._async.script(text), self._live().call)

    # -- introspection, lifecycle

    @property
    def stats(self) -> ClientStats:
        return self._async.stats

    def close(self) -> None:
        """Close subscriptions and connections and stop the I/O thread."""
        portal = self._portal
        if portal is None or os.getpid() != self._pid:
            self._portal = None
            return
        self._portal = None
        for s in self._subs:
            s._stop_handler()
        try:
            portal.call(self._async.close(), timeout=10)
        except HeraldError as exc:
            log.warning("closing client: %s", exc)
        finally:
            portal.stop()
        for s in self._subs:
            s._join_handler()
        for c in self._consumers:
            c._join()
        _clients.discard(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for client in list(_clients):
        try:
            client.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass
