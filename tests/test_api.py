"""The public API is exactly what __all__ says, and every error descends from HeraldError."""

from __future__ import annotations

import types

import herald

PUBLIC = {
    "AsyncClient", "Client", "Message", "Subscription", "SyncSubscription", "SubscriptionStats",
    "ClientStats", "Gap", "PubAck", "TopicPolicy", "EmbeddedServer", "match", "is_pattern",
    "HeraldError", "AuthenticationFailed", "ClientClosed", "ConfigurationError",
    "ConnectionFailed", "ConnectionLost", "DecodeError", "InvalidTopic", "MessageTooLarge",
    "PermissionDenied", "ServerError", "SlowConsumer", "Timeout", "NoResponders",
    "ResponderFailed", "Consumer", "ConsumerStats", "DurableMessage", "SyncConsumer",
    "StoredMessage", "PositionTrimmed", "TopicInfo", "GroupInfo", "ConsumerInfo", "DeadLetter",
    "HistoryLost", "NotReplicated", "NotPersisted", "ReservedName", "UnsupportedAnnotation",
    "Router", "RouterStats", "Rule",
    "UnsafeCommand", "CrossSlot", "TransactionAborted", "Pipeline", "Transaction", "Script",
    "SyncPipeline", "SyncTransaction", "SyncScript", "Responder", "SyncResponder",
    "StopSubscription",
    # type aliases used in public signatures
    "Codec", "ConsumeOptions", "Foreign", "Handler", "Overflow", "Position",
}  # fmt: skip
# Raised by handlers to end their subscription: a signal, like StopIteration, not an error.
SIGNALS = {"StopSubscription"}


def test_all_is_the_public_api() -> None:
    assert set(herald.__all__) == PUBLIC
    # Subpackages (herald.testing, herald.gateway, ...) are public modules of their own.
    public_names = {
        n
        for n in dir(herald)
        if not n.startswith("_") and not isinstance(getattr(herald, n), types.ModuleType)
    } - {"annotations"}
    assert public_names == PUBLIC, public_names ^ PUBLIC


def test_errors_form_one_tree_and_shadow_no_builtin() -> None:
    import builtins

    for name in herald.__all__:
        obj = getattr(herald, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, herald.HeraldError) != (name in SIGNALS), name
            assert not hasattr(builtins, name), f"{name} shadows a builtin"
    assert issubclass(herald.Timeout, TimeoutError)
    assert issubclass(herald.ConnectionFailed, ConnectionError)
