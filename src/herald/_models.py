"""Value types shared by the layers: a topic's stored policy, a publish's acknowledgement, a
client's counters. They import nothing of Herald's, so every layer (the error tree included)
can use them."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


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


policy_decode = msgspec.json.Decoder(TopicPolicy).decode
DEAD_POLICY = msgspec.json.encode(TopicPolicy(durable=True))
