"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``), written out by hand.

It is meant to generate clients from (``tests/test_gateway_openapi_client.py`` generates
TypeScript types with ``openapi-typescript`` and checks a program using them against a real
gateway): every operation has an ``operationId``, every response its real schema, every route
its ``security``, and the topic parameter accepts what the server accepts.
"""

from __future__ import annotations

from typing import Any

from herald._core.topics import MAX_TOPIC_BYTES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# What Herald refuses in any name: whitespace and control characters (U+0000 to U+0020 and
# U+007F), { and } (they would break the keys' hash tags). The server counts the limit in UTF-8
# bytes, a schema can only count characters: up to MAX_TOPIC_BYTES characters are let through,
# and a longer UTF-8 encoding is refused with 400 invalid_topic.
_NAME = "^[^\\u0000-\\u0020{}\\u007f]+$"
_TOPIC_DESCRIPTION = (
    "A topic, as one percent-encoded path segment (encodeURIComponent): it may hold / (as "
    f"%2F), %, dots and any UTF-8 but whitespace, control characters, {{ and }}, up to "
    f"{MAX_TOPIC_BYTES} bytes. `.` and `..` alone are not reachable (clients normalise them "
    "out of the path)."
)


def _topic(publish: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TOPIC_BYTES,
        "pattern": _NAME,
        "not": {"enum": [".", ".."]},
    }
    if publish:
        # Glob characters are for subscribe patterns: a publish to one is refused (400).
        schema["pattern"] = "^[^\\u0000-\\u0020{}\\u007f*?\\[\\\\]+$"
    description = _TOPIC_DESCRIPTION + (" No glob characters * ? [ \\." if publish else "")
    return {
        "name": "topic",
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "At most this many (up to the gateway's history_limit, 1000 by default).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}
_TOKEN = {
    "name": "token",
    "in": "query",
    "required": False,
    "description": "The JWT, for clients that cannot set Authorization (EventSource).",
    "schema": {"type": "string"},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _record(**properties: Any) -> dict[str, Any]:
    """An object schema whose every property is required."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


#: A stream entry id: ``ms-seq`` or ``ms``, each part below 2^64.
_ENTRY_ID = {"type": "string", "pattern": "^[0-9]{1,19}(-[0-9]{1,19})?$"}
_OFFSET = {
    "description": "An integer on recoverable topics, an entry id (ms-seq) on durable ones.",
    "type": ["integer", "string"],
}
_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {
            "type": "string",
            "description": "A code: invalid_topic, bad_json, bad_text, bad_request, "
            "reserved_header, reserved_payload, unauthorized, forbidden, reserved_topic, "
            "not_found, no_history, method_not_allowed, not_applicable, too_large, "
            "host_not_allowed, rate_limited, unavailable, timeout (docs/gateway.md).",
        },
        "message": {"type": "string"},
    },
}
_MESSAGE = {
    "type": "object",
    "description": "One message. Its payload is in one of data (a JSON value), text (text) or "
    "data_b64 (bytes, base64).",
    "required": ["type", "topic"],
    "properties": {
        "type": {"const": "message"},
        "topic": {"type": "string"},
        "subscription": {"type": "string", "description": "The pattern that matched it."},
        "data": {"description": "A JSON value."},
        "text": {"type": "string"},
        "data_b64": {"type": "string", "contentEncoding": "base64"},
        "headers": _HEADERS,
        "message_type": {
            "type": "string",
            "description": "The message type (its herald-type header), e.g. OrderCreated.",
        },
        "offset": _OFFSET,
        "epoch": {"type": "integer"},
        "id": {"type": "string", "description": "The message id: publisher-sequence."},
        "ts": {"type": "number", "description": "Publish time, seconds since the epoch."},
    },
}
_POLICY = {
    "type": "object",
    "description": "The topic's policy: only the fields that were set (empty for a live topic).",
    "properties": {
        "bare": {"type": "boolean"},
        "sharded": {"type": "boolean"},
        "durable": {"type": "boolean"},
        "max_len": {"type": ["integer", "null"]},
        "max_age": {"type": ["number", "null"]},
        "dedup_window": {"type": "number"},
        "trim_unacked": {"type": "boolean"},
        "history": {"type": "integer"},
        "history_ttl": {"type": ["number", "null"]},
        "fsync": {"type": "boolean"},
    },
}
_KIND = {"type": "string", "enum": ["live", "recoverable", "durable"]}
_TOPIC_SUMMARY = {
    "type": "object",
    "required": ["topic", "kind", "policy", "subscribers", "gateway_clients", "rate"],
    "properties": {
        "topic": {"type": "string"},
        "kind": _KIND,
        "policy": _ref("Policy"),
        "subscribers": {"type": "integer", "description": "Subscriber connections on Redis."},
        "gateway_clients": {"type": "integer"},
        "rate": {"type": "number", "description": "Messages per second lately."},
    },
}
_GROUP = {
    "type": "object",
    "required": ["name", "pending", "lag", "last_delivered", "consumers"],
    "properties": {
        "name": {"type": "string"},
        "pending": {"type": "integer"},
        "lag": {"type": ["integer", "null"]},
        "last_delivered": {"type": "string"},
        "consumers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "pending", "idle"],
                "properties": {
                    "name": {"type": "string"},
                    "pending": {"type": "integer"},
                    "idle": {"type": "number"},
                },
            },
        },
    },
}
_TOPIC_DETAIL = {
    "type": "object",
    "description": "Durable topics add length, first_offset, last_offset, dead_letters, "
    "pending and groups.",
    "required": ["topic", "kind", "policy", "subscribers", "gateway_clients"],
    "properties": {
        "topic": {"type": "string"},
        "kind": _KIND,
        "policy": _ref("Policy"),
        "subscribers": {"type": "integer"},
        "gateway_clients": {"type": "integer"},
        "length": {"type": "integer"},
        "first_offset": {"type": ["string", "null"]},
        "last_offset": {"type": ["string", "null"]},
        "dead_letters": {"type": "integer"},
        "pending": {"type": "integer"},
        "groups": {"type": "array", "items": _ref("Group")},
    },
}
_DEAD_LETTER = {
    "type": "object",
    "required": [
        "offset",
        "reason",
        "deliveries",
        "group",
        "consumer",
        "original_offset",
        "time",
        "message",
    ],
    "properties": {
        "offset": {"type": "string"},
        "reason": {"type": "string"},
        "deliveries": {"type": "integer"},
        "group": {"type": "string"},
        "consumer": {"type": "string"},
        "original_offset": {"type": "string"},
        "time": {"type": "number"},
        "message": _ref("Message"),
    },
}
_NUMBERS = {"type": "object", "additionalProperties": {"type": "number"}}
_STATS = {
    "type": "object",
    "required": ["gateway", "client", "rates"],
    "properties": {
        "gateway": {
            **_NUMBERS,
            "description": "The gateway's counters (published, delivered, dropped, "
            "ws_clients, sse_clients, uptime, ...).",
        },
        "client": {
            "type": "object",
            "description": "The gateway's Herald client's counters, and connected.",
            "additionalProperties": {"type": ["number", "boolean"]},
        },
        "rates": {
            "type": "object",
            "required": ["series", "monitoring_since"],
            "properties": {
                "series": {
                    "type": "array",
                    "description": "[second, messages] over the last minute.",
                    "items": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "minItems": 2,
                        "maxItems": 2,
                    },
                },
                "monitoring_since": {"type": ["number", "null"]},
            },
        },
    },
}
_PUBLISHED = {
    "type": "object",
    "required": ["topic", "receivers"],
    "properties": {
        "topic": {"type": "string"},
        "receivers": {"type": "integer"},
        "offset": _OFFSET,
        "duplicate": {"type": "boolean"},
    },
}

# Who may call what: a JWT (Authorization: Bearer, or ?token=); {} because a gateway with auth
# off (the default, on loopback) needs none.
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {"token": []}, {}]
_METRICS_AUTH: list[dict[str, list[str]]] = [{"bearer": []}, {"metricsToken": []}, {}]
_PUBLIC: list[dict[str, list[str]]] = []

_COMMON = {
    "400": _error("Bad request (invalid topic, malformed parameters)"),
    "401": _error("No valid token (auth on)"),
    "403": _error("Not granted, origin refused, or a reserved topic"),
    "421": _error("Host not allowed (the gateway is not served under that name)"),
    "503": _error("The server is unreachable"),
    "504": _error("Timed out"),
}


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    security: list[dict[str, list[str]]] = _BEARER,
    errors: bool = True,
    **more: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if parameters:
        out["parameters"] = parameters
    out["security"] = security
    out.update(more)
    out["responses"] = {**responses, **(_COMMON if errors else {})}
    return out


def document(server: str | None = None) -> dict[str, Any]:
    """The OpenAPI document; ``server``: the gateway's base URL, when known (the app passes
    the one it was asked under)."""
    topic, publish_topic = _topic(), _topic(publish=True)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald gateway",
            "version": "1",
            "description": "Publish to and read Herald topics over HTTP; WebSocket at /ws, "
            "server-sent events at /topics/{topic}/events (see docs/gateway.md). Every error "
            "is JSON {error, message}.",
        },
        "servers": [
            {"url": server or "/", "description": "this gateway"},
        ],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "token": {"type": "apiKey", "in": "query", "name": "token"},
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The gateway's metrics token (--metrics-token-file).",
                },
            },
            "schemas": {
                "Message": _MESSAGE,
                "Error": _ERROR,
                "Policy": _POLICY,
                "TopicSummary": _TOPIC_SUMMARY,
                "TopicDetail": _TOPIC_DETAIL,
                "Group": _GROUP,
                "DeadLetter": _DEAD_LETTER,
                "Published": _PUBLISHED,
                "Stats": _STATS,
            },
        },
        "paths": {
            "/topics/{topic}": {
                "post": _op(
                    "publish",
                    "Publish one message",
                    {
                        "200": _json(_ref("Published"), "Published"),
                        "413": _error("Body over max_message_size"),
                        "429": {
                            **_error("Over the publish rate"),
                            "headers": {
                                "Retry-After": {"schema": {"type": "integer"}},
                            },
                        },
                    },
                    parameters=[
                        publish_topic,
                        {
                            "name": "msg_id",
                            "in": "query",
                            "required": False,
                            "description": "Durable topics: an idempotency key.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "key",
                            "in": "query",
                            "required": False,
                            "description": "Durable topics: the ordering key.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "type",
                            "in": "query",
                            "required": False,
                            "description": "The message type (msg.type), e.g. OrderCreated.",
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 200,
                                "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
                            },
                        },
                        {
                            "name": "traceparent",
                            "in": "header",
                            "required": False,
                            "description": "W3C trace context, copied into the message.",
                            "schema": {"type": "string"},
                        },
                    ],
                    description="application/json (and +json) bodies are published as JSON "
                    "values, text/* as text, anything else as bytes. Headers "
                    "X-Herald-Header-<name> and traceparent/tracestate become message headers.",
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {"schema": {}},
                            "text/plain": {"schema": {"type": "string"}},
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                ),
                "get": _op(
                    "getTopic",
                    "A topic: policy, subscribers, groups and dead letters (admin)",
                    {"200": _json(_ref("TopicDetail"))},
                    parameters=[topic],
                ),
            },
            "/topics": {
                "get": _op(
                    "listTopics",
                    "Declared topics, topics with subscribers now and topics seen lately (admin)",
                    {
                        "200": _json(
                            _record(
                                topics={"type": "array", "items": _ref("TopicSummary")},
                                patterns={
                                    "type": "integer",
                                    "description": "Pattern subscriptions on the server.",
                                },
                                monitoring_since={"type": ["number", "null"]},
                            )
                        )
                    },
                )
            },
            "/topics/{topic}/messages": {
                "get": _op(
                    "getMessages",
                    "Stored messages of a recoverable or durable topic (history grant)",
                    {
                        "200": _json(
                            _record(
                                topic={"type": "string"},
                                messages={"type": "array", "items": _ref("Message")},
                                next={
                                    "description": "The after of the next page.",
                                    "type": ["integer", "string", "null"],
                                },
                            )
                        ),
                        "404": _error("The topic keeps no history (no_history)"),
                    },
                    parameters=[
                        publish_topic,
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "An offset (recoverable) or entry id (durable).",
                            "schema": {"type": "string"},
                        },
                        _LIMIT,
                    ],
                )
            },
            "/topics/{topic}/events": {
                "get": _op(
                    "streamEvents",
                    "Server-sent events: the topic's messages as they come (subscribe grant)",
                    {
                        "200": {
                            "description": "An endless text/event-stream: unnamed events whose "
                            "data is one JSON frame (message, gap, history_lost, closed; see "
                            "docs/gateway.md); messages of recoverable topics carry their "
                            "offset as id.",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "409": _error("since/last on a topic that is not recoverable"),
                        "501": _error("This Herald has no recoverable topics"),
                    },
                    parameters=[
                        topic,
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "description": "Recoverable topics: start after this offset.",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "last",
                            "in": "query",
                            "required": False,
                            "description": "Recoverable topics: start with the newest N.",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        _TOKEN,
                    ],
                )
            },
            "/topics/{topic}/dead": {
                "get": _op(
                    "getDeadLetters",
                    "Dead letters of a durable topic (admin)",
                    {
                        "200": _json(
                            _record(
                                topic={"type": "string"},
                                dead_letters={
                                    "type": "array",
                                    "items": _ref("DeadLetter"),
                                },
                            )
                        ),
                        "409": _error("The topic is not durable"),
                    },
                    parameters=[
                        publish_topic,
                        _LIMIT,
                        {"name": "after", "in": "query", "required": False, "schema": _ENTRY_ID},
                    ],
                )
            },
            "/topics/{topic}/dead/replay": {
                "post": _op(
                    "replayDeadLetters",
                    "Put dead letters back on their topic (replay and publish grants)",
                    {
                        "200": _json(
                            _record(
                                topic={"type": "string"},
                                replayed={
                                    "type": "object",
                                    "description": "Dead letter offset: its new offset.",
                                    "additionalProperties": {"type": "string"},
                                },
                            )
                        ),
                        "409": _error("The topic is not durable"),
                        "413": _error("Body over max_message_size"),
                    },
                    parameters=[publish_topic],
                    requestBody={
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "offsets": {"type": "array", "items": _ENTRY_ID}
                                    },
                                }
                            }
                        },
                    },
                )
            },
            "/stats": {
                "get": _op(
                    "getStats",
                    "Counters and the message rate series (admin)",
                    {"200": _json(_ref("Stats"))},
                )
            },
            "/metrics": {
                "get": _op(
                    "getMetrics",
                    "Prometheus metrics (who may: GatewayConfig.metrics)",
                    {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "404": _error("Metrics are off"),
                    },
                    security=_METRICS_AUTH,
                )
            },
            "/healthz": {
                "get": _op(
                    "healthz",
                    "The process answers",
                    {"200": _json(_record(status={"const": "ok"}))},
                    security=_PUBLIC,
                    errors=False,
                )
            },
            "/readyz": {
                "get": _op(
                    "readyz",
                    "A probe message made the round trip through the server",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "round_trip_ms"],
                                "properties": {
                                    "status": {"const": "ready"},
                                    "round_trip_ms": {"type": "number"},
                                },
                            }
                        ),
                        "503": _json(
                            _record(
                                status={"const": "unavailable"},
                                reason={"type": "string"},
                            ),
                            "Not ready",
                        ),
                    },
                    security=_PUBLIC,
                    errors=False,
                )
            },
            "/openapi.json": {
                "get": _op(
                    "getOpenapi",
                    "This document",
                    {"200": _json({"type": "object"})},
                    security=_PUBLIC,
                    errors=False,
                )
            },
        },
    }
