"""Herald: fast, loss-aware pub/sub for Python on Redis and Valkey.

Example::

    import herald

    async with herald.AsyncClient() as hub:
        await hub.publish("news.sport", {"title": "3:1"})
"""

from herald._core.durable_message import ConsumerStats, DurableMessage, StoredMessage
from herald._core.message import Message
from herald._core.offsets import Position
from herald._core.topics import is_pattern, match
from herald._core.wire import Codec, Foreign
from herald._durable.admin import ConsumerInfo, DeadLetter, GroupInfo, TopicInfo
from herald._durable.consumer import Consumer
from herald._durable.setup import ConsumeOptions
from herald._pubsub.responders import Responder, SyncResponder
from herald._pubsub.subscription import Gap, Handler, Overflow, Subscription, SubscriptionStats

from ._client import AsyncClient
from ._errors import (
    AuthenticationFailed,
    ClientClosed,
    ConfigurationError,
    ConnectionFailed,
    ConnectionLost,
    CrossSlot,
    DecodeError,
    HeraldError,
    HistoryLost,
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
    TransactionAborted,
    UnsafeCommand,
    UnsupportedAnnotation,
)
from ._models import ClientStats, PubAck, TopicPolicy
from ._pipeline import Pipeline, Script, SyncPipeline, SyncScript, SyncTransaction, Transaction
from ._router import Router, RouterStats, Rule
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
    "Codec",
    "ConfigurationError",
    "ConnectionFailed",
    "ConnectionLost",
    "ConsumeOptions",
    "Consumer",
    "ConsumerInfo",
    "ConsumerStats",
    "CrossSlot",
    "DeadLetter",
    "DecodeError",
    "DurableMessage",
    "EmbeddedServer",
    "Foreign",
    "Gap",
    "GroupInfo",
    "Handler",
    "HeraldError",
    "HistoryLost",
    "InvalidTopic",
    "Message",
    "MessageTooLarge",
    "NoResponders",
    "NotPersisted",
    "NotReplicated",
    "Overflow",
    "PermissionDenied",
    "Pipeline",
    "Position",
    "PositionTrimmed",
    "PubAck",
    "ReservedName",
    "Responder",
    "ResponderFailed",
    "Router",
    "RouterStats",
    "Rule",
    "Script",
    "ServerError",
    "SlowConsumer",
    "StopSubscription",
    "StoredMessage",
    "Subscription",
    "SubscriptionStats",
    "SyncConsumer",
    "SyncPipeline",
    "SyncResponder",
    "SyncScript",
    "SyncSubscription",
    "SyncTransaction",
    "Timeout",
    "TopicInfo",
    "TopicPolicy",
    "Transaction",
    "TransactionAborted",
    "UnsafeCommand",
    "UnsupportedAnnotation",
    "is_pattern",
    "match",
]
