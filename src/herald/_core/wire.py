"""Wire format v1 (sans-I/O): the envelope, batch frames and payload codecs.

The layout is specified in ``docs/wire-format.md``; ``tests/vectors/wire-v1.json`` holds test
vectors. Anything that does not start with the magic bytes is a *foreign* payload (published by
redis-cli, redis-py, ...) and is delivered as raw bytes.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import msgspec

from herald._errors import ConfigurationError, DecodeError

from .message import FRAME_IDS, FRAME_IDS_AT, ForeignDecodeError, Message

# 0xFF never occurs in UTF-8 text, so no text payload is mistaken for a frame. (Final: compiled,
# the constants are native.)
MAGIC: Final = b"\xffHR"
VERSION: Final = 1

FLAG_BATCH: Final = 0x01
FLAG_HEADERS: Final = 0x02
FLAG_OFFSET: Final = 0x04
_KNOWN_FLAGS: Final = FLAG_BATCH | FLAG_HEADERS | FLAG_OFFSET

CODEC_BYTES: Final = 0
CODEC_JSON: Final = 1
CODEC_MSGPACK: Final = 2
CODEC_TEXT: Final = 3

_CODEC_NAMES = ("bytes", "json", "msgpack", "text")
Codec = Literal["json", "msgpack"]
# How a subscriber reads foreign payloads (published without the envelope by another program).
Foreign = Literal["bytes", "text", "json"]
FOREIGN = ("bytes", "text", "json")

# magic, version, flags, codec, publisher id, sequence, timestamp (microseconds since the epoch)
_HEAD: Final = struct.Struct(">3sBBB8sQQ")
HEAD_SIZE: Final = _HEAD.size
assert FRAME_IDS_AT + FRAME_IDS.size == HEAD_SIZE  # Message reads the ids from its frame
# How a frame without flags (no headers, not a batch) with a JSON payload starts: the decoders'
# fast path, which leaves the ids in the frame (Message._ids).
JSON_PLAIN: Final = _HEAD.pack(MAGIC, VERSION, 0, CODEC_JSON, b"", 0, 0)[:FRAME_IDS_AT]
# magic, version, flags, count
_BATCH_HEAD: Final = struct.Struct(">3sBBI")
_OFFSET: Final = struct.Struct(">QQ")
# a frame's sequence and timestamp: the end of its head
_SEQ_TS: Final = struct.Struct(">QQ")
_SEQ_AT: Final = HEAD_SIZE - _SEQ_TS.size
_U32: Final = struct.Struct(">I")


def _enc_hook(obj: Any) -> Any:
    """pydantic models, encoded as their JSON form (pydantic is never imported by Herald: a
    model can only exist if its module is loaded)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


_json_encode: Final = msgspec.json.Encoder(enc_hook=_enc_hook).encode
_json_decode: Final = msgspec.json.Decoder().decode
_msgpack_encode: Final = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode
_msgpack_decode: Final = msgspec.msgpack.Decoder().decode
_headers_decode: Final = msgspec.json.Decoder(dict[str, str]).decode


class Encoder:
    """Encodes messages for one publisher: a random publisher id and a sequence per message.

    Build one per client and call it for every message (msgspec's rule: build once, call often).
    ``publisher_id``, ``clock`` (nanoseconds since the epoch, like ``time.time_ns``) and
    ``first_seq`` exist so that tests and test vectors can produce exact bytes.
    """

    def __init__(
        self,
        codec: Codec = "json",
        publisher_id: bytes | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
        first_seq: int = 1,
    ) -> None:
        if codec == "json":
            self._codec, self._encode = CODEC_JSON, _json_encode
        elif codec == "msgpack":
            self._codec, self._encode = CODEC_MSGPACK, _msgpack_encode
        else:
            raise ConfigurationError(f"unknown codec {codec!r}; use 'json' or 'msgpack'")
        if publisher_id is None:
            publisher_id = os.urandom(8)
        elif len(publisher_id) != 8:
            # struct's "8s" would silently pad or cut it, and the message ids would lie
            raise ConfigurationError(f"publisher_id must be 8 bytes, not {len(publisher_id)}")
        self.publisher_id = publisher_id
        # The head of a frame without flags up to its sequence, one per payload codec: what
        # most publishes send, packed once (only the sequence and the timestamp change).
        self._plain = tuple(
            _HEAD.pack(MAGIC, VERSION, 0, codec, publisher_id, 0, 0)[:_SEQ_AT]
            for codec in range(len(_CODEC_NAMES))
        )
        self._json = self._codec == CODEC_JSON
        self._clock = clock
        self._seq = itertools.count(first_seq)  # next() is atomic under the GIL: thread-safe

    def payload(self, data: Any) -> tuple[int, bytes]:
        """Encode a payload; return (codec, bytes)."""
        t = type(data)
        if t is bytes:
            return CODEC_BYTES, data
        try:
            if t is str:
                return CODEC_TEXT, data.encode()
            if t is bytearray or t is memoryview:
                return CODEC_BYTES, bytes(data)
            body = self._encode(data)
            # msgspec writes NaN and infinities as null: refuse them. Only JSON with a null can
            # hold one; a "u" and an "l" (memchr, ~20 ns each) spare most payloads the search
            # for "null" (~100 ns for 100 bytes, ~600 for 1 KB).
            if (
                self._json
                and 117 in body
                and 108 in body
                and body.find(b"null") >= 0
                and _non_finite(data)
            ):
                raise msgspec.EncodeError("NaN and Infinity are not JSON")
            return self._codec, body
        except (TypeError, OverflowError, UnicodeEncodeError, msgspec.EncodeError) as exc:
            # one error for "this payload cannot be sent": publish documents TypeError
            # (msgspec raises OverflowError for msgpack ints beyond 64 bits, and any str
            # holding a lone surrogate raises UnicodeEncodeError)
            raise TypeError(f"cannot encode payload of type {t.__name__}: {exc}") from exc

    def envelope(
        self,
        data: Any,
        headers: Mapping[str, str] | None = None,
        offset: int | None = None,
        epoch: int | None = None,
    ) -> bytes:
        """Encode one message in the v1 envelope."""
        codec, body = self.payload(data)
        if offset is None and not headers:
            return self._plain[codec] + _SEQ_TS.pack(next(self._seq), self._clock() // 1000) + body
        flags = 0
        extra = b""
        if offset is not None:
            flags |= FLAG_OFFSET
            extra = _OFFSET.pack(offset, epoch or 0)
        if headers:
            flags |= FLAG_HEADERS
            h = encode_headers(headers)
            extra += _U32.pack(len(h)) + h
        head = _HEAD.pack(
            MAGIC, VERSION, flags, codec, self.publisher_id, next(self._seq), self._clock() // 1000
        )
        return head + extra + body if extra else head + body


def _non_finite(data: Any) -> bool:
    """Whether a float in ``data`` is NaN or infinite."""
    stack = [msgspec.to_builtins(data, enc_hook=_enc_hook)]  # Structs, models... as builtins
    while stack:
        value = stack.pop()
        t = type(value)
        if t is float:
            if not math.isfinite(value):
                return True
        elif t is dict:
            stack.extend(value.values())
        elif t is list or t is tuple or t is set or t is frozenset:
            stack.extend(value)
    return False


def encode_headers(headers: Mapping[str, str]) -> bytes:
    # Untyped: compiled (mypyc), a typed loop would refuse a wrong pair with its own TypeError
    # before this check could say which header it is.
    items: Any = headers.items()
    for k, v in items:
        if type(k) is not str or type(v) is not str:
            raise TypeError(f"headers must map str to str, got {k!r}: {v!r}")
    try:
        return _json_encode(headers)
    except UnicodeEncodeError as exc:  # a lone surrogate: not text, so not a string
        raise TypeError(f"headers must be valid Unicode text: {exc}") from exc


def batch(envelopes: list[bytes]) -> bytes:
    """Pack one or more envelopes (for one topic) into one batch frame."""
    if not envelopes:
        raise ValueError("a batch frame holds at least one envelope")
    parts = [_BATCH_HEAD.pack(MAGIC, VERSION, FLAG_BATCH, len(envelopes))]
    pack = _U32.pack
    for env in envelopes:
        parts.append(pack(len(env)))
        parts.append(env)
    return b"".join(parts)


def decode(topic: str, raw: bytes, pattern: str | None = None) -> list[Message]:
    """Decode what arrived on a channel into messages (several for a batch frame).

    Never raises: a frame that cannot be decoded becomes one message whose ``data`` is the raw
    bytes and whose ``decode_error`` says why.
    """
    if raw[:3] != MAGIC:
        return [Message(topic, raw, raw, CODEC_BYTES, b"", 0, 0, None, pattern)]
    try:
        if len(raw) > 4 and raw[4] & FLAG_BATCH:
            return _decode_batch(topic, raw, pattern)
        return [_decode_one(topic, raw, pattern)]
    except DecodeError as exc:
        return [_broken(topic, raw, pattern, exc)]


def check_foreign(foreign: str) -> None:
    if foreign not in FOREIGN:
        raise ConfigurationError(f"foreign must be one of {', '.join(FOREIGN)}, not {foreign!r}")


def decode_foreign(msg: Message, foreign: Foreign) -> Message:
    """``msg`` with its foreign payload decoded as ``foreign`` asks: a new message (the one
    given may be shared by other subscriptions). A payload that does not decode stays bytes,
    with a :class:`ForeignDecodeError`; anything not foreign is returned as it is."""
    raw = msg.data
    if (
        foreign == "bytes"
        or msg._pid != b""
        or msg.decode_error is not None
        or type(raw) is not bytes
    ):
        return msg
    error: DecodeError | None = None
    codec = CODEC_JSON if foreign == "json" else CODEC_TEXT
    try:
        data = _json_decode(raw) if codec == CODEC_JSON else raw.decode()
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        data, codec = raw, CODEC_BYTES
        error = ForeignDecodeError(f"foreign payload is not valid {foreign}: {exc}")
    out = Message(msg.topic, data, msg.raw, codec, b"", 0, 0, msg._headers, msg.pattern)
    out.decode_error = error
    return out


def _broken(topic: str, raw: bytes, pattern: str | None, exc: DecodeError) -> Message:
    return Message(topic, raw, raw, CODEC_BYTES, b"", 0, 0, None, pattern, decode_error=exc)


def _decode_batch(topic: str, raw: bytes, pattern: str | None) -> list[Message]:
    if len(raw) < _BATCH_HEAD.size:
        raise DecodeError("truncated batch header")
    _, version, flags, count = _BATCH_HEAD.unpack_from(raw)
    if version != VERSION:
        raise DecodeError(f"unsupported wire format version {version}")
    if flags != FLAG_BATCH:
        raise DecodeError(f"unknown batch flags {flags:#x}")
    if not count:
        raise DecodeError("empty batch frame")
    pos = _BATCH_HEAD.size
    end = len(raw)
    out: list[Message] = []
    unpack = _U32.unpack_from
    append = out.append
    json_decode = _json_decode
    for _ in range(count):
        if pos + 4 > end:
            raise DecodeError("truncated batch frame")
        n: int = unpack(raw, pos)[0]  # typed: compiled, the arithmetic below is native
        pos += 4
        if pos + n > end:
            raise DecodeError("truncated batch frame")
        inner = raw[pos : pos + n]
        pos += n
        if n > HEAD_SIZE and inner.startswith(JSON_PLAIN):
            # _decode_one's fast path, inlined: a call per message is a fifth of the loop.
            try:
                data = json_decode(inner[HEAD_SIZE:])
            except (msgspec.DecodeError, RecursionError):
                pass  # reported by _decode_one below
            else:
                append(Message(topic, data, inner, CODEC_JSON, None, 0, 0, None, pattern))
                continue
        if inner[:3] != MAGIC or (len(inner) > 4 and inner[4] & FLAG_BATCH):
            out.append(_broken(topic, inner, pattern, DecodeError("invalid message in batch")))
            continue
        try:
            out.append(_decode_one(topic, inner, pattern))
        except DecodeError as exc:
            out.append(_broken(topic, inner, pattern, exc))
    if pos != end:
        raise DecodeError("trailing bytes after batch frame")
    return out


def _decode_one(topic: str, raw: bytes, pattern: str | None) -> Message:
    if len(raw) > HEAD_SIZE and raw.startswith(JSON_PLAIN):
        # The common case, kept short (it is most of a subscriber's time): a JSON payload
        # without offset or headers, its ids left in the frame. Anything else, an invalid
        # payload included, goes below.
        try:
            data = _json_decode(raw[HEAD_SIZE:])
        except (msgspec.DecodeError, RecursionError):
            pass
        else:
            return Message(topic, data, raw, CODEC_JSON, None, 0, 0, None, pattern)
    if len(raw) < HEAD_SIZE:
        raise DecodeError("truncated header")
    _, version, flags, codec, pid, seq, ts = _HEAD.unpack_from(raw)
    if version != VERSION:
        raise DecodeError(f"unsupported wire format version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise DecodeError(f"unknown flags {flags:#x}")
    pos = HEAD_SIZE
    offset = epoch = None
    headers: dict[str, str] | None = None  # made on first use when there are none
    if flags & FLAG_OFFSET:
        if len(raw) < pos + 16:
            raise DecodeError("truncated offset")
        offset, epoch = _OFFSET.unpack_from(raw, pos)
        pos += 16
    if flags & FLAG_HEADERS:
        if len(raw) < pos + 4:
            raise DecodeError("truncated headers")
        (n,) = _U32.unpack_from(raw, pos)
        pos += 4
        if len(raw) < pos + n:
            raise DecodeError("truncated headers")
        try:
            headers = _headers_decode(raw[pos : pos + n])
        except msgspec.DecodeError as exc:
            raise DecodeError(f"invalid headers: {exc}") from exc
        pos += n
    body = raw[pos:]
    error: DecodeError | None = None
    try:
        if codec == CODEC_JSON:
            data = _json_decode(body)
        elif codec == CODEC_TEXT:
            data = body.decode()
        elif codec == CODEC_BYTES:
            data = body
        elif codec == CODEC_MSGPACK:
            data = _msgpack_decode(body)
        else:
            raise DecodeError(f"unknown codec {codec}")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: msgspec's answer to deeply nested JSON or msgpack ("[" * 100_000)
        error = DecodeError(f"payload is not valid {_CODEC_NAMES[codec]}: {exc}")
        data, codec = body, CODEC_BYTES
    except DecodeError as exc:
        data, codec, error = body, CODEC_BYTES, exc
    return Message(topic, data, raw, codec, pid, seq, ts, headers, pattern, offset, epoch, error)
