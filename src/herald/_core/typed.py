"""Typed payloads: a handler whose first parameter is annotated with a msgspec ``Struct`` or a
pydantic ``BaseModel`` receives the payload decoded and validated into it.

The decoder is built once per handler (msgspec's ``Decoder(T)``, pydantic's ``TypeAdapter(T)``)
and decodes the payload's bytes: JSON (also text and foreign payloads, e.g. a JSON string
``PUBLISH``\\ ed by redis-cli) or msgpack. pydantic is never imported by Herald: a model can
only be a pydantic model if its module is loaded already.

A second positional parameter without a default gets the message itself (to ack, to reply).
A payload that fails validation never reaches the handler: the subscription or consumer
decides what happens to it (``on_invalid``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .message import Message
from .wire import CODEC_MSGPACK, FLAG_HEADERS, FLAG_OFFSET, HEAD_SIZE

log = logging.getLogger("herald")

OnInvalid = Callable[[Message, str], Awaitable[None] | None]
_REASON_MAX = 1000


class Invalid(Exception):
    """The payload does not fit the handler's type (the message says why)."""


class Converter:
    """Decodes and validates payloads into one type."""

    def __init__(self, tp: type, pydantic: Any = None) -> None:
        self.type = tp
        self._pydantic = pydantic.TypeAdapter(tp) if pydantic is not None else None
        self._pydantic_error: type[Exception] = (
            pydantic.ValidationError if pydantic is not None else msgspec.ValidationError
        )
        self._json: msgspec.json.Decoder[Any] | None = (
            None if pydantic is not None else msgspec.json.Decoder(tp)
        )
        self._msgpack: msgspec.msgpack.Decoder[Any] | None = None

    def __call__(self, msg: Message) -> Any:
        if msg.decode_error is not None:
            raise Invalid(str(msg.decode_error))
        body = payload(msg)
        msgpack = msg._codec == CODEC_MSGPACK
        try:
            if self._pydantic is not None:
                if msgpack:
                    return self._pydantic.validate_python(msg.data)
                return self._pydantic.validate_json(body)
            if msgpack:
                if self._msgpack is None:
                    self._msgpack = msgspec.msgpack.Decoder(self.type)
                return self._msgpack.decode(body)
            assert self._json is not None
            return self._json.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError, self._pydantic_error) as exc:
            raise Invalid(f"{self.type.__name__}: {_reason(exc)}"[:_REASON_MAX]) from None


def _reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)  # pydantic: one line per error, without its URLs
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or '$'}: {e['msg']}" for e in errors())
    return str(exc)


def payload(msg: Message) -> bytes:
    """The payload's bytes: after the envelope's header, offset and headers."""
    raw = msg.raw
    if not msg._ids()[0]:  # foreign: the whole thing is the payload
        return raw
    flags = raw[4]
    pos = HEAD_SIZE
    if flags & FLAG_OFFSET:
        pos += 16
    if flags & FLAG_HEADERS:
        pos += 4 + int.from_bytes(raw[pos : pos + 4], "big")
    return raw[pos:]


def converter(handler: Callable[..., Any]) -> tuple[Converter, bool] | None:
    """(converter, pass the message too) for a typed handler, ``None`` for any other."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # builtins and the like
        return None
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not positional:
        return None
    first = positional[0]
    tp: Any = first.annotation
    if isinstance(tp, str):  # `from __future__ import annotations`
        target = handler if inspect.isroutine(handler) else type(handler).__call__
        try:
            tp = typing.get_type_hints(target).get(first.name)
        except Exception:
            if tp.split(".")[-1] not in ("Message", "DurableMessage", "StoredMessage", "Any"):
                log.warning(
                    "cannot resolve the annotation %r of %r's first parameter: it receives "
                    "the message, not a decoded payload",
                    tp,
                    handler,
                )
            return None
    if not isinstance(tp, type):
        return None
    pydantic = sys.modules.get("pydantic")
    if issubclass(tp, msgspec.Struct):
        conv = Converter(tp)
    elif pydantic is not None and issubclass(tp, pydantic.BaseModel):
        conv = Converter(tp, pydantic)
    else:
        return None
    second = len(positional) > 1 and positional[1].default is inspect.Parameter.empty
    return conv, second


def typed(handler: Callable[..., Any], on_invalid: OnInvalid) -> Callable[[Any], Any]:
    """``handler`` itself, or for a typed handler a function of the message that decodes the
    payload first (a coroutine function if the handler is one)."""
    found = converter(handler)
    if found is None:
        return handler
    conv, with_msg = found

    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def typed_async(msg: Message) -> Any:
            try:
                value = conv(msg)
            except Invalid as exc:
                done = on_invalid(msg, str(exc))
                if done is not None:
                    await done
                return None
            return await (handler(value, msg) if with_msg else handler(value))

        return typed_async

    @functools.wraps(handler)
    def typed_sync(msg: Message) -> Any:
        try:
            value = conv(msg)
        except Invalid as exc:
            on_invalid(msg, str(exc))
            return None
        return handler(value, msg) if with_msg else handler(value)

    return typed_sync
