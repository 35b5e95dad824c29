"""Reading a durable topic's stream without a consumer group: history and replay.

Plain XRANGE reads on the client's command connection, from an entry id or a point in time
(see ``_offsets``); nothing is acked and no group moves. The messages are
:class:`StoredMessage`: what a consumer would get, without ``ack``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

from herald._core.durable_message import StoredMessage
from herald._core.offsets import Position, end_bound, start_bound
from herald._core.streams import decode_entry, field, stream_key
from herald._errors import ConfigurationError

Execute = Callable[..., Awaitable[Any]]  # a connection's execute(*args)

KEY_FIELD = b"k"  # the entry field holding the ordering key


def entry_key(fields: list[bytes]) -> str | None:
    """An entry's ordering key (field ``k``), if it has one."""
    if len(fields) <= 2:  # just the frame: the common case, no scan
        return None
    key = field(fields, KEY_FIELD)
    return None if key is None else key.decode("utf-8", "replace")


def stored(topic: str, entry: Any) -> StoredMessage:
    """The message one XRANGE entry (``[id, [field, value, ...]]``) holds."""
    entry_id, fields = entry[0], entry[1] or []
    return StoredMessage(decode_entry(topic, fields), entry_id.decode(), entry_key(fields))


async def read(
    execute: Execute, topic: str, start: str, end: str, count: int
) -> list[StoredMessage]:
    """Up to ``count`` entries between two XRANGE bounds."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigurationError(f"limit and page must be ints >= 1, not {count!r}")
    reply = await execute("XRANGE", stream_key(topic), start, end, "COUNT", count)
    return [stored(topic, e) for e in reply]


async def history(
    execute: Execute, topic: str, since: Position | None, limit: int
) -> list[StoredMessage]:
    return await read(execute, topic, start_bound(since), "+", limit)


def ranges(
    since: Position | None, until: Position | None, page: int
) -> Generator[tuple[str, str], list[StoredMessage], None]:
    """The XRANGE bounds of each page of a replay (sans-I/O: send each page read, get the
    next bounds; it ends at the end of the stream as it is when the last page is read)."""
    start, end = start_bound(since), end_bound(until)
    while True:
        messages = yield start, end
        if len(messages) < page:
            return
        start = f"({messages[-1].offset}"


async def replay(
    execute: Execute,
    topic: str,
    since: Position | None,
    until: Position | None,
    page: int,
) -> AsyncIterator[StoredMessage]:
    """Every entry from ``since`` to ``until``, read ``page`` at a time."""
    flow = ranges(since, until, page)
    bounds = next(flow)
    while True:
        messages = await read(execute, topic, *bounds, page)
        for msg in messages:
            yield msg
        try:
            bounds = flow.send(messages)
        except StopIteration:
            return
