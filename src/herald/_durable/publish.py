"""Durable topics on the command connection: Lua scripts, publish, declare, delete, trim.

Every server-side step of a durable topic is one Lua script (text and SHA1 in ``_streams``),
run with EVALSHA. Each script is loaded with SCRIPT LOAD once per connection, queued ahead of
its first EVALSHA there: a restarted server has an empty script cache, and recovering from
NOSCRIPT one reply at a time would reorder fire-and-forget publishes. NOSCRIPT (someone ran
SCRIPT FLUSH) is still handled: the command is retried with EVAL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from herald._core.history import history_key, meta_key
from herald._core.resp import Arg
from herald._core.streams import (
    DECLARE,
    PUBLISH,
    TOPICS_KEY,
    TOPICS_VERSION_KEY,
    TRIM,
    DurableTopic,
    Script,
    dedup_key,
    dedup_pattern,
    stream_key,
)
from herald._errors import ClientClosed, ConnectionLost, HeraldError, ServerError
from herald._io.interface import BLOCKED, FLUSHED, Connection
from herald._io.link import MAX_BATCH_MESSAGES

log = logging.getLogger("herald")
_NKEYS = (b"0", b"1", b"2", b"3", b"4")


class Scripts:
    """Runs Herald's scripts on one :class:`Link` (the client's command connection)."""

    def __init__(self, link: Connection) -> None:
        self.link = link
        self._conn = -1
        self._loaded: set[bytes] = set()
        self.errors = 0  # error replies to fire-and-forget scripts
        self._errors_seen = 0
        self.last_error: str | None = None

    def _command(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        link = self.link
        # Commands queued while disconnected go out on the next connection.
        conn = link.reconnects + (0 if link.connected else 1)
        if conn != self._conn:
            self._conn = conn
            self._loaded = set()
        if script.sha not in self._loaded:
            self._loaded.add(script.sha)
            link.execute("SCRIPT", "LOAD", script.text).add_done_callback(_retrieve)
        return [b"EVALSHA", script.sha, _NKEYS[len(keys)], *keys, *args]

    def ensure(self, script: Script) -> None:
        """Load ``script`` on the connection its next commands go out on, if not yet done (for
        fire-and-forget EVALSHA calls queued by other means than :meth:`call` and :meth:`send`).
        A NOSCRIPT reply to one of those (SCRIPT FLUSH on the server) makes it load again."""
        link = self.link
        if link.errors != self._errors_seen:
            self._errors_seen = link.errors
            if (link.last_error or "").startswith("NOSCRIPT"):
                self._loaded = set()
        self._command(script, (), ())

    async def call(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script and return its reply."""
        try:
            return await self.link.execute(*self._command(script, keys, args))
        except ServerError as exc:
            if not exc.reply.startswith("NOSCRIPT"):
                raise
        return await self.link.execute("EVAL", script.text, len(keys), *keys, *args)

    def send(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> None:
        """Run a script without waiting; an error reply is counted and logged."""
        fut = self.link.execute(*self._command(script, keys, args))
        fut.add_done_callback(lambda f: self._sent(f, script, keys, args))

    def _sent(
        self, fut: asyncio.Future[Any], script: Script, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is None:
            return
        if isinstance(exc, ServerError) and exc.reply.startswith("NOSCRIPT"):
            try:
                retry = self.link.execute("EVAL", script.text, len(keys), *keys, *args)
            except HeraldError as err:
                self._failed(script, err)
                return
            retry.add_done_callback(lambda f: self._sent(f, script, keys, args))
            return
        self._failed(script, exc)

    def _failed(self, script: Script, exc: BaseException) -> None:
        if isinstance(exc, ConnectionLost | ClientClosed):
            log.debug("%s: outcome unknown, the connection closed: %s", script.name, exc)
            return
        self.errors += 1
        self.last_error = str(exc)
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning("%s failed (%d errors so far): %s", script.name, self.errors, exc)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # A failed SCRIPT LOAD shows up as NOSCRIPT on the EVALSHA that follows, which retries.
    if not fut.cancelled():
        fut.exception()


async def publish(
    scripts: Scripts,
    spec: DurableTopic,
    frame: bytes,
    msg_id: str | None,
    confirm: bool,
    timeout: float | None,
) -> tuple[str, bool, int] | None:
    """Store and publish one message; (entry id, duplicate, receivers), or ``None`` at once
    without ``confirm``.

    With an idempotency key (``msg_id``, and a dedup window) it is the ``publish`` script: the
    dedup check, XADD and PUBLISH in one step. Without, it is ``XADD`` then ``PUBLISH``,
    pre-encoded and sent back to back on the command connection (a script costs ~7 us of
    server time, the two commands ~2 us). Every ``TRIM_EVERY`` publishes (or ``TRIM_PERIOD``)
    the ``trim`` script follows, not waited for. ``timeout``: for room in the send buffer.
    """
    link = scripts.link
    if msg_id is not None and spec.dedup_ms > 0:
        keys = (spec.stream_raw, dedup_key(spec.topic, msg_id))
        # The frame goes last: room for a cached command prefix, as live publishes have.
        args = (*spec.publish_args, b"1" if spec.trim_due() else b"0", *spec.trim_args, frame)
        if not confirm:
            if link.blocked:
                await link.wait_writable(timeout)
            scripts.send(PUBLISH, keys, args)
            return None
        offset, duplicate, receivers = await scripts.call(PUBLISH, keys, args)
        return offset.decode(), bool(duplicate), int(receivers)
    data = spec.append_command(frame)
    if not confirm:
        status = link.try_send(data, [None, None])
        while status == BLOCKED:
            await link.wait_writable(timeout)
            status = link.try_send(data, [None, None])
        if spec.trim_due():
            scripts.send(TRIM, (spec.stream_raw,), spec.trim_args)
        if status == FLUSHED:
            await asyncio.sleep(0)  # a publisher in a tight loop still lets other tasks run
        return None
    assert link.loop is not None
    stored: asyncio.Future[Any] = link.loop.create_future()
    published: asyncio.Future[Any] = link.loop.create_future()
    while link.try_send(data, [stored, published]) == BLOCKED:
        await link.wait_writable(timeout)
    if spec.trim_due():
        scripts.send(TRIM, (spec.stream_raw,), spec.trim_args)
    # The replies come in order: once PUBLISH's is in, XADD's is too.
    try:
        receivers = await published
    except BaseException:
        if not stored.cancel() and not stored.cancelled():
            stored.exception()  # retrieved: the error raised is PUBLISH's (or the cancel)
        raise
    return stored.result().decode(), False, int(receivers)  # XADD's error, if it failed


async def publish_many(
    scripts: Scripts, spec: DurableTopic, frames: list[bytes], timeout: float | None
) -> None:
    """Store and publish messages without idempotency keys and without waiting: their XADD and
    PUBLISH commands queued in one burst per ``MAX_BATCH_MESSAGES``."""
    link = scripts.link
    for i in range(0, len(frames), MAX_BATCH_MESSAGES):
        chunk = frames[i : i + MAX_BATCH_MESSAGES]
        data = b"".join([spec.append_command(frame) for frame in chunk])
        waiters: list[asyncio.Future[Any] | None] = [None] * (2 * len(chunk))
        status = link.try_send(data, waiters)
        while status == BLOCKED:
            await link.wait_writable(timeout)
            status = link.try_send(data, waiters)
        if spec.trim_due(len(chunk)):
            scripts.send(TRIM, (spec.stream_raw,), spec.trim_args)
        if status == FLUSHED:
            await asyncio.sleep(0)


async def trim(scripts: Scripts, spec: DurableTopic) -> int:
    """Apply the topic's retention now; the number of entries removed."""
    if not spec.retains:
        return 0
    return int(await scripts.call(TRIM, [spec.stream], spec.trim_args))


async def declare(
    scripts: Scripts, topic: str, policy: bytes, update: bool, dead: str, dead_policy: bytes
) -> bytes | None:
    """Store a policy (and the dead-letter topic's, if not declared); the stored policy
    instead when it differs and ``update`` is false."""
    reply = await scripts.call(
        DECLARE,
        [TOPICS_KEY, TOPICS_VERSION_KEY],
        [topic, policy, "1" if update else "0", dead, dead_policy],
    )
    if int(reply[0]) == 1:
        return None
    return bytes(reply[1])


async def delete(link: Connection, topic: str) -> bool:
    """Remove a topic's policy, stream, history and idempotency keys; True if it was declared."""
    removed = await link.execute("HDEL", TOPICS_KEY, topic)
    await link.execute("UNLINK", stream_key(topic), history_key(topic), meta_key(topic))
    cursor = b"0"
    while True:
        cursor, keys = await link.execute(
            "SCAN", cursor, "MATCH", dedup_pattern(topic), "COUNT", 1000
        )
        if keys:
            await link.execute("UNLINK", *keys)
        if cursor == b"0":
            break
    await link.execute("INCR", TOPICS_VERSION_KEY)
    return bool(removed)
