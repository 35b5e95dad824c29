"""Herald: fast, loss-aware pub/sub for Python on Redis and Valkey.

Example::

    import herald

    async with herald.AsyncClient() as hub:
        await hub.publish("news.sport", {"title": "3:1"})
"""

from ._admin import ConsumerInfo, DeadLetter, GroupInfo, TopicInfo
from ._client import AsyncClient, ClientStats, PubAck, TopicPolicy
from ._consumer import Consumer
from ._durable_message import ConsumerStats, DurableMessage, StoredMessage
from ._errors import (
    AuthenticationFailed,
    ClientClosed,
    ConfigurationError,
    ConnectionFailed,
    ConnectionLost,
    DecodeError,
    HeraldError,
    InvalidTopic,
    MessageTooLarge,
    NoResponders,
    NotPersisted,
    NotReplicated,
    PermissionDenied,
    PositionTrimmed,
    ReservedName,
    ResponderFailed,
    ServerError,
    SlowConsumer,
    StopSubscription,
    Timeout,
)
from ._history import HistoryLost
from ._message import Message
from ._server import EmbeddedServer
from ._subscription import Gap, Subscription, SubscriptionStats
from ._sync import Client, SyncSubscription
from ._sync_consumer import SyncConsumer
from ._topics import match
from ._version import __version__ as __version__

__all__ = [
    "AsyncClient",
    "AuthenticationFailed",
    "Client",
    "ClientClosed",
    "ClientStats",
    "ConfigurationError",
    "ConnectionFailed",
    "ConnectionLost",
    "Consumer",
    "ConsumerInfo",
    "ConsumerStats",
    "DeadLetter",
    "DecodeError",
    "DurableMessage",
    "EmbeddedServer",
    "Gap",
    "GroupInfo",
    "HeraldError",
    "HistoryLost",
    "InvalidTopic",
    "Message",
    "MessageTooLarge",
    "NoResponders",
    "NotPersisted",
    "NotReplicated",
    "PermissionDenied",
    "PositionTrimmed",
    "PubAck",
    "ReservedName",
    "ResponderFailed",
    "ServerError",
    "SlowConsumer",
    "StopSubscription",
    "StoredMessage",
    "Subscription",
    "SubscriptionStats",
    "SyncConsumer",
    "SyncSubscription",
    "Timeout",
    "TopicInfo",
    "TopicPolicy",
    "match",
]
