"""The subscriber connection: SUBSCRIBE/PSUBSCRIBE bookkeeping, dispatch, resubscribe, gaps."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from herald._core.message import Message, Replier, is_request
from herald._core.topics import INBOX_PREFIX_RAW, is_pattern
from herald._core.url import Endpoint
from herald._core.wire import decode
from herald._errors import HeraldError, PermissionDenied, Timeout
from herald._io.link import Link

from .subscription import Gap, Subscription, receiving_until


def went_down(
    subscribed_at: float, link: Link, last: Message | None, exc: Exception | None
) -> tuple[float, float, str]:
    """A Pub/Sub connection just lost: its future Gap's ``since`` (see
    :func:`receiving_until`), ``detected`` (now) and ``reason``."""
    now = time.time()
    since = receiving_until(subscribed_at, link.probe_answered, last, now)
    return since, now, f"connection lost: {exc}" if exc else "connection closed by server"


def not_confirmed(
    command: str, sub: Subscription, timeout: float, names: tuple[str, ...] | None = None
) -> Timeout:
    """The error of a subscribe (of ``sub``'s names, or of ``names``) not confirmed in time."""
    listed = ", ".join(names or sub.names)
    return Timeout(f"{command} to {listed} not confirmed within {timeout}s", timeout)


class _Entry:
    """One channel or pattern on the server and the subscriptions that share it."""

    __slots__ = ("name", "ready", "subs")

    def __init__(self, name: str) -> None:
        self.name = name
        self.subs: list[Subscription] = []
        self.ready: asyncio.Future[Any] | None = None


class Subscriber:
    """Owns the Pub/Sub connection of a client and routes what arrives to subscriptions."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        subscribe_timeout: float = 10.0,
        replier: Replier | None = None,
        **link_options: Any,
    ) -> None:
        self.replier = replier  # given to requests received, for Message.reply
        self.link = Link(
            endpoint,
            on_push=self._on_push,
            on_connect=self._resubscribe,
            on_disconnect=self._disconnected,
            **link_options,
        )
        self.subscribe_timeout = subscribe_timeout
        self._channels: dict[bytes, _Entry] = {}
        self._patterns: dict[bytes, _Entry] = {}
        self._subs: set[Subscription] = set()
        self._down_since: float | None = None
        self._down_detected = 0.0
        self._down_reason = ""
        self.gaps = 0
        # What proves the connection was receiving, for a Gap's ``since``: when the last
        # confirmed (re)subscribe was sent, and the last message that arrived.
        self._subscribed_at = 0.0
        self._last: Message | None = None

    def _table(self, name: str) -> tuple[dict[bytes, _Entry], str]:
        if is_pattern(name):
            return self._patterns, "PSUBSCRIBE"
        return self._channels, "SUBSCRIBE"

    def link_for(self, name: str) -> Link:
        """The connection that receives the channel ``name`` (a request's reply inbox)."""
        return self.link

    def _names_of(self, sub: Subscription) -> tuple[str, ...]:
        """``sub``'s names subscribed on this connection (a sharded client's subscription has
        some of its names on each shard's connection)."""
        out = []
        for name in sub.names:
            entry = self._table(name)[0].get(name.encode())
            if entry is not None and sub in entry.subs:
                out.append(name)
        return tuple(out)

    async def add(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        """Subscribe ``sub`` to its names, or to ``names`` (more of them, added later)."""
        await self.link.ensure_connected()
        sent = time.time()
        self._subs.add(sub)
        waits: list[asyncio.Future[Any]] = []
        for name in sub.names if names is None else names:
            table, cmd = self._table(name)
            raw = name.encode()
            entry = table.get(raw)
            if entry is None:
                entry = table[raw] = _Entry(name)
                if self.link.connected:
                    entry.ready = self.link.execute(cmd, raw)
            entry.subs.append(sub)
            if entry.ready is not None:
                waits.append(entry.ready)
        try:
            await self.link.wait_connected(self.subscribe_timeout)
            async with asyncio.timeout(self.subscribe_timeout):
                for w in waits:
                    await asyncio.shield(w)
            if waits and self._down_since is None:
                self._subscribed_at = max(self._subscribed_at, sent)
        except TimeoutError:
            self._unregister(sub, names)
            raise not_confirmed("subscribe", sub, self.subscribe_timeout, names) from None
        except BaseException:
            await self.remove(sub, names)
            raise

    def _unregister(
        self, sub: Subscription, names: tuple[str, ...] | None = None
    ) -> list[tuple[str, bytes]]:
        """Drop ``sub`` (or only its ``names``) from the tables; return the (command, name) to
        unsubscribe on the server."""
        if names is None:
            self._subs.discard(sub)
        gone: list[tuple[str, bytes]] = []
        for name in sub.names if names is None else names:
            table, cmd = self._table(name)
            raw = name.encode()
            entry = table.get(raw)
            if entry is None or sub not in entry.subs:
                continue
            # A new list, never an in-place removal: _on_push may be iterating the old one
            # (a subscription that overflows removes itself while a message is dispatched).
            entry.subs = [s for s in entry.subs if s is not sub]
            if not entry.subs:
                del table[raw]
                gone.append(("PUNSUBSCRIBE" if cmd == "PSUBSCRIBE" else "UNSUBSCRIBE", raw))
        return gone

    async def remove(self, sub: Subscription, names: tuple[str, ...] | None = None) -> None:
        """Unsubscribe ``sub``, or only its ``names`` (the subscription goes on with the rest)."""
        gone = self._unregister(sub, names)
        if not self.link.connected:
            return
        futs = [self.link.execute(cmd, raw) for cmd, raw in gone]
        for f in futs:
            with contextlib.suppress(HeraldError):
                await f

    def discard(self, sub: Subscription) -> None:
        """Remove from any context on the loop thread (a subscription failing by itself)."""
        gone = self._unregister(sub)
        if self.link.connected:
            for cmd, raw in gone:
                self.link.execute(cmd, raw).add_done_callback(_consume)

    async def close(self) -> None:
        for sub in list(self._subs):
            sub._finish()
        self._subs.clear()
        await self.link.close()

    # -- data path ---------------------------------------------------------------------------

    def _on_push(self, reply: list[Any]) -> None:
        if reply[0] == b"pmessage":
            entry = self._patterns.get(reply[1])
            channel = reply[2]
            if entry is None or (channel[:1] == b"_" and channel.startswith(INBOX_PREFIX_RAW)):
                # Replies are for their inbox alone: a pattern such as "*" matches inboxes on
                # the server, but no user subscription receives them. (The first-byte test
                # keeps the check at ~30 ns a frame instead of ~100.)
                return
            messages = decode(channel.decode("utf-8", "replace"), reply[3], entry.name)
        else:
            entry = self._channels.get(reply[1])
            if entry is None:
                return
            messages = decode(entry.name, reply[2])
        # Requests are single-message frames with headers (docs/request-reply.md): one cheap
        # check per frame for everything else.
        first = messages[0]
        if (h := first._headers) and is_request(h) and len(messages) == 1 and self.replier:
            first._replier = self.replier
        self._last = messages[-1]
        for sub in entry.subs:
            sub._deliver(messages)

    # -- connection events -------------------------------------------------------------------

    def _disconnected(self, exc: Exception | None) -> None:
        for sub in self._subs:
            sub._stale()
        if self._down_since is None:
            self._down_since, self._down_detected, self._down_reason = went_down(
                self._subscribed_at, self.link, self._last, exc
            )

    async def _resubscribe(self) -> None:
        link = self.link
        sent = time.time()
        futs = []
        for table in (self._channels, self._patterns):
            cmd = "PSUBSCRIBE" if table is self._patterns else "SUBSCRIBE"
            for raw, entry in table.items():
                entry.ready = link.execute(cmd, raw)
                futs.append(entry.ready)
        results = await asyncio.gather(*futs, return_exceptions=True)
        # A channel the ACL no longer allows ends its subscriptions with PermissionDenied rather
        # than being retried forever; any other failure means this connection is already gone.
        for table in (self._channels, self._patterns):
            for entry in list(table.values()):
                ready = entry.ready
                exc = (
                    ready.exception() if ready and ready.done() and not ready.cancelled() else None
                )
                if isinstance(exc, PermissionDenied):
                    for sub in list(entry.subs):
                        sub._fail(exc)
        if not link.connected or any(
            isinstance(r, BaseException) and not isinstance(r, PermissionDenied) for r in results
        ):
            return  # the next reconnect tries again; the gap stays open
        self._subscribed_at = max(self._subscribed_at, sent)
        for sub in list(self._subs):
            sub._resumed()  # recoverable topics catch up
        if self._down_since is None:
            return
        gap_since, reason = self._down_since, self._down_reason
        self._down_since = None
        self.gaps += 1
        now = time.time()
        for sub in list(self._subs):
            sub._gap(Gap(self._names_of(sub), gap_since, now, reason, self._down_detected))


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
