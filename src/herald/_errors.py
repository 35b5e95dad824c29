"""Herald's exceptions: one tree, named after the condition.

::

    HeraldError
     ├── ConfigurationError (ValueError)        bad URL, bad option
     │    ├── ReservedName                      a header, topic or pattern that is Herald's (.name)
     │    ├── UnsafeCommand                     a raw command that would corrupt the shared
     │    │                                     connection (.command, .alternative)
     │    ├── CrossSlot                         a transaction's keys in several cluster slots
     │    └── UnsupportedAnnotation             a handler's type Herald cannot decode into
     │                                          (.handler, .annotation, .reason)
     ├── InvalidTopic (ValueError)              empty, too long, forbidden characters
     ├── MessageTooLarge (ValueError)           .size, .limit
     ├── DecodeError (ValueError)               a frame or payload that cannot be decoded
     ├── ConnectionFailed (ConnectionError)     server down, refused, TLS failure
     │    └── AuthenticationFailed              wrong user or password
     ├── ConnectionLost (ConnectionError)       a reply that will never come: outcome unknown
     ├── PermissionDenied                       the ACL user may not run a command or use a channel
     ├── ServerError                            any other error reply (.reply)
     ├── Timeout (TimeoutError)                 a deadline passed (.timeout)
     ├── SlowConsumer                           a subscription overflowed its buffer (.pending)
     ├── NoResponders                           nobody received a request (.topic)
     ├── ResponderFailed                        the responder's handler raised (.topic, .error)
     ├── TransactionAborted                    a watched key changed: EXEC ran nothing (.watched)
     ├── NotReplicated                          fewer replicas than asked acknowledged a write
     │                                          (.acked, .required, .ack)
     ├── NotPersisted                           a write not fsynced (locally, on N replicas) in
     │                                          time (.local, .replicas, .required, .ack)
     ├── PositionTrimmed                        a group's unread entries were trimmed away
     │                                          (.topic, .group, .position, .first_available, .lost)
     ├── HistoryLost                            a recoverable topic's missed messages are gone
     │                                          (.topic, .last_offset, .first_available, .epoch)
     └── ClientClosed                           the client or subscription was closed

Outside the tree, as ``StopIteration`` is outside the builtin errors: ``StopSubscription``, which
a handler raises to end its own subscription or consumer (control flow, not a failure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald._core.message import Message

    from ._models import PubAck


class HeraldError(Exception):
    """Root of every error Herald raises."""


class ConfigurationError(HeraldError, ValueError):
    """An option or URL that Herald cannot use."""


class ReservedName(ConfigurationError):
    """A header name, topic or pattern reserved for Herald's own use: ``herald-`` headers, the
    reply inbox namespace ``_herald.inbox.``, a durable topic's dead-letter topic.

    Attributes:
        name: the header name, topic or pattern refused.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name!r} is reserved for Herald: {reason}")
        self.name = name
        self.reason = reason


class UnsupportedAnnotation(ConfigurationError):
    """A handler whose first parameter is annotated with a type Herald cannot decode payloads
    into (a union whose members it cannot tell apart, ``int``, ``dict``, ``X | None``...),
    raised by ``subscribe`` and ``consume``. Herald decodes into msgspec ``Struct``\\ s,
    pydantic models and unions of them; ``Message`` (or no annotation) gets the message.

    Attributes:
        handler: the handler refused.
        annotation: its first parameter's annotation.
        reason: why Herald cannot honour it.
    """

    def __init__(self, handler: object, annotation: object, reason: str) -> None:
        name = getattr(handler, "__qualname__", None) or repr(handler)
        super().__init__(f"handler {name}: cannot decode payloads into {annotation!r}: {reason}")
        self.handler = handler
        self.annotation = annotation
        self.reason = reason


class UnsafeCommand(ConfigurationError):
    """A raw command that would corrupt the client's shared command connection (MONITOR,
    MULTI, SUBSCRIBE, SELECT, a blocking BLPOP...), refused by ``execute()`` before it is sent.

    Attributes:
        command: the command's name, with its subcommand (``"CLIENT REPLY"``).
        alternative: what to use instead.
    """

    def __init__(self, command: str, alternative: str) -> None:
        super().__init__(
            f"{command} would corrupt the client's shared connection; use {alternative}"
        )
        self.command = command
        self.alternative = alternative


class CrossSlot(ConfigurationError):
    """On a cluster: the keys of one transaction (or WATCH, or script) are in more than one
    hash slot, so no node can run it atomically; on a sharded client, on more than one shard.
    Put a common ``{hash tag}`` in the key names (a shard is chosen by the tag too).

    Attributes:
        keys: the keys, as given.
    """

    def __init__(self, keys: list[str]) -> None:
        super().__init__(
            f"keys in more than one cluster slot or shard: {', '.join(keys)}; a transaction "
            "runs on one node: give the keys a common {hash tag}, e.g. user:{42}:a and "
            "user:{42}:b"
        )
        self.keys = keys


class InvalidTopic(HeraldError, ValueError):
    """A topic or pattern that breaks Herald's naming rules."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"invalid topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class MessageTooLarge(HeraldError, ValueError):
    """An encoded message over the client's ``max_message_size``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class DecodeError(HeraldError, ValueError):
    """A frame or payload that cannot be decoded."""


class ConnectionFailed(HeraldError, ConnectionError):
    """Herald could not connect to the server."""


class AuthenticationFailed(ConnectionFailed):
    """The server refused the user name or password."""


class ConnectionLost(HeraldError, ConnectionError):
    """The connection died before a reply arrived; the command may or may not have run."""


class PermissionDenied(HeraldError):
    """The server's ACL refused a command, key or channel to this user."""


class ServerError(HeraldError):
    """An error reply from the server."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Timeout(HeraldError, TimeoutError):
    """A deadline passed."""

    def __init__(self, message: str, timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class SlowConsumer(HeraldError):
    """A subscription's buffer overflowed and its policy is ``"disconnect"``."""

    def __init__(self, pending: int, dropped: int) -> None:
        super().__init__(
            f"subscription buffer full ({pending} messages pending); "
            f"{dropped} messages dropped and the subscription closed"
        )
        self.pending = pending
        self.dropped = dropped


class NoResponders(HeraldError):
    """A request reached no subscriber: the server counted 0 receivers for its topic."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"no responders: nobody is subscribed to {topic!r}")
        self.topic = topic


class ResponderFailed(HeraldError):
    """The responder answered a request with an error: its handler raised.

    Attributes:
        topic: the request's topic.
        error: the responder's ``herald-error`` header, ``"<exception type>: <message>"``.
        reply: the error reply itself (a :class:`Message`).
    """

    def __init__(self, topic: str, error: str, reply: Message) -> None:
        super().__init__(f"the responder to {topic!r} failed: {error}")
        self.topic = topic
        self.error = error
        self.reply = reply


class PositionTrimmed(HeraldError):
    """Entries a consumer group had not read yet were removed from the stream (trimmed by
    ``trim_unacked`` retention, or by someone's XTRIM or XDEL): the group can never get them.

    Attributes:
        topic: the durable topic.
        group: the consumer group.
        position: the group's last delivered entry id when the loss was found.
        first_available: the oldest entry still in the stream (``None``: the stream is empty).
        lost: how many entries after ``position`` were removed unread.
    """

    def __init__(
        self, topic: str, group: str, position: str, first_available: str | None, lost: int
    ) -> None:
        first = first_available or "none: the stream is empty"
        super().__init__(
            f"group {group!r} of {topic!r}: {lost} entries after its position {position} were "
            f"removed before it read them (first available entry: {first})"
        )
        self.topic = topic
        self.group = group
        self.position = position
        self.first_available = first_available
        self.lost = lost


class ClientClosed(HeraldError):
    """The client or subscription is closed."""


class TransactionAborted(HeraldError):
    """A transaction's ``EXEC`` ran nothing because a key it watched changed after ``WATCH``
    (optimistic locking): read again and retry.

    Attributes:
        watched: the watched keys.
    """

    def __init__(self, watched: list[str]) -> None:
        super().__init__(
            f"transaction aborted: a watched key changed ({', '.join(watched)}); nothing ran"
        )
        self.watched = watched


class NotPersisted(HeraldError):
    """A durable publish with ``fsync=True`` was stored, but the server did not confirm it
    on disk (``WAITAOF``) within the timeout: a crash now could lose it. Retry with the same
    ``msg_id`` (stored once) or check later.

    Attributes:
        local: 1 if the server's own AOF has it fsynced, else 0.
        replicas: replicas that have it fsynced.
        required: replicas asked for (``replicas=``).
        ack: the server's :class:`PubAck` (the message *is* stored, in memory).
    """

    def __init__(self, local: int, replicas: int, required: int, ack: PubAck) -> None:
        super().__init__(
            f"stored, but fsynced locally: {'yes' if local else 'no'}, on {replicas} of "
            f"{required} required replicas"
        )
        self.local = local
        self.replicas = replicas
        self.required = required
        self.ack = ack


class NotReplicated(HeraldError):
    """A durable publish with ``replicas=N`` was stored on the primary, but fewer than ``N``
    replicas acknowledged it within the timeout (``WAIT``): a failover now could lose it.

    Attributes:
        acked: replicas that acknowledged.
        required: replicas asked for.
        ack: the primary's :class:`PubAck` (the message *is* stored there).
    """

    def __init__(self, acked: int, required: int, ack: PubAck) -> None:
        super().__init__(
            f"stored on the primary but acknowledged by {acked} of {required} required replicas"
        )
        self.acked = acked
        self.required = required
        self.ack = ack


class HistoryLost(HeraldError):
    """Messages of a recoverable topic were missed and its history no longer holds them.

    Raised by a subscription's iterator (or passed to ``on_history_lost``) at the point in the
    sequence where the missing messages would have been; iterating again continues with the
    first message still available.

    Attributes:
        topic: the topic.
        last_offset: the last offset the subscription delivered (0: none yet).
        first_available: the first offset it delivers next (``None``: unknown yet, the history
            was reset and nothing has been published since).
        epoch: the topic's epoch now (``None`` when reset and empty).
        reason: what happened.
    """

    def __init__(
        self,
        topic: str,
        last_offset: int,
        first_available: int | None,
        epoch: int | None,
        reason: str,
    ) -> None:
        self.topic = topic
        self.last_offset = last_offset
        self.first_available = first_available
        self.epoch = epoch
        self.reason = reason
        missed = (
            f"offsets {last_offset + 1}..{first_available - 1}"
            if first_available is not None and first_available > last_offset + 1
            else f"messages after offset {last_offset}"
        )
        super().__init__(f"topic {topic!r}: {missed} are lost: {reason}")

    def __reduce__(self) -> Any:
        args = (self.topic, self.last_offset, self.first_available, self.epoch, self.reason)
        return (HistoryLost, args)


class StopSubscription(Exception):
    """Raised by a handler to end its subscription or consumer, as ``StopIteration`` ends a loop.

    The message being handled counts as handled: a durable consumer with ``auto_ack`` acks it
    (unless the handler settled it, e.g. ``await msg.nak()`` first, to have it delivered again);
    a request gets no reply. Nothing after it is passed to the handler: the subscription
    unsubscribes, the consumer stops reading and hands back what it holds, as ``close()`` does.

    Example::

        async def until_done(msg: herald.Message) -> None:
            if msg.data == "done":
                raise herald.StopSubscription
            print(msg.data)
    """
