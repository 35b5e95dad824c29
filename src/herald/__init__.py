"""Herald: fast, loss-aware pub/sub for Python on Redis and Valkey.

Example::

    import herald

    async with herald.AsyncClient() as hub:
        await hub.publish("news.sport", {"title": "3:1"})
"""

from herald._core.durable_message import ConsumerStats, DurableMessage, StoredMessage
from herald._core.history import HistoryLost
from herald._core.message import Message
from herald._core.topics import match
from herald._durable.admin import ConsumerInfo, DeadLetter, GroupInfo, TopicInfo
from herald._durable.consumer import Consumer
from herald._pubsub.subscription import Gap, Subscription, SubscriptionStats

from ._client import AsyncClient, ClientStats, PubAck, TopicPolicy
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
from ._server import EmbeddedServer
from ._sync import Client, SyncSubscription
from ._sync_consumer import SyncConsumer
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
