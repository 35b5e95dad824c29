"""Typed payloads: a handler whose first parameter is annotated with a msgspec ``Struct`` or a
pydantic ``BaseModel`` receives the payload decoded and validated into it; one annotated with
a union of them (``OrderCreated | UserLoggedIn``) receives the member the message's type
names (the ``herald-type`` header, which ``publish`` sets from the payload's class or
``type=``).

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
import re
import sys
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from herald._errors import ConfigurationError, UnsupportedAnnotation

from .message import TYPE_HEADER, Message
from .wire import CODEC_MSGPACK, FLAG_HEADERS, FLAG_OFFSET, HEAD_SIZE

log = logging.getLogger("herald")

OnInvalid = Callable[[Message, str], Awaitable[None] | None]
_REASON_MAX = 1000


class Invalid(Exception):
    """The payload does not fit the handler's type (the message says why)."""


class Converter:
    """Decodes and validates payloads into one type."""

    def __init__(self, tp: Any, pydantic: Any = None) -> None:
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
            name = getattr(self.type, "__name__", None) or str(self.type)
            raise Invalid(f"{name}: {_reason(exc)}"[:_REASON_MAX]) from None


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


def message_type(data: Any) -> str | None:
    """The message type Herald gives a payload: a msgspec ``Struct``'s tag (its class name
    when tagged with ``tag=True``) or class name, a pydantic model's class name; ``None`` for
    anything else (dicts, lists, text...)."""
    t = type(data)
    if t in UNTYPED:  # most payloads: one set lookup
        return None
    if isinstance(data, msgspec.Struct):
        return type_name(t)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(data, pydantic.BaseModel):
        return t.__name__
    return None


UNTYPED = frozenset({dict, list, str, bytes, int, float, bool, type(None), tuple})
_TYPE_MAX = 200
# Control characters (Unicode category Cc): they would garble logs and terminals.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def type_name(tp: type) -> str:
    """The type name of a payload class (see :func:`message_type`)."""
    config = getattr(tp, "__struct_config__", None)
    if config is not None and config.tag is not None:
        return str(config.tag)
    return tp.__name__


def check_type(mtype: object) -> str:
    """An explicit ``type=`` of a publish, checked."""
    if not isinstance(mtype, str):
        raise TypeError(f"a message type is a str, not {type(mtype).__name__}")
    if not mtype or len(mtype) > _TYPE_MAX or _CONTROL.search(mtype):
        raise ConfigurationError(
            f"invalid message type {mtype!r}: 1 to {_TYPE_MAX} characters, no control characters"
        )
    return mtype


def with_type(
    headers: Mapping[str, str] | None, mtype: object, data: Any, envelope: bool | None
) -> Mapping[str, str] | None:
    """The headers a publish sends: the caller's, plus the message type when there is one
    (``mtype``, else the payload's own). A message sent without envelope has no headers: an
    explicit type is refused there, an inferred one left out."""
    if mtype is not None:
        mtype = check_type(mtype)
        if envelope is False:
            raise ConfigurationError("a message without envelope carries no type")
    elif envelope is False:
        return headers
    else:
        mtype = message_type(data)
        if mtype is None:
            return headers
    return {**headers, TYPE_HEADER: mtype} if headers else {TYPE_HEADER: mtype}


class UnionConverter:
    """Decodes payloads into the member of a union named by the message's type.

    A message without a type is decoded by the payload's own tag when every member is a
    tagged msgspec Struct (what a foreign publisher can send: ``{"type": "OrderCreated",
    ...}``); otherwise it is invalid, as is a type that names no member.
    """

    def __init__(self, members: dict[str, Converter], tagged: Any) -> None:
        self.members = members
        self.type = tuple(c.type for c in members.values())
        self._tagged: Converter | None = Converter(tagged) if tagged is not None else None
        self._names = ", ".join(members)

    def __call__(self, msg: Message) -> Any:
        mtype = msg.type
        if mtype is None:
            if self._tagged is not None:
                return self._tagged(msg)
            raise Invalid(f"the message has no type; expected one of {self._names}")
        conv = self.members.get(mtype)
        if conv is None:
            raise Invalid(f"message type {mtype!r} is not one of {self._names}")
        return conv(msg)


_RAW = ("Message", "DurableMessage", "StoredMessage", "Any", "object")


def converter(handler: Callable[..., Any]) -> tuple[Converter | UnionConverter, bool] | None:
    """(converter, pass the message too) for a typed handler, ``None`` for one that gets the
    message. Raises :class:`UnsupportedAnnotation` for an annotation Herald cannot honour."""
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
            if "|" in tp or "Union[" in tp:
                raise UnsupportedAnnotation(
                    handler, tp, "it cannot be resolved (define its types at module level)"
                ) from None
            if tp.split(".")[-1] not in _RAW:
                log.warning(
                    "cannot resolve the annotation %r of %r's first parameter: it receives "
                    "the message, not a decoded payload",
                    tp,
                    handler,
                )
            return None
    conv = _converter_for(handler, tp)
    if conv is None:
        return None
    second = len(positional) > 1 and positional[1].default is inspect.Parameter.empty
    return conv, second


def _converter_for(handler: object, tp: Any) -> Converter | UnionConverter | None:
    if tp is inspect.Parameter.empty or tp is None or tp is Any or tp is object:
        return None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _union(handler, tp)
    if not isinstance(tp, type):
        raise UnsupportedAnnotation(
            handler, tp, "use a msgspec Struct, a pydantic model, a union of them, or Message"
        )
    if issubclass(tp, Message):
        return None
    conv = _payload_converter(tp)
    if conv is None:
        raise UnsupportedAnnotation(
            handler,
            tp,
            "Herald decodes payloads into msgspec Structs and pydantic models (and unions of "
            "them); annotate with Message (or nothing) to get the message",
        )
    return conv


def _payload_converter(tp: type) -> Converter | None:
    if issubclass(tp, msgspec.Struct):
        return Converter(tp)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(tp, pydantic.BaseModel):
        return Converter(tp, pydantic)
    return None


def _union(handler: object, tp: Any) -> UnionConverter | None:
    args = typing.get_args(tp)
    if all(a is type(None) or (isinstance(a, type) and issubclass(a, Message)) for a in args):
        return None  # Message | DurableMessage (| None): the message
    members: dict[str, Converter] = {}
    for arg in args:
        conv = _payload_converter(arg) if isinstance(arg, type) else None
        if conv is None:
            raise UnsupportedAnnotation(
                handler,
                tp,
                f"{getattr(arg, '__name__', arg)!s} is not a msgspec Struct or pydantic model: "
                "a union handler gets one of its members, chosen by the message type",
            )
        name = type_name(arg)
        if name in members:
            raise UnsupportedAnnotation(
                handler,
                tp,
                f"{members[name].type.__qualname__} and {arg.__qualname__} have the same type "
                f"name {name!r}: messages of one cannot be told from the other's (give the "
                "Structs distinct tags)",
            )
        members[name] = conv
    tagged: Any = None
    configs = [getattr(a, "__struct_config__", None) for a in args]
    if (
        all(c is not None and c.tag is not None for c in configs)
        and len({c.tag_field for c in configs if c is not None}) == 1
    ):
        tagged = tp  # msgspec decodes a tagged union by the payload's own tag
    return UnionConverter(members, tagged)


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
