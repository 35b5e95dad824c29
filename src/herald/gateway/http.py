"""The HTTP API: publish, topics, history, dead letters, stats, health and readiness."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from herald import (
    ConfigurationError,
    DeadLetter,
    HeraldError,
    InvalidTopic,
    MessageTooLarge,
    ReservedName,
    TopicPolicy,
)
from herald import Timeout as HeraldTimeout

from .auth import Action, AuthError, Principal, authenticate, origin_allowed
from .fanout import stored_dicts
from .frames import message_dict
from .guard import BodyTooLarge
from .publishing import Refused, message_headers, publish_message
from .rates import INTERNAL_PREFIX
from .state import Gateway, durable, recoverable

_MAX_TOPICS_LISTED = 500
#: A durable topic's dead-letter topic is ``<topic>.dead``.
DEAD_SUFFIX = ".dead"
#: The largest offset a client may send: Redis integers are signed 64-bit.
MAX_OFFSET = 2**63 - 1
_MAX_ID_PART = 2**64 - 1


def parse_offset(value: str | None, what: str) -> int | None:
    """An offset from a query parameter or header; ``None`` when absent.

    Raises:
        ValueError: not an integer from 0 to 2^63-1 (HTTP 400).
    """
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 19 or int(value) > MAX_OFFSET:
        raise ValueError(f"{what} must be an offset (an integer from 0 to {MAX_OFFSET})")
    return int(value)


def check_entry_id(value: str, what: str) -> str:
    """A stream entry id (``ms-seq`` or ``ms``) from a client.

    Raises:
        ValueError: not one, or a part over 2^64-1 (HTTP 400).
    """
    parts = value.split("-", 1)
    if not all(p.isdigit() and len(p) <= 20 and int(p) <= _MAX_ID_PART for p in parts):
        raise ValueError(f"{what} must be an entry id such as 1700000000000-0")
    return value


def no_lone_surrogates(text: str | bytes | bytearray, value: Any) -> None:
    """Refuse JSON whose strings hold a lone UTF-16 surrogate (``"\\ud800"``): valid JSON,
    but no UTF-8 encodes it, so it could never be published or echoed.

    Raises:
        ValueError: one was found (HTTP 400, WebSocket ``bad_request``).
    """
    escaped = b"\\u" in text if isinstance(text, bytes | bytearray) else "\\u" in text
    if not escaped:
        return  # escapes are the only way to write one in UTF-8 text
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError('JSON holds a lone UTF-16 surrogate (e.g. "\\ud800")') from None


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _principal(request: Request, gw: Gateway) -> Principal:
    if request.method not in ("GET", "HEAD") and not origin_allowed(
        request.headers.get("origin"), request.headers.get("host"), gw.config.allowed_origins
    ):
        raise AuthError(403, "origin not allowed")
    token = request.headers.get("authorization") or request.query_params.get("token")
    return authenticate(token, gw.config.auth)


def _authorize(request: Request, action: Action | None, topic: str | None = None) -> Gateway:
    return _authorized(request, action, topic)[0]


def _authorized(
    request: Request, action: Action | None, topic: str | None = None
) -> tuple[Gateway, Principal]:
    gw = gateway(request)
    principal = _principal(request, gw)
    if action is None:
        principal.check_admin()
    else:
        assert topic is not None
        principal.check(action, topic)
    return gw, principal


def policy_dict(policy: TopicPolicy | None) -> dict[str, Any]:
    if policy is None:
        return {}
    # Only what was set: a policy's defaults say nothing about the topic.
    out: dict[str, Any] = msgspec.to_builtins(policy)
    return out


def kind(policy: TopicPolicy | None) -> str:
    if durable(policy):
        return "durable"
    if recoverable(policy):
        return "recoverable"
    return "live"


def handle_errors(exc: Exception) -> JSONResponse:
    if isinstance(exc, AuthError):
        return error(exc.status, "unauthorized" if exc.status == 401 else "forbidden", exc.reason)
    if isinstance(exc, Refused):
        return error(exc.status, exc.code, exc.message)
    if isinstance(exc, ReservedName):
        return error(403, "reserved_topic", str(exc))
    if isinstance(exc, InvalidTopic):
        return error(400, "invalid_topic", str(exc))
    if isinstance(exc, (MessageTooLarge, BodyTooLarge)):
        return error(413, "too_large", str(exc))
    if isinstance(exc, ConfigurationError):
        return error(409, "not_applicable", str(exc))
    if isinstance(exc, HeraldTimeout):
        return error(504, "timeout", str(exc))
    if isinstance(exc, HeraldError):
        return error(503, "unavailable", str(exc))
    if isinstance(exc, ValueError):
        return error(400, "bad_request", str(exc))
    raise exc


async def publish(request: Request) -> Response:
    """POST /topics/{topic}: the body is the message (JSON, text or bytes)."""
    topic = request.path_params["topic"]
    gw, principal = _authorized(request, "publish", topic)
    who = principal.rate_key or f"addr:{request.client.host if request.client else '?'}"
    if not gw.publish_buckets.take(who):
        gw.stats.refused += 1
        return JSONResponse(
            {
                "error": "rate_limited",
                "message": f"more than {gw.config.publish_rate:g} publishes per second",
            },
            status_code=429,
            headers={"retry-after": "1"},
        )
    limit = gw.config.max_message_size
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return error(413, "too_large", f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return error(413, "too_large", f"body over {limit} bytes")
    ctype = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    data: Any
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            data = json.loads(body)
            no_lone_surrogates(body, data)
        except (ValueError, RecursionError) as exc:
            return error(400, "bad_json", f"body is not JSON: {exc}")
    elif ctype.startswith("text/"):
        try:
            data = body.decode()
        except UnicodeDecodeError:
            return error(400, "bad_text", "text body is not UTF-8")
    else:
        data = bytes(body)
    params = request.query_params
    try:
        ack = await publish_message(
            gw,
            topic,
            data,
            message_headers(request.headers),
            confirm=True,
            msg_id=params.get("msg_id") or None,
            key=params.get("key") or None,
            message_type=params.get("type"),
        )
    except TypeError as exc:  # a value the codec cannot encode
        return error(400, "bad_request", str(exc))
    response = JSONResponse({"topic": topic, **ack})
    if parent := request.headers.get("traceparent"):
        response.headers["traceparent"] = parent
    return response


async def list_topics(request: Request) -> Response:
    """GET /topics: declared topics, those with subscribers now (declared or not) and those
    seen lately, with policy, subscribers and rate."""
    gw = _authorize(request, None)
    await gw.rates.want()
    policies = await gw.policies()
    names = set(policies)
    # Subscribed topics at once, from the server: the rate watch only sees what is published
    # after it started.
    names.update(await gw.active_topics())
    names.update(t for t in gw.rates.seen if not t.startswith(INTERNAL_PREFIX))
    names.update(n for n in gw.fanout.names if not _is_pattern(n))
    names.discard(gw.probe_topic)
    ordered = sorted(names)[:_MAX_TOPICS_LISTED]
    subscribers = await gw.subscribers(ordered)
    rates = gw.rates.per_topic()
    topics = [
        {
            "topic": t,
            "kind": kind(policies.get(t)),
            "policy": policy_dict(policies.get(t)),
            "subscribers": subscribers.get(t, 0),
            "gateway_clients": gw.fanout.clients(t),
            "rate": round(rates.get(t, 0.0), 2),
        }
        for t in ordered
    ]
    return JSONResponse(
        {"topics": topics, "patterns": await gw.patterns(), "monitoring_since": gw.rates.since}
    )


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[\\")


# What GET /topics/{topic} shows of a durable topic's TopicInfo (topic and policy are shown
# already, for every topic).
_STREAM_FIELDS = ("length", "first_offset", "last_offset", "dead_letters", "groups")


async def topic_detail(request: Request) -> Response:
    """GET /topics/{topic}: policy, subscribers, and for durable topics groups and dead letters."""
    topic = request.path_params["topic"]
    gw = _authorize(request, None)
    policies = await gw.policies()
    policy = policies.get(topic)
    out: dict[str, Any] = {
        "topic": topic,
        "kind": kind(policy),
        "policy": policy_dict(policy),
        "subscribers": (await gw.subscribers([topic])).get(topic, 0),
        "gateway_clients": gw.fanout.clients(topic),
    }
    if durable(policy):
        info = await gw.hub.topic_info(topic)
        fields = dataclasses.asdict(info)  # groups and their consumers as dicts too
        out.update({k: fields[k] for k in _STREAM_FIELDS}, pending=info.pending)
    return JSONResponse(out)


def _limit(request: Request, gw: Gateway) -> int:
    raw = request.query_params.get("limit") or str(min(100, gw.config.history_limit))
    if not raw.isdigit() or not 1 <= int(raw) <= gw.config.history_limit:
        raise ValueError(f"limit must be an integer from 1 to {gw.config.history_limit}")
    return int(raw)


async def messages(request: Request) -> Response:
    """GET /topics/{topic}/messages?after=&limit=: stored messages after an offset."""
    topic = request.path_params["topic"]
    gw, principal = _authorized(request, "history", topic)
    limit = _limit(request, gw)
    after = request.query_params.get("after") or None
    policies = await gw.policies()
    policy = policies.get(topic)
    if topic.endswith(DEAD_SUFFIX) and (
        durable(policy) or durable(policies.get(topic[: -len(DEAD_SUFFIX)]))
    ):
        # Dead letters, as GET /topics/{topic}/dead shows them: their metadata (the consumer's
        # exception text, its group and name) is the admin's, whatever covers the topic. A
        # durable <topic>.dead holds nothing else (only Herald writes it), and it outlives its
        # topic (delete_topic).
        principal.check_admin()
    if recoverable(policy):
        since: Any = parse_offset(after, "after") or 0
    elif durable(policy):
        since = check_entry_id(after, "after") if after is not None else None
    else:
        return error(404, "no_history", f"topic {topic!r} keeps no history (it is live)")
    stored = await gw.hub.history(topic, since=since, limit=limit)
    items = stored_dicts(stored)
    return JSONResponse(
        {"topic": topic, "messages": items, "next": items[-1]["offset"] if items else after}
    )


# A dead letter's fields as GET /topics/{topic}/dead shows them (the topic is the answer's).
_LETTER_FIELDS = [f for f in dataclasses.fields(DeadLetter) if f.name not in ("topic", "message")]


async def dead_letters(request: Request) -> Response:
    """GET /topics/{topic}/dead: dead letters of a durable topic."""
    topic = request.path_params["topic"]
    gw = _authorize(request, None)
    limit = _limit(request, gw)
    after = request.query_params.get("after") or None
    if after is not None:
        check_entry_id(after, "after")
    dead = await gw.hub.dead_letters(topic, since=after, limit=limit)
    return JSONResponse(
        {
            "topic": topic,
            "dead_letters": [
                {
                    **{f.name: getattr(d, f.name) for f in _LETTER_FIELDS},
                    "message": message_dict(d.message),
                }
                for d in dead
            ],
        }
    )


async def replay_dead(request: Request) -> Response:
    """POST /topics/{topic}/dead/replay: put dead letters back (body: {"offsets": [...]}).

    Needs the ``replay`` grant and the ``publish`` grant on the topic: a replay publishes the
    dead letters on it again, and whoever could write them (or forge them) may not be the one
    who may publish there."""
    topic = request.path_params["topic"]
    gw = gateway(request)
    principal = _principal(request, gw)
    principal.check("replay", topic)
    principal.check("publish", topic)
    body = await request.body()
    offsets: list[str] | None = None
    if body.strip():
        try:
            parsed = json.loads(body)
            no_lone_surrogates(body, parsed)
        except (ValueError, RecursionError) as exc:
            return error(400, "bad_json", f"body is not JSON: {exc}")
        raw = parsed.get("offsets") if isinstance(parsed, dict) else None
        if raw is not None:
            if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
                return error(400, "bad_request", "offsets must be a list of entry ids")
            offsets = [check_entry_id(o, "offsets") for o in raw]
    replayed = await gw.hub.replay_dead(topic, offsets)
    return JSONResponse({"topic": topic, "replayed": replayed})


async def stats(request: Request) -> Response:
    """GET /stats: the gateway's and its client's counters, and the message rate series."""
    gw = _authorize(request, None)
    await gw.rates.want()
    hub = gw.hub.stats
    s = gw.stats
    return JSONResponse(
        {
            "gateway": {k: v for k, v in dataclasses.asdict(s).items() if k != "started"}
            | {
                "uptime": time.time() - s.started,
                "subscription_dropped": gw.fanout.dropped(),
                "shared_subscriptions": len(gw.fanout.names),
            },
            "client": dataclasses.asdict(hub),
            "rates": {
                "series": gw.rates.series(),
                "monitoring_since": gw.rates.since,
            },
        }
    )


async def healthz(request: Request) -> Response:
    """GET /healthz: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """GET /readyz: ready only when a probe message makes the round trip through the server
    (one probe per ``ready_cache`` seconds at most, however often this is asked)."""
    gw = gateway(request)
    try:
        rtt = await gw.ready()
    except (HeraldError, TimeoutError) as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc) or "timeout"}, 503)
    return JSONResponse({"status": "ready", "round_trip_ms": round(rtt * 1000, 3)})
