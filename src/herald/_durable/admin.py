"""Looking after durable topics: what a topic holds (groups, consumers, lag), its dead letters,
and putting dead letters back on their topic. Cold paths: plain commands and one script on the
client's command connection; the CLI (``herald topics``, ``herald dead``) is built on these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald._core.durable_message import StoredMessage
from herald._core.history import meta_key
from herald._core.offsets import id_time, start_bound
from herald._core.streams import Script, dead_topic, stream_key
from herald._errors import ServerError

from .publish import Scripts
from .replay import read

if TYPE_CHECKING:
    from herald._models import TopicPolicy

Execute = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ConsumerInfo:
    """One consumer of a group.

    Attributes:
        name: its name in the group.
        pending: entries delivered to it and not yet acked.
        idle: seconds since it last read or claimed.
    """

    name: str
    pending: int
    idle: float


@dataclass(frozen=True)
class GroupInfo:
    """One consumer group of a durable topic.

    Attributes:
        name: the group.
        pending: entries delivered to its consumers and not yet acked.
        last_delivered: the entry id the group has read up to (its position).
        lag: entries not yet delivered to the group (``None``: the server cannot tell,
            e.g. after entries were deleted).
        consumers: its consumers.
    """

    name: str
    pending: int
    last_delivered: str
    lag: int | None
    consumers: tuple[ConsumerInfo, ...]


@dataclass(frozen=True)
class TopicInfo:
    """What a durable topic holds now (from :meth:`AsyncClient.topic_info`).

    Attributes:
        topic: the topic.
        policy: its declared policy (``None``: not declared, a live topic).
        length: entries in its stream.
        first_offset, last_offset: the oldest and newest entry ids (``None``: empty).
        first_time, last_time: when they were stored (seconds since the epoch).
        groups: its consumer groups.
        dead_letters: entries in ``<topic>.dead``.
        published: messages the server has stored for the topic since it was created (a
            durable topic: entries ever added to its stream, trimmed ones included, Redis 7+;
            a recoverable topic: its last offset), or ``None`` (a live topic: the server
            keeps no count of a channel's messages). Two readings give a rate.
    """

    topic: str
    policy: TopicPolicy | None
    length: int
    first_offset: str | None
    last_offset: str | None
    groups: tuple[GroupInfo, ...]
    dead_letters: int
    published: int | None = None

    @property
    def first_time(self) -> float | None:
        return None if self.first_offset is None else id_time(self.first_offset)

    @property
    def last_time(self) -> float | None:
        return None if self.last_offset is None else id_time(self.last_offset)

    @property
    def pending(self) -> int:
        """Entries delivered and not yet acked, over all groups."""
        return sum(g.pending for g in self.groups)


@dataclass(frozen=True)
class DeadLetter:
    """An entry of ``<topic>.dead``: a message that was given up on, and why.

    Attributes:
        offset: its entry id in the dead-letter stream (what ``replay_dead`` takes).
        topic: the topic it was published to.
        reason: why it was dead-lettered (``term(reason)``, ``max_deliver exceeded: ...``,
            ``invalid payload: ...``, ``undecodable: ...``).
        deliveries: how many times it had been delivered.
        group, consumer: who gave up on it.
        original_offset: its entry id on ``topic``.
        time: when it was dead-lettered (seconds since the epoch).
        message: the message itself (its ``data``, ``headers``, ``id``, ``key``).
    """

    offset: str
    topic: str
    reason: str
    deliveries: int
    group: str
    consumer: str
    original_offset: str
    time: float
    message: StoredMessage


def _map(flat: Any) -> dict[str, Any]:
    return {k.decode(): v for k, v in zip(flat[::2], flat[1::2], strict=True)}


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def topic_info(execute: Execute, topic: str, policy: TopicPolicy | None) -> TopicInfo:
    key = stream_key(topic)
    try:
        stream = _map(await execute("XINFO", "STREAM", key))
    except ServerError as exc:  # no such key: nothing was ever stored
        if "no such key" not in exc.reply:
            raise
        stream = {}
    groups: list[GroupInfo] = []
    if stream:
        for raw in await execute("XINFO", "GROUPS", key):
            g = _map(raw)
            name = _str(g["name"])
            consumers = tuple(
                ConsumerInfo(_str(c["name"]), int(c["pending"]), int(c["idle"]) / 1000)
                for c in map(_map, await execute("XINFO", "CONSUMERS", key, name))
            )
            lag = g.get("lag")
            groups.append(
                GroupInfo(
                    name,
                    int(g["pending"]),
                    _str(g["last-delivered-id"]),
                    None if lag is None else int(lag),
                    consumers,
                )
            )
    first, last = stream.get("first-entry"), stream.get("last-entry")
    published: int | None = None
    if policy is not None and policy.history:
        published = int(await execute("HGET", meta_key(topic), "offset") or 0)
    elif policy is not None and policy.durable:
        added = stream.get("entries-added")  # Redis 7+
        published = int(added) if added is not None else (0 if not stream else None)
    return TopicInfo(
        topic,
        policy,
        int(stream.get("length", 0)),
        _str(first[0]) if first else None,
        _str(last[0]) if last else None,
        tuple(groups),
        int(await execute("XLEN", stream_key(dead_topic(topic)))),
        published,
    )


def dead_letter(topic: str, msg: StoredMessage) -> DeadLetter:
    h = msg.headers
    assert isinstance(msg.offset, str)
    try:
        deliveries = int(h.get("herald-deliveries", "0"))
        when = int(h.get("herald-time", "0")) / 1000
    except ValueError:
        deliveries, when = 0, 0.0
    return DeadLetter(
        offset=msg.offset,
        topic=h.get("herald-topic", topic),
        reason=h.get("herald-reason", ""),
        deliveries=deliveries,
        group=h.get("herald-group", ""),
        consumer=h.get("herald-consumer", ""),
        original_offset=h.get("herald-offset", ""),
        time=when,
        message=msg,
    )


async def dead_letters(
    execute: Execute, topic: str, since: str | None, limit: int
) -> list[DeadLetter]:
    messages = await read(execute, dead_topic(topic), start_bound(since), "+", limit)
    return [dead_letter(topic, m) for m in messages]


# Atomic per entry: copy it back (its frame, its key; not Herald's metadata) as a new entry,
# publish it live, delete the dead letter. A dead letter already gone is skipped, so running
# a replay twice puts nothing back twice.
REPLAY_DEAD = Script(
    "replay_dead",
    r"""
-- KEYS: dead stream, stream; ARGV: channel, dead entry id. Returns the new entry id or false.
local r = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if not r[1] then return false end
local fields = r[1][2]
local args = {'XADD', KEYS[2], '*'}
local frame = false
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 7) ~= 'herald-' then
    args[#args + 1] = fields[i]
    args[#args + 1] = fields[i + 1]
    if fields[i] == 'm' then frame = fields[i + 1] end
  end
end
if #args == 3 then return false end
local id = redis.call(unpack(args))
if frame then redis.call('PUBLISH', ARGV[1], frame) end
redis.call('XDEL', KEYS[1], ARGV[2])
return id
""",
)

_PAGE = 100


async def replay_dead(
    scripts: Scripts, execute: Execute, topic: str, offsets: list[str] | None
) -> dict[str, str]:
    """Put dead letters back on ``topic`` (``offsets``; ``None``: all of them); {dead letter
    offset: new entry id} for those put back."""
    keys = (stream_key(dead_topic(topic)), stream_key(topic))
    done: dict[str, str] = {}

    async def one(offset: str) -> None:
        new = await scripts.call(REPLAY_DEAD, keys, (topic, offset))
        if new:
            done[offset] = new.decode()

    if offsets is not None:
        for offset in offsets:
            await one(offset)
        return done
    start = "-"
    while True:  # every dead letter there is when each page is read
        page = await execute("XRANGE", keys[0], start, "+", "COUNT", _PAGE)
        for entry in page:
            await one(entry[0].decode())
        if len(page) < _PAGE:
            return done
        start = f"({page[-1][0].decode()}"
