"""The WebSocket endpoint ``/ws``: a small JSON protocol (see ``docs/gateway.md``).

Client to gateway, one JSON object per text frame::

    {"op": "subscribe", "topic": "news.*", "id": 1}          # or "topics": [...]
    {"op": "subscribe", "topic": "prices", "since": 41}      # recoverable: offsets 42.. then live
    {"op": "subscribe", "topic": "prices", "last": 10}
    {"op": "unsubscribe", "topic": "news.*"}
    {"op": "subscribe", "since": {"a": 17, "b": 3}}           # one offset per topic
    {"op": "publish", "topic": "news.sport", "data": {...}, "headers": {...}, "id": 2}
    {"op": "publish", "topic": "chat", "text": "hi"}          # or "data_b64": bytes
    {"op": "auth", "token": "..."}                            # a fresh token before exp
    {"op": "ping"}

Gateway to client: objects with a ``type`` (``message``, ``subscribed``, ``unsubscribed``,
``ack``, ``authenticated``, ``error``, ``gap``, ``history_lost``, ``pong``); several may come
as one JSON array.
Close codes: 1007 a frame that is not UTF-8 JSON text, 1008 refused (auth, origin, expired
token, slow client), 1009 a frame over ``max_message_size``, 1011 an internal error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from herald import (
    ConfigurationError,
    HeraldError,
    InvalidTopic,
    MessageTooLarge,
    ReservedName,
    Subscription,
    Timeout,
    is_pattern,
)

from .auth import AuthError, Principal, authenticate, origin_allowed
from .fanout import Gate, Sink, body_of
from .frames import event_frame, ws_text_frame
from .http import MAX_OFFSET, no_lone_surrogates
from .limits import Bucket
from .publishing import Refused, publish_message
from .state import Gateway, recoverable
from .uvicorn_ws import CLOSE_TIMEOUT, EXTENSION, FrameWriter

log = logging.getLogger("herald.gateway")


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _token(ws: WebSocket) -> str | None:
    return ws.headers.get("authorization") or ws.query_params.get("token")


class Connection:
    """One WebSocket client: its subscriptions, limits and outbound queue."""

    def __init__(self, gw: Gateway, ws: WebSocket, principal: Principal) -> None:
        self.gw = gw
        self.ws = ws
        self.principal = principal
        cfg = gw.config
        frames: FrameWriter | None = ws.scope.get("extensions", {}).get(EXTENSION)
        self.frames = frames
        self.sink = Sink(
            gw.stats,
            cfg.max_queue,
            cfg.max_queue_bytes,
            direct=frames["write"] if frames is not None else None,
            on_cut=self._abort_later if frames is not None else None,
            on_wake=self._wake,
        )
        #: The task sending what queued up, while there is some (see :meth:`writer`).
        self.writing: asyncio.Task[None] | None = None
        self.shared: set[str] = set()
        self.own: dict[str, Subscription] = {}
        self.bucket = Bucket(cfg.publish_rate, cfg.publish_burst)
        self.expiry: asyncio.TimerHandle | None = None

    def _arm_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        expires = self.principal.expires
        if expires is not None:
            leeway = self.gw.config.auth.leeway if self.gw.config.auth else 0.0
            delay = max(0.0, expires + leeway - time.time())
            loop = asyncio.get_running_loop()
            self.expiry = loop.call_later(delay, self.sink.close, 1008, "token expired")

    def _abort_later(self) -> None:
        # A client cut as too slow is not reading: the close frame queued behind what fills
        # its socket may never reach it, and closing waits for it to read. It gets
        # CLOSE_TIMEOUT to do so; then the connection is dropped with its buffers.
        if self.frames is not None:
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.frames["abort"])

    def _wake(self) -> None:
        if self.writing is None:
            self.writing = asyncio.get_running_loop().create_task(self.writer())

    def send(self, kind: str, **fields: Any) -> None:
        self.sink.push(event_frame(kind, **fields))

    def error(self, ref: Any, code: str, message: str) -> None:
        self.gw.stats.errors += 1
        self.send("error", id=ref, code=code, message=message)

    async def writer(self) -> None:
        """Send what queued up for this client (its socket was full, or no direct writer),
        then the close if the sink is closed.

        Started by the sink when it queues a batch or closes, and ends when nothing is left:
        a client that keeps up has no task of its own (a gateway holds thousands of them).
        """
        ws = self.ws
        sink = self.sink
        frames = self.frames
        try:
            while sink.queue:
                if frames is not None:
                    writable = frames["writable"]
                    while not writable.is_set() and not sink.closed:
                        await writable.wait()
                    # Taken and written in one step: nothing can be written in between.
                    if batches := sink.take_nowait():  # none left when cut meanwhile
                        frames["write"](ws_text_frame(body_of(batches)))
                else:
                    text = body_of(sink.take_nowait()).decode()
                    await ws.send({"type": "websocket.send", "text": text})
            if sink.closed and ws.client_state == WebSocketState.CONNECTED:
                await ws.close(sink.close_code, sink.reason[:120])
        except Exception as exc:  # the connection is gone: nothing more can reach it
            log.debug("websocket writer ended: %r", exc)
            sink.close(1006, "connection lost")
        finally:
            self.writing = None

    async def handle(self, text: str) -> None:
        try:
            request = json.loads(text)
            no_lone_surrogates(text, request)
        except (ValueError, RecursionError) as exc:
            self.error(None, "bad_request", f"not JSON: {exc}")
            return
        if not isinstance(request, dict):
            self.error(None, "bad_request", "a request is a JSON object with an 'op'")
            return
        ref = request.get("id")
        op = request.get("op")
        try:
            if op == "subscribe":
                await self.subscribe(request, ref)
            elif op == "unsubscribe":
                await self.unsubscribe(request, ref)
            elif op == "publish":
                await self.publish(request, ref)
            elif op == "auth":
                self.principal = authenticate(str(request.get("token") or ""), self.gw.config.auth)
                self._arm_expiry()
                # The answer first, then what the new grants end (an ``unsubscribed`` frame).
                self.send("authenticated", id=ref, expires=self.principal.expires)
                await self._drop_ungranted()
            elif op == "ping":
                self.send("pong", id=ref)
            else:
                self.error(ref, "bad_request", f"unknown op {op!r}")
        except (_Refused, Refused) as exc:
            self.error(ref, exc.code, exc.message)
        except ReservedName as exc:
            self.error(ref, "reserved_topic", str(exc))
        except AuthError as exc:
            self.error(ref, "forbidden" if exc.status == 403 else "unauthorized", exc.reason)
            if exc.status == 401:
                self.sink.close(1008, exc.reason)
        except InvalidTopic as exc:
            self.error(ref, "invalid_topic", str(exc))
        except MessageTooLarge as exc:
            self.error(ref, "too_large", str(exc))
        except TypeError as exc:  # a payload the codec cannot encode
            self.error(ref, "bad_request", str(exc))
        except Timeout as exc:
            self.error(ref, "timeout", str(exc))
        except ConfigurationError as exc:
            self.error(ref, "not_applicable", str(exc))
        except HeraldError as exc:
            self.error(ref, "unavailable", str(exc))

    def _names(self, request: dict[str, Any]) -> list[str]:
        names = request.get("topics", request.get("topic"))
        if names is None and request.get("op") == "subscribe":
            since = request.get("since")
            if isinstance(since, dict):
                names = list(since)  # {"since": {"a": 17, "b": 3}} names its topics
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _Refused("bad_request", "'topic' (a string) or 'topics' (strings) is required")
        # Each name once: a name repeated in one resume made a subscription per repetition, of
        # which only the last was kept (and ever closed).
        return list(dict.fromkeys(names))

    def _positions(
        self, request: dict[str, Any], names: list[str]
    ) -> tuple[dict[str, int], int | None]:
        """Where each resumed topic starts: ``since`` per topic (a scalar with one topic, or an
        object of topic to offset) and ``last``."""
        since, last = request.get("since"), request.get("last")
        if since is not None and last is not None:
            raise _Refused("bad_request", "send 'since' or 'last', not both")
        if isinstance(since, dict):
            offsets = since
            unknown = [t for t in offsets if t not in names]
            if unknown:
                raise _Refused(
                    "bad_request", f"'since' names {unknown[0]!r}, which is not in 'topics'"
                )
        elif since is not None:
            if len(names) != 1:
                raise _Refused(
                    "bad_request",
                    "a number as 'since' resumes one topic: for several, send one offset per "
                    'topic, e.g. "since": {"a": 17, "b": 3}',
                )
            offsets = {names[0]: since}
        else:
            offsets = {}
        for value, what in (*((v, f"since[{t!r}]") for t, v in offsets.items()), (last, "last")):
            if value is not None and (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 0 <= value <= MAX_OFFSET
            ):
                raise _Refused(
                    "bad_request", f"'{what}' must be an offset (an integer from 0 to {MAX_OFFSET})"
                )
        limit = self.gw.config.history_limit
        if last is not None and last > limit:
            raise _Refused("bad_request", f"'last' must be at most {limit} (history_limit)")
        return offsets, last

    async def _check_recoverable(self, resumed: list[str]) -> None:
        """Refuse a resume the topic cannot honour, before anything is subscribed: a live or
        durable topic keeps no offsets, and a pattern has no single position."""
        policies = await self.gw.policies() if resumed else {}
        for name in resumed:
            if is_pattern(name):
                raise _Refused(
                    "not_applicable",
                    f"{name!r} is a pattern: 'since' resumes one recoverable topic "
                    "('last' applies to every recoverable topic a pattern matches)",
                )
            if not recoverable(policies.get(name)):
                raise _Refused(
                    "not_applicable",
                    f"topic {name!r} is not recoverable (it keeps no history): it cannot "
                    "be resumed with 'since' or 'last'",
                )

    async def subscribe(self, request: dict[str, Any], ref: Any) -> None:
        names = self._names(request)
        offsets, last = self._positions(request, names)
        for name in names:
            self.principal.check("subscribe", name)
            if name in offsets or last is not None:
                # A resume reads the topic's history first.
                self.principal.check("history", name)
        new = [n for n in names if n not in self.shared and n not in self.own]
        if len(self.shared) + len(self.own) + len(new) > self.gw.config.max_subscriptions:
            raise _Refused(
                "too_many_subscriptions",
                f"at most {self.gw.config.max_subscriptions} subscriptions per connection",
            )
        # ``last`` on a pattern applies to the recoverable topics it matches (the client's rule).
        await self._check_recoverable(
            [n for n in new if n in offsets or (last is not None and not is_pattern(n))]
        )
        gate = Gate()
        started: list[str] = []
        try:
            for name in new:
                if name in offsets or last is not None:
                    try:
                        self.own[name] = await self.gw.fanout.resume(
                            name, self.sink, since=offsets.get(name), last=last, gate=gate
                        )
                    except NotImplementedError as exc:
                        raise _Refused("not_supported", str(exc)) from None
                else:
                    await self.gw.fanout.add(name, self.sink)
                    self.shared.add(name)
                started.append(name)
        except BaseException:
            # All or nothing: no subscription the client was not told about.
            for name in started:
                await self._drop(name)
            raise
        # The confirmation first, then what the resumed subscriptions recovered, then live.
        self.send("subscribed", id=ref, topics=names)
        gate.open()

    async def _drop_ungranted(self) -> None:
        """After a new token: end the subscriptions it does not grant (the old token's grants
        end with it)."""
        dropped = [n for n in (*self.shared, *self.own) if not self.principal.may("subscribe", n)]
        for name in dropped:
            await self._drop(name)
        if dropped:
            self.send("unsubscribed", topics=dropped, reason="not granted by the new token")

    async def unsubscribe(self, request: dict[str, Any], ref: Any) -> None:
        names = self._names(request)
        for name in names:
            await self._drop(name)
        self.send("unsubscribed", id=ref, topics=names)

    async def _drop(self, name: str) -> None:
        """End this connection's subscription to ``name``, shared or its own (none: nothing)."""
        if name in self.shared:
            self.shared.discard(name)
            await self.gw.fanout.remove(name, self.sink)
        elif (sub := self.own.pop(name, None)) is not None:
            await self.gw.fanout.release(sub)

    async def publish(self, request: dict[str, Any], ref: Any) -> None:
        topic = request.get("topic")
        if not isinstance(topic, str):
            raise _Refused("bad_request", "'topic' (a string) is required")
        self.principal.check("publish", topic)
        headers = request.get("headers")
        if headers is not None and (
            not isinstance(headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise _Refused("bad_request", "'headers' must map strings to strings")
        given = [k for k in ("data", "text", "data_b64") if k in request]
        if len(given) != 1:
            raise _Refused(
                "bad_request",
                "a publish carries one payload: 'data' (a JSON value), 'text' (a string) or "
                f"'data_b64' (bytes, base64); got {', '.join(map(repr, given)) or 'none'}",
            )
        if given[0] == "data_b64":
            try:
                data: Any = base64.b64decode(str(request["data_b64"]), validate=True)
            except (binascii.Error, ValueError):
                raise _Refused("bad_request", "'data_b64' is not base64") from None
        elif given[0] == "text":
            data = request["text"]
            if not isinstance(data, str):
                raise _Refused("bad_request", "'text' must be a string")
        else:
            data = request["data"]
        key = self.principal.rate_key
        # Per connection, and per token subject (or token, without sub) across all of its
        # connections and HTTP.
        if not self.bucket.take() or (key is not None and not self.gw.publish_buckets.take(key)):
            self.gw.stats.refused += 1
            raise _Refused(
                "rate_limited", f"more than {self.gw.config.publish_rate:g} publishes per second"
            )
        ack = await publish_message(
            self.gw,
            topic,
            data,
            headers,
            confirm=ref is not None,
            message_type=request.get("message_type"),
        )
        if ref is not None:
            self.send("ack", id=ref, **ack)

    async def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        self.sink.close(1000)
        for name in self.shared:
            await self.gw.fanout.remove(name, self.sink)
        self.shared.clear()
        for sub in self.own.values():
            await self.gw.fanout.release(sub)
        self.own.clear()


async def websocket_endpoint(ws: WebSocket) -> None:
    gw: Gateway = ws.app.state.gateway
    if not origin_allowed(
        ws.headers.get("origin"), ws.headers.get("host"), gw.config.allowed_origins
    ):
        gw.stats.refused += 1
        await ws.close(1008, "origin not allowed")
        return
    try:
        principal = authenticate(_token(ws), gw.config.auth)
    except AuthError as exc:
        gw.stats.refused += 1
        await ws.close(1008, exc.reason[:120])
        return
    await ws.accept()
    conn = Connection(gw, ws, principal)
    conn._arm_expiry()
    gw.stats.ws_clients += 1
    limit = gw.config.max_message_size
    try:
        while not conn.sink.closed:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                raw = message.get("bytes") or b""
                if len(raw) > limit:
                    conn.sink.close(1009, f"frame over {limit} bytes")
                    break
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    conn.sink.close(1007, "frame is not UTF-8")
                    break
            if len(text) > limit:
                conn.sink.close(1009, f"frame over {limit} bytes")
                break
            await conn.handle(text)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("websocket connection failed")
        conn.sink.close(1011, "internal error")
    finally:
        gw.stats.ws_clients -= 1
        await conn.close()
        if (writer := conn.writing) is not None:  # sending the close, or what is left
            try:
                await asyncio.wait_for(writer, 5.0)
            except (TimeoutError, Exception):
                writer.cancel()
