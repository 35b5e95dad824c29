"""Herald: fast, loss-aware pub/sub for Python on Redis and Valkey.

Example::

    import herald

    async with herald.AsyncClient() as hub:
        await hub.publish("news.sport", {"title": "3:1"})
"""

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
    PermissionDenied,
    ServerError,
    SlowConsumer,
    Timeout,
)
from ._message import Message
from ._server import EmbeddedServer
from ._subscription import Gap, Subscription, SubscriptionStats
from ._sync import Client, SyncSubscription
from ._topics import match

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AuthenticationFailed",
    "Client",
    "ClientClosed",
    "ClientStats",
    "ConfigurationError",
    "ConnectionFailed",
    "ConnectionLost",
    "DecodeError",
    "EmbeddedServer",
    "Gap",
    "HeraldError",
    "InvalidTopic",
    "Message",
    "MessageTooLarge",
    "PermissionDenied",
    "PubAck",
    "ServerError",
    "SlowConsumer",
    "Subscription",
    "SubscriptionStats",
    "SyncSubscription",
    "Timeout",
    "TopicPolicy",
    "match",
]
