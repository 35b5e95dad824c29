"""Raw commands done safely: pipelines, transactions, Lua scripts and blocking commands.

- A **pipeline** queues its commands on the shared command connection in one step: they go out
  together and their replies come back in order. It is not atomic, so other tasks' commands
  may run between them; nothing in it can change the connection's state (each command is
  checked as ``execute()`` checks it). On a cluster each command goes to its key's node.
- A **transaction** without ``watch`` is ``MULTI``, the commands and ``EXEC`` queued as one
  contiguous block on the shared connection: the server reads one connection's commands in
  order, so nothing can enter the block. With ``watch`` it needs a connection of its own, since
  the ``WATCH`` must hold across the caller's reads; the block is sent there only while the
  connection the ``WATCH`` was made on is still the one in use.
- A **script** runs with ``EVALSHA``; a server that does not have it (restarted, ``SCRIPT
  FLUSH``) answers ``NOSCRIPT`` and the call is retried once with ``EVAL``, which caches it.
- **Blocking commands** run on a connection of their own, taken from a small pool of idle ones
  and put back only when the command ended normally (a cancelled ``BLPOP`` closes it: the
  server would still answer it later).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

import hiredis

from herald._core.raw import check_command, decoded, raw
from herald._core.resp import Arg, command
from herald._core.slots import command_key, command_keys, key_slot, parse_redirect
from herald._core.url import Endpoint
from herald._io.cluster import ClusterLink
from herald._io.interface import Connection
from herald._io.link import Link
from herald._io.protocol import error_from_reply
from herald._io.sharded import ShardedLink

from ._errors import ConfigurationError, ConnectionLost, CrossSlot, ServerError, TransactionAborted


class Host(Protocol):
    """What pipelines, transactions, scripts and blocking commands use of their client (the
    AsyncClient, whose ``Commands`` mixin defines the methods): its shared connection, how to
    make dedicated ones, and how long a ``WAIT`` may hold the shared one."""

    _link: Connection | None
    _link_options: dict[str, Any]
    _name: str
    endpoint: Endpoint | None

    async def connect(self) -> None: ...
    def _longest_wait(self) -> float | None: ...
    async def _dedicated(self, key: bytes | None) -> Link: ...
    def _give_back(self, link: Link, healthy: bool, unwatch: bool) -> None: ...


SPARE_PER_NODE = 4  # idle dedicated connections kept per node
_MOVED_RETRIES = 20


def _values(replies: list[Any], decode: bool) -> list[Any]:
    """Error elements as Herald's errors; with ``decode``, bytes as text."""
    out: list[Any] = []
    for item in replies:
        if isinstance(item, hiredis.ReplyError):
            out.append(error_from_reply(item))
        elif isinstance(item, BaseException):
            out.append(item)
        else:
            out.append(decoded(item) if decode else item)
    return out


def _first_error(replies: list[Any]) -> BaseException | None:
    return next((r for r in replies if isinstance(r, BaseException)), None)


class Pipeline:
    """Commands sent together on the client's command connection; replies in order. Not a
    transaction: other clients' (and tasks') commands may run between them.

    Use ``queue(...)`` then ``await run()``, or ``async with``: the queued commands run when
    the block ends without an exception, and :attr:`replies` holds their replies.

    Example::

        async with hub.pipeline(decode=True) as pipe:
            pipe.queue("SET", "greeting", "hi")
            pipe.queue("GET", "greeting")
        print(pipe.replies)  # ['OK', 'hi']
    """

    def __init__(self, client: Host, decode: bool, raise_on_error: bool) -> None:
        self._client = client
        self._decode = decode
        self._raise = raise_on_error
        self._commands: list[tuple[Arg, ...]] = []
        self.replies: list[Any] = []  # the last run's replies, errors in place

    def queue(self, *args: Arg) -> Pipeline:
        """Add a command (checked as ``execute()`` checks it); returns the pipeline."""
        check_command(args, self._client._longest_wait())
        self._commands.append(args)
        return self

    def __len__(self) -> int:
        return len(self._commands)

    async def run(self) -> list[Any]:
        """Send the queued commands and return their replies, in order; the pipeline is empty
        again afterwards.

        Raises:
            ServerError: the first command that failed (with ``raise_on_error``; the others
                ran, and :attr:`replies` has every reply, errors in place).
        """
        commands, self._commands = self._commands, []
        await self._client.connect()
        link = self._client._link
        assert link is not None
        futures = [link.execute(*args) for args in commands]  # queued in this iteration: one write
        done = await asyncio.gather(*futures, return_exceptions=True)
        self.replies = _values(list(done), self._decode)
        error = _first_error(self.replies)
        if error is not None and self._raise:
            raise error
        return self.replies

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None and self._commands:
            await self.run()
        self._commands = []


class Transaction:
    """``MULTI``/``EXEC``: the queued commands run atomically, none in between.

    ``watch``: keys read under optimistic locking; the transaction then has a connection of
    its own, ``await tx.execute(...)`` runs a command at once on it (to read the watched keys),
    and the commit raises :class:`TransactionAborted` if one of them changed meanwhile.
    On a cluster all its keys must be in one hash slot (:class:`CrossSlot` otherwise).

    Use ``async with``: the queued commands are committed when the block ends without an
    exception (:attr:`replies` has their replies), or call ``await tx.commit()`` inside it.

    Example::

        async with hub.transaction(watch=["stock:{42}"]) as tx:
            stock = int(await tx.execute("GET", "stock:{42}") or 0)
            tx.queue("SET", "stock:{42}", stock - 1)
            tx.queue("LPUSH", "orders:{42}", "one more")
        print(tx.replies)  # [b'OK', 1]
    """

    def __init__(
        self,
        client: Host,
        watch: Sequence[str | bytes],
        decode: bool,
        raise_on_error: bool,
    ) -> None:
        self._client = client
        self._watch = [raw(k) for k in watch]
        self._decode = decode
        self._raise = raise_on_error
        self._commands: list[tuple[Arg, ...]] = []
        self._link: Link | None = None  # the dedicated connection (with watch)
        self._conn: object | None = None  # the connection the WATCH was made on
        self.replies: list[Any] = []
        self.committed = False

    def queue(self, *args: Arg) -> Transaction:
        """Add a command to the transaction (run at the commit); returns the transaction."""
        check_command(args, self._client._longest_wait())
        self._commands.append(args)
        return self

    async def execute(self, *args: Arg, decode: bool | None = None) -> Any:
        """Run a command now, on the transaction's own connection (with ``watch`` only): to
        read what the watched keys hold before queuing the writes."""
        if not self._watch:
            raise ConfigurationError(
                "execute() inside a transaction needs watch=: without it use hub.execute()"
            )
        check_command(args, None)
        link = await self._watched()
        reply = await link.execute(*args)
        return decoded(reply) if (self._decode if decode is None else decode) else reply

    async def _watched(self) -> Link:
        if self._link is None:
            key = self._key([(b"WATCH", *self._watch)])
            self._link = await self._client._dedicated(key)
            await self._link.execute(b"WATCH", *self._watch)
            self._conn = self._link.connection
        if self._link.connection is not self._conn or self._conn is None:
            raise ConnectionLost("the transaction's connection was lost: its WATCH is gone")
        return self._link

    def _key(self, commands: Sequence[tuple[Arg, ...]]) -> bytes | None:
        """A key naming where the transaction runs (cluster and shards only: every key must be
        in one slot, or on one shard; else :class:`CrossSlot`)."""
        if not isinstance(self._client._link, ClusterLink | ShardedLink):
            return None
        keys = list(self._watch)
        for args in commands:
            if args and raw(args[0]).upper() == b"WATCH":
                continue
            keys.extend(command_keys(args))
        if _places(self._client._link, keys) > 1:
            raise CrossSlot([k.decode(errors="replace") for k in keys])
        return keys[0] if keys else None

    async def commit(self) -> list[Any]:
        """Run the queued commands in one ``MULTI``/``EXEC``; return their replies in order.

        Raises:
            TransactionAborted: a watched key changed: nothing ran.
            ServerError: a command was refused when queued (``EXECABORT``: nothing ran); or,
                with ``raise_on_error``, the first command that failed while running (the
                others ran: Redis does not roll back; :attr:`replies` has them all).
            ConnectionLost: the connection was lost before the answer (with ``watch``: before
                the commit, nothing ran).
        """
        if self.committed:
            raise ConfigurationError("the transaction was committed already: make a new one")
        self.committed = True
        commands = self._commands
        key = self._key(commands)
        data = b"".join(
            [command(b"MULTI"), *(command(*args) for args in commands), command(b"EXEC")]
        )
        link: Connection
        for attempt in range(_MOVED_RETRIES):
            if self._watch:
                link = await self._watched()
            else:
                await self._client.connect()
                shared = self._client._link
                assert shared is not None
                link = shared
                if isinstance(shared, ClusterLink | ShardedLink):
                    link = shared.home if key is None else shared.link_for_key(key)
            loop = asyncio.get_running_loop()
            waiters: list[asyncio.Future[Any] | None] = [
                loop.create_future() for _ in range(len(commands) + 2)
            ]
            link.send_nowait(data, waiters)
            done = await asyncio.gather(*(w for w in waiters if w), return_exceptions=True)
            queued, result = done[1:-1], done[-1]
            moved = any(
                isinstance(r, ServerError) and parse_redirect(r.reply) is not None for r in queued
            )
            if moved and not self._watch and attempt + 1 < _MOVED_RETRIES:
                # The slot moved: nothing ran (EXECABORT); send it where the slot is now.
                shared = self._client._link
                if isinstance(shared, ClusterLink):
                    shared.refresh_soon()
                await asyncio.sleep(0.05)
                continue
            break
        if isinstance(result, BaseException):
            raise result
        if self._watch and self._link is not None and self._link.connection is not self._conn:
            # Sent after a reconnect, where no WATCH held: it ran, unprotected.
            raise ConnectionLost("the transaction's connection was replaced: outcome unchecked")
        if result is None:
            raise TransactionAborted([k.decode(errors="replace") for k in self._watch])
        self.replies = _values(list(result), self._decode)
        error = _first_error(self.replies)
        if error is not None and self._raise:
            raise error
        return self.replies

    async def close(self) -> None:
        """Give the connection back (after ``UNWATCH``); done by ``async with``."""
        link, self._link = self._link, None
        if link is not None:
            healthy = self._conn is not None and link.connection is self._conn
            self._client._give_back(link, healthy, unwatch=not self.committed)

    async def __aenter__(self) -> Transaction:
        if self._watch:
            await self._watched()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if et is None and not self.committed and self._commands:
                await self.commit()
        finally:
            await self.close()


class Script:
    """A Lua script, called with ``EVALSHA`` (``EVAL`` when the server does not have it).

    Example::

        incr_to = hub.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await incr_to(keys=["counter"], args=[5])  # 5
    """

    def __init__(self, client: Host, text: str) -> None:
        self._client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(
        self,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
        *,
        decode: bool = False,
    ) -> Any:
        """Run the script with ``keys`` (``KEYS``) and ``args`` (``ARGV``); return its reply.

        Raises:
            CrossSlot: on a cluster, keys in more than one hash slot.
            ServerError: the script raised (or called a command that failed).
        """
        client = self._client
        await client.connect()
        link = client._link
        assert link is not None
        if _places(link, [raw(k) for k in keys]) > 1:
            raise CrossSlot([raw(k).decode(errors="replace") for k in keys])
        try:
            reply = await link.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except ServerError as exc:
            if not exc.reply.startswith("NOSCRIPT"):
                raise
            reply = await link.execute(b"EVAL", self.text, len(keys), *keys, *args)
        return decoded(reply) if decode else reply


async def run_blocking(client: Host, args: tuple[Arg, ...], decode: bool) -> Any:
    """``execute_blocking``: the command on a dedicated connection of the key's node."""
    check_command(args, None, blocking=True)
    await client.connect()
    keys = command_keys(args)
    if _places(client._link, keys) > 1:
        raise CrossSlot([k.decode(errors="replace") for k in keys])
    link = await client._dedicated(command_key(args))
    healthy = False
    try:
        reply = await link.execute(*args)
        healthy = True
    finally:
        # Cancelled or failed: the server may still answer later; that connection is not reused.
        client._give_back(link, healthy, unwatch=False)
    return decoded(reply) if decode else reply


class Spares:
    """Idle dedicated connections of one client, per node address."""

    def __init__(self) -> None:
        self._idle: dict[str, list[Link]] = {}
        self._busy: set[Link] = set()
        self._closing: set[asyncio.Task[None]] = set()

    async def take(self, client: Host, key: bytes | None) -> Link:
        shared = client._link
        assert shared is not None
        assert client.endpoint is not None
        options = {**client._link_options, "probe_interval": 0, "probe_timeout": None}
        if isinstance(shared, ClusterLink):
            node = shared.node_of(shared.home if key is None else shared.link_for_key(key))
            endpoint = shared.endpoint_of(node)
        elif isinstance(shared, ShardedLink):
            # the key's shard, found as its primary is (a Sentinel group's resolver)
            shard = shared.home if key is None else shared.link_for_key(key)
            endpoint = shard.endpoint
            options.pop("resolvers", None)
            options["resolver"] = shard.resolver
        else:
            endpoint = client.endpoint
        idle = self._idle.setdefault(endpoint.address, [])
        while idle:
            link = idle.pop()
            if link.connected:
                self._busy.add(link)
                return link
            await link.close()
        link = Link(endpoint, name=f"{client._name}-dedicated", **options)
        await link.connect()
        self._busy.add(link)
        return link

    def give_back(self, link: Link, healthy: bool, unwatch: bool) -> None:
        self._busy.discard(link)
        idle = self._idle.setdefault(link.endpoint.address, [])
        if healthy and link.connected and len(idle) < SPARE_PER_NODE:
            if unwatch:
                link.execute(b"UNWATCH").add_done_callback(_retrieve)
            idle.append(link)
        else:
            task = asyncio.get_running_loop().create_task(link.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        links = [link for idle in self._idle.values() for link in idle] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for link in links:
            await link.close()
        if self._closing:
            await asyncio.wait(self._closing)


def _places(link: Connection | None, keys: list[bytes]) -> int:
    """On how many nodes (cluster slots, shards) ``keys`` are: 1 on one server."""
    if isinstance(link, ClusterLink):
        return len({key_slot(k) for k in keys})
    if isinstance(link, ShardedLink):
        return link.places(keys)
    return 1 if keys else 0


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


# -- for threads (herald.Client): the same objects, their I/O run on the client's loop --------

Call = Callable[[Coroutine[Any, Any, Any]], Any]


_Queued = TypeVar("_Queued", Pipeline, Transaction)


class _SyncQueue(Generic[_Queued]):
    """What :class:`SyncPipeline` and :class:`SyncTransaction` share: queued commands, their
    replies, and the end of a ``with`` block."""

    def __init__(self, inner: _Queued, call: Call) -> None:
        self._inner: _Queued = inner
        self._call = call

    @property
    def replies(self) -> list[Any]:
        return self._inner.replies

    def queue(self, *args: Arg) -> Self:
        self._inner.queue(*args)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._call(self._inner.__aexit__(et, e, tb))


class SyncPipeline(_SyncQueue[Pipeline]):
    """:class:`Pipeline` for threads: ``queue(...)``, then ``run()`` or ``with``."""

    def run(self) -> list[Any]:
        result: list[Any] = self._call(self._inner.run())
        return result

    def __enter__(self) -> SyncPipeline:
        return self


class SyncTransaction(_SyncQueue[Transaction]):
    """:class:`Transaction` for threads: use ``with``; ``execute(...)`` (with ``watch``),
    ``queue(...)``, ``commit()``."""

    def execute(self, *args: Arg, decode: bool | None = None) -> Any:
        return self._call(self._inner.execute(*args, decode=decode))

    def commit(self) -> list[Any]:
        result: list[Any] = self._call(self._inner.commit())
        return result

    def __enter__(self) -> SyncTransaction:
        self._call(self._inner.__aenter__())
        return self


class SyncScript:
    """:class:`Script` for threads: ``script(keys=[...], args=[...])``."""

    def __init__(self, inner: Script, call: Call) -> None:
        self._inner = inner
        self._call = call
        self.sha = inner.sha

    def __call__(
        self, keys: Sequence[Arg] = (), args: Sequence[Arg] = (), *, decode: bool = False
    ) -> Any:
        return self._call(self._inner(keys, args, decode=decode))
