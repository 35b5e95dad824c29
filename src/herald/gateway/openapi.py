"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``), written out by hand."""

from __future__ import annotations

from typing import Any

_TOPIC = {
    "name": "topic",
    "in": "path",
    "required": True,
    "description": "A topic, e.g. news.sport (percent-encode anything outside the pattern).",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        # The portable subset: Herald accepts any UTF-8 without whitespace, control
        # characters, { } or glob characters, but a URL path segment cannot carry all of that.
        "pattern": "^[A-Za-z0-9_~-][A-Za-z0-9_.:~-]*$",
    },
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: A stream entry id: ``ms-seq`` or ``ms``, each part below 2^64.
_ENTRY_ID = {"type": "string", "pattern": "^[0-9]{1,19}(-[0-9]{1,19})?$"}
_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_ERRORS = {
    "400": _json(_ERROR, "Bad request (invalid topic, malformed body or parameters)"),
    "401": _json(_ERROR, "No valid token"),
    "403": _json(_ERROR, "Not granted"),
    "409": _json(_ERROR, "Not applicable to this topic (e.g. not durable)"),
    "413": _json(_ERROR, "Body over the size limit"),
    "421": _json(_ERROR, "Host not allowed (the gateway is not served under that name)"),
    "503": _json(_ERROR, "The server is unreachable"),
    "504": _json(_ERROR, "Timed out"),
}
_MESSAGE = {
    "type": "object",
    "required": ["type", "topic"],
    "properties": {
        "type": {"const": "message"},
        "topic": {"type": "string"},
        "data": {},
        "data_b64": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "offset": {"type": ["integer", "string"]},
        "epoch": {"type": "integer"},
        "id": {"type": "string"},
        "ts": {"type": "number"},
    },
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald gateway",
            "version": "1",
            "description": "Publish to and read Herald topics over HTTP; WebSocket at /ws, "
            "server-sent events at /topics/{topic}/events (see docs/gateway.md).",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {"Message": _MESSAGE, "Error": _ERROR},
        },
        "paths": {
            "/topics/{topic}": {
                "post": {
                    "summary": "Publish one message",
                    "description": "application/json bodies are published as JSON values, "
                    "text/* as text, anything else as bytes. Headers X-Herald-Header-<name> "
                    "and traceparent/tracestate become message headers.",
                    "parameters": [
                        _TOPIC,
                        {"name": "msg_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "key", "in": "query", "schema": {"type": "string"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {}},
                            "text/plain": {"schema": {"type": "string"}},
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    "security": _BEARER,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["topic", "receivers"],
                                "properties": {
                                    "topic": {"type": "string"},
                                    "receivers": {"type": "integer"},
                                    "offset": {"type": ["integer", "string"]},
                                    "duplicate": {"type": "boolean"},
                                },
                            },
                            "Published",
                        ),
                        "429": _json(_ERROR, "Over the publish rate (see Retry-After)"),
                        **_ERRORS,
                    },
                },
                "get": {
                    "summary": "A topic: policy, subscribers, groups and dead letters",
                    "parameters": [_TOPIC],
                    "security": _BEARER,
                    "responses": {"200": _json({"type": "object"}), **_ERRORS},
                },
            },
            "/topics": {
                "get": {
                    "summary": "Declared and recently seen topics",
                    "security": _BEARER,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["topics"],
                                "properties": {"topics": {"type": "array"}},
                            }
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/topics/{topic}/messages": {
                "get": {
                    "summary": "Stored messages of a recoverable or durable topic",
                    "parameters": [
                        _TOPIC,
                        {
                            "name": "after",
                            "in": "query",
                            "description": "An offset (recoverable) or entry id (durable).",
                            "schema": {"type": "string"},
                        },
                        _LIMIT,
                    ],
                    "security": _BEARER,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["topic", "messages"],
                                "properties": {
                                    "topic": {"type": "string"},
                                    "messages": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Message"},
                                    },
                                    "next": {"type": ["integer", "string", "null"]},
                                },
                            }
                        ),
                        "404": _json(_ERROR, "The topic keeps no history"),
                        **_ERRORS,
                    },
                }
            },
            "/topics/{topic}/dead": {
                "get": {
                    "summary": "Dead letters of a durable topic",
                    "parameters": [
                        _TOPIC,
                        _LIMIT,
                        {"name": "after", "in": "query", "schema": _ENTRY_ID},
                    ],
                    "security": _BEARER,
                    "responses": {"200": _json({"type": "object"}), **_ERRORS},
                }
            },
            "/topics/{topic}/dead/replay": {
                "post": {
                    "summary": "Put dead letters back on their topic",
                    "description": "Needs the token's replay and publish grants on the topic.",
                    "parameters": [_TOPIC],
                    "requestBody": {
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
                    "security": _BEARER,
                    "responses": {"200": _json({"type": "object"}), **_ERRORS},
                }
            },
            "/stats": {
                "get": {
                    "summary": "Counters and the message rate series",
                    "security": _BEARER,
                    "responses": {"200": _json({"type": "object"}), **_ERRORS},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process answers",
                    "responses": {"200": _json({"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "A probe message made the round trip through the server",
                    "responses": {
                        "200": _json({"type": "object"}),
                        "503": _json({"type": "object"}, "Not ready"),
                    },
                }
            },
        },
    }
