"""The AsyncClient's Redis commands: ``execute`` (guarded, on the shared connection),
pipelines, transactions, scripts, blocking commands on connections of their own, and the
topics that have subscribers now (``docs/how-to.md``).

:class:`Commands` is mixed into :class:`~herald.AsyncClient`; what it uses of the client is
declared below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from herald._core.raw import check_command, decoded
from herald._core.url import Endpoint
from herald._io.interface import Connection
from herald._io.link import Link
from herald._pubsub import channels as _channels

from ._pipeline import Pipeline, Script, Spares, Transaction, run_blocking


class Commands:
    """Redis commands on the client's connections (mixed into ``AsyncClient``)."""

    _link: Connection | None
    _link_options: dict[str, Any]
    _name: str
    endpoint: Endpoint | None
    _closed: bool
    _spares: Spares

    # Deliberately repeated signatures: type stubs of the AsyncClient methods this mixin
    # calls (the client defines them; nothing here exists at run time).
    if TYPE_CHECKING:

        async def connect(self) -> None: ...

    async def active_topics(self, pattern: str = "*") -> dict[str, int]:
        """Topics that have subscribers now, declared or not, with their subscriber
        connections (``PUBSUB CHANNELS`` and ``NUMSUB``; on a cluster, every primary is asked).

        ``pattern`` is a glob, as in ``subscribe``. Herald's own channels (``_herald.*``:
        request inboxes, the gateway's probe) are left out. A topic without subscribers is not
        listed: the server forgets a channel when its last subscriber leaves, and keeps no
        count of the messages published to it.

        Example::

            for topic, subscribers in (await hub.active_topics("orders.*")).items():
                print(topic, subscribers)
        """
        await self.connect()
        assert self._link is not None
        state = await _channels.pubsub_state(self._link, pattern)
        return {
            name: n
            for name, n in sorted(state.subscribers().items())
            if not name.startswith(_channels.INTERNAL_PREFIX)
        }

    async def execute(self, *args: str | bytes | int | float, decode: bool = False) -> Any:
        """Run a Redis command on the client's command connection and return its reply.

        The connection is shared by every task of the client, so commands that would change
        its state or hold it are refused (:class:`UnsafeCommand` names what to use instead):
        transactions (:meth:`transaction`), the ``SUBSCRIBE`` family (:meth:`subscribe`),
        ``MONITOR``, ``SELECT``, ``CLIENT REPLY``, blocking commands
        (:meth:`execute_blocking`)... (list in ``docs/how-to.md``).

        Args:
            decode: return text: every ``bytes`` in the reply decoded as UTF-8 (nested lists
                too); :class:`DecodeError` if one is not UTF-8.

        Example::

            await hub.execute("SET", "greeting", "hi")
            print(await hub.execute("GET", "greeting", decode=True))  # hi
        """
        check_command(args, self._longest_wait())
        await self.connect()
        assert self._link is not None
        reply = await self._link.execute(*args)
        return decoded(reply) if decode else reply

    def pipeline(self, *, decode: bool = False, raise_on_error: bool = True) -> Pipeline:
        """Commands sent together, replies in order (not atomic: see :meth:`transaction`).

        ``raise_on_error``: ``run()`` raises the first failed command's error (the others ran;
        ``pipe.replies`` has every reply, errors in place); ``False`` returns them in place.

        Example::

            async with hub.pipeline() as pipe:
                for i in range(100):
                    pipe.queue("SET", f"key:{i}", i)
        """
        return Pipeline(self, decode, raise_on_error)

    def transaction(
        self,
        *,
        watch: Iterable[str | bytes] = (),
        decode: bool = False,
        raise_on_error: bool = True,
    ) -> Transaction:
        """``MULTI``/``EXEC``: queued commands that run atomically; with ``watch``, on a
        connection of its own, and only if the watched keys did not change after ``WATCH``
        (:class:`TransactionAborted` otherwise). See :class:`Transaction`.

        Example::

            async with hub.transaction() as tx:
                tx.queue("INCR", "visits")
                tx.queue("EXPIRE", "visits", 60)
            print(tx.replies)  # [1, 1]
        """
        return Transaction(self, list(watch), decode, raise_on_error)

    def script(self, text: str) -> Script:
        """A Lua script to call as ``await script(keys=[...], args=[...])`` (``EVALSHA``,
        with ``EVAL`` when the server does not know it yet).

        Example::

            swap = hub.script("local v = redis.call('GET', KEYS[1]) "
                              "redis.call('SET', KEYS[1], ARGV[1]) return v")
            old = await swap(keys=["config:mode"], args=["fast"])
        """
        return Script(self, text)

    async def execute_blocking(self, *args: str | bytes | int | float, decode: bool = False) -> Any:
        """Run a blocking command (``BLPOP``, ``BLMOVE``, ``XREAD ... BLOCK``...) on a
        connection of its own, so that the shared one stays free; return its reply. Idle
        connections are kept for the next call (a few per server node). Pass the command's
        own timeout: cancelling the call closes its connection.

        Example::

            job = await hub.execute_blocking("BLPOP", "jobs", 5)  # None after 5 s
        """
        await self.connect()
        return await run_blocking(self, args, decode)

    def _longest_wait(self) -> float | None:
        """How long a WAIT may hold the shared connection: half the probe timeout."""
        link = self._link
        if link is None:
            interval: float = self._link_options["probe_interval"]
            timeout: float | None = self._link_options["probe_timeout"]
            if not interval:
                return None
            return (timeout if timeout is not None else interval) / 2
        return link.probe_timeout / 2 if link.probe_interval > 0 else None

    async def _dedicated(self, key: bytes | None) -> Link:
        await self.connect()
        return await self._spares.take(self, key)

    def _give_back(self, link: Link, healthy: bool, unwatch: bool) -> None:
        self._spares.give_back(link, healthy and not self._closed, unwatch)
