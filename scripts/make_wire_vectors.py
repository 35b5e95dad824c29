"""Generate tests/vectors/wire-v1.json: wire format v1 test vectors for Herald clients.

Frames are built here with explicit struct layouts, independently of ``herald._core.wire``, and the
expected messages are written out by hand, so the vectors check the implementation rather than
echo it. Everything is fixed (publisher id, sequences, timestamps): running this twice gives the
same file.

    python scripts/make_wire_vectors.py           # rewrite the file
    python scripts/make_wire_vectors.py --check   # exit 1 if the file is out of date
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "wire-v1.json"

MAGIC = b"\xffHR"
HEAD = struct.Struct(">3sBBB8sQQ")  # magic, version, flags, codec, publisher id, seq, timestamp
BATCH_HEAD = struct.Struct(">3sBBI")  # magic, version, flags, count
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")

BATCH, HEADERS, OFFSET = 0x01, 0x02, 0x04
BYTES, JSON, MSGPACK, TEXT = 0, 1, 2, 3
CONTENT_TYPES = {
    BYTES: "application/octet-stream",
    JSON: "application/json",
    MSGPACK: "application/msgpack",
    TEXT: "text/plain",
}

PID = bytes.fromhex("0123456789abcdef")
TS = 1_700_000_000_123_456  # 2023-11-14T22:13:20.123456Z, in microseconds
CHANNEL = "news.sport"


def js(value: Any) -> bytes:
    """Compact JSON, UTF-8 unescaped: the bytes Herald's encoder writes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def frame(
    codec: int,
    payload: bytes,
    *,
    seq: int,
    ts: int = TS,
    headers: bytes | None = None,
    offset: tuple[int, int] | None = None,
    version: int = 1,
    flags: int = 0,
    pid: bytes = PID,
) -> bytes:
    """One single-message envelope; ``flags`` adds bits on top of those the fields imply."""
    extra = b""
    if offset is not None:
        flags |= OFFSET
        extra += U64.pack(offset[0]) + U64.pack(offset[1])
    if headers is not None:
        flags |= HEADERS
        extra += U32.pack(len(headers)) + headers
    return HEAD.pack(MAGIC, version, flags, codec, pid, seq, ts) + extra + payload


def batch(envelopes: list[bytes], *, count: int | None = None, flags: int = BATCH) -> bytes:
    n = len(envelopes) if count is None else count
    return BATCH_HEAD.pack(MAGIC, 1, flags, n) + b"".join(U32.pack(len(e)) + e for e in envelopes)


def msg(
    codec: int,
    *,
    seq: int,
    data: Any = None,
    payload: bytes | None = None,
    ts: int = TS,
    headers: dict[str, str] | None = None,
    offset: tuple[int, int] | None = None,
    decode_error: bool = False,
) -> dict[str, Any]:
    """An expected Herald message: ``payload`` (raw bytes) for the bytes codec, else ``data``."""
    m: dict[str, Any] = {
        "id": f"{PID.hex()}-{seq}",
        "publisher_id": PID.hex(),
        "seq": seq,
        "timestamp_us": ts,
        "content_type": CONTENT_TYPES[codec],
        "headers": headers or {},
        "type": (headers or {}).get("herald-type"),
        "offset": None if offset is None else offset[0],
        "epoch": None if offset is None else offset[1],
    }
    if payload is not None:
        m["payload_hex"] = payload.hex()
    else:
        m["data"] = data
    m["decode_error"] = decode_error
    return m


def raw(payload: bytes, *, decode_error: bool) -> dict[str, Any]:
    """An expected message without an id: a foreign payload, or a frame that could not be read."""
    return {
        "id": None,
        "publisher_id": None,
        "seq": None,
        "timestamp_us": None,
        "content_type": CONTENT_TYPES[BYTES],
        "headers": {},
        "type": None,
        "offset": None,
        "epoch": None,
        "payload_hex": payload.hex(),
        "decode_error": decode_error,
    }


def case(
    name: str,
    description: str,
    data: bytes,
    messages: list[dict[str, Any]],
    *,
    reencode: bool = False,
    channel: str = CHANNEL,
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "channel": channel,
        "frame": data.hex(),
        "reencode": reencode,
        "messages": messages,
    }


def cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(c: dict[str, Any]) -> None:
        out.append(c)

    # -- valid single messages ---------------------------------------------------------------
    d: Any = {"user": "alice", "n": 1}
    add(
        case(
            "json-dict",
            "A dict with the default JSON codec.",
            frame(JSON, js(d), seq=1),
            [msg(JSON, seq=1, data=d)],
            reencode=True,
        )
    )
    t = "hello, wörld ✓"
    add(
        case(
            "text",
            "A str: UTF-8 text, not JSON-quoted.",
            frame(TEXT, t.encode(), seq=2),
            [msg(TEXT, seq=2, data=t)],
            reencode=True,
        )
    )
    add(
        case(
            "text-empty",
            "An empty str: a frame may end right after its head.",
            frame(TEXT, b"", seq=3),
            [msg(TEXT, seq=3, data="")],
            reencode=True,
        )
    )
    b = bytes([0x00, 0xFF, 0x48, 0x52, 0x01, 0x80, 0x7F])
    add(
        case(
            "bytes",
            "Raw bytes, delivered unchanged (these happen to contain the magic).",
            frame(BYTES, b, seq=4),
            [msg(BYTES, seq=4, payload=b)],
            reencode=True,
        )
    )
    d = {"a": [1, 2, 3], "b": True}
    mp = bytes.fromhex("82 a1 61 93 01 02 03 a1 62 c3")  # fixmap(2) "a" [1,2,3] "b" true
    add(
        case(
            "msgpack",
            "The msgpack codec; data shown as its JSON equivalent.",
            frame(MSGPACK, mp, seq=300),
            [msg(MSGPACK, seq=300, data=d)],
            reencode=True,
        )
    )
    add(
        case(
            "json-string",
            "A JSON string payload (codec 1): decodes to a str. Herald's encoder sends a str as "
            "text (codec 3) instead, so it does not produce this frame.",
            frame(JSON, js("hi"), seq=5),
            [msg(JSON, seq=5, data="hi")],
        )
    )
    h = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "lang": "en"}
    d = [1, "two", None, 4.5]
    add(
        case(
            "headers",
            "Headers (flag 0x02): u32 length + JSON object of str to str, before the payload. "
            "The sequence is over 2**32.",
            frame(JSON, js(d), seq=2**32 + 1, headers=js(h)),
            [msg(JSON, seq=2**32 + 1, data=d, headers=h)],
            reencode=True,
        )
    )
    d = {"price": 101.5}
    add(
        case(
            "offset-epoch",
            "A message of a recoverable topic (flag 0x04): offset and epoch, u64 each.",
            frame(JSON, js(d), seq=6, offset=(42, 1_700_000_000)),
            [msg(JSON, seq=6, data=d, offset=(42, 1_700_000_000))],
            reencode=True,
        )
    )
    h = {"k": "v"}
    add(
        case(
            "offset-epoch-headers",
            "Both optional sections (flags 0x06): offset and epoch come before the headers.",
            frame(JSON, js({"ok": True}), seq=7, offset=(2**40, 3), headers=js(h)),
            [msg(JSON, seq=7, data={"ok": True}, offset=(2**40, 3), headers=h)],
            reencode=True,
        )
    )

    d = {"n": 1}
    add(
        case(
            "seq-above-2-53",
            "A sequence of 2**53 + 1, which a double (a JavaScript number) cannot hold: read "
            "the u64 fields as 64-bit integers (BigInt), and write the id from that integer.",
            frame(JSON, js(d), seq=2**53 + 1),
            [msg(JSON, seq=2**53 + 1, data=d)],
            reencode=True,
        )
    )
    h = {"__proto__": "x", "k": "v"}
    add(
        case(
            "headers-proto-key",
            "A header named __proto__ is an ordinary header: a receiver keeps it as one (in "
            "JavaScript: a Map or an Object.create(null), never assigned onto a plain object).",
            frame(JSON, js(1), seq=15, headers=js(h)),
            [msg(JSON, seq=15, data=1, headers=h)],
            reencode=True,
        )
    )
    h = {"q": "".join(chr(c) for c in range(0x20)) + '"\\/\x7f\u2028é😀'}
    add(
        case(
            "headers-escapes",
            "The byte form of the headers JSON as Herald writes it: no whitespace, keys in "
            'order, UTF-8 as is (/, DEL, U+2028 and non-ASCII unescaped), only " \\ and the '
            "control characters escaped: \\b \\t \\n \\f \\r, the others \\u00xx in "
            "lowercase hex.",
            frame(JSON, js(2), seq=16, headers=js(h)),
            [msg(JSON, seq=16, data=2, headers=h)],
            reencode=True,
        )
    )
    h = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    h["herald-type"] = "OrderCreated"
    add(
        case(
            "message-type",
            "The message type travels in the reserved header herald-type (here with another "
            "header): the receiver delivers it as the message's type, and keeps the header.",
            frame(JSON, js({"id": 7}), seq=20, headers=js(h)),
            [msg(JSON, seq=20, data={"id": 7}, headers=h)],
            reencode=True,
        )
    )
    hb = b'{ "k" : "caf\\u00e9", "k2":"\\ud83d\\ude00" ,"dup":"a","dup":"b"}'
    add(
        case(
            "headers-other-json",
            "Receivers accept any JSON object of strings: whitespace, \\u escapes (a surrogate "
            "pair is one character), a repeated key (the last one counts).",
            frame(JSON, js(3), seq=17, headers=hb),
            [msg(JSON, seq=17, data=3, headers={"k": "café", "k2": "😀", "dup": "b"})],
        )
    )
    d = "😀"
    add(
        case(
            "json-surrogate-pair",
            "A JSON string with an escaped surrogate pair decodes to the one character.",
            frame(JSON, b'"\\ud83d\\ude00"', seq=18),
            [msg(JSON, seq=18, data=d)],
        )
    )

    # -- batch frames --------------------------------------------------------------------------
    e1 = frame(JSON, js({"i": 1}), seq=10, ts=TS + 1)
    e2 = frame(TEXT, b"two", seq=11, ts=TS + 2)
    e3 = frame(BYTES, b"\x03", seq=12, ts=TS + 3, headers=js({"k": "v"}))
    add(
        case(
            "batch-3",
            "A batch frame of three envelopes: JSON, text, bytes with headers.",
            batch([e1, e2, e3]),
            [
                msg(JSON, seq=10, ts=TS + 1, data={"i": 1}),
                msg(TEXT, seq=11, ts=TS + 2, data="two"),
                msg(BYTES, seq=12, ts=TS + 3, payload=b"\x03", headers={"k": "v"}),
            ],
        )
    )
    add(
        case(
            "batch-1",
            "A batch of one: valid, though Herald sends a lone message unbatched.",
            batch([e1]),
            [msg(JSON, seq=10, ts=TS + 1, data={"i": 1})],
        )
    )
    broken = e2[:20]
    add(
        case(
            "batch-broken-inner",
            "A batch whose second envelope is truncated: only that message has a decode error "
            "(data = the inner envelope's bytes); the others decode.",
            batch([e1, broken, e3]),
            [
                msg(JSON, seq=10, ts=TS + 1, data={"i": 1}),
                raw(broken, decode_error=True),
                msg(BYTES, seq=12, ts=TS + 3, payload=b"\x03", headers={"k": "v"}),
            ],
        )
    )
    add(
        case(
            "batch-foreign-inner",
            "An inner envelope without the magic is an error, not a foreign payload.",
            batch([e1, b"plain"]),
            [msg(JSON, seq=10, ts=TS + 1, data={"i": 1}), raw(b"plain", decode_error=True)],
        )
    )
    bad = frame(JSON, b'{"i":', seq=13, ts=TS + 4, headers=js({"k": "v"}))
    add(
        case(
            "batch-invalid-payload-inner",
            "A batch entry with a valid envelope whose payload does not decode keeps its id, "
            "timestamp and headers; its data is the payload's bytes, with a decode error.",
            batch([e1, bad, e2]),
            [
                msg(JSON, seq=10, ts=TS + 1, data={"i": 1}),
                msg(
                    BYTES,
                    seq=13,
                    ts=TS + 4,
                    payload=b'{"i":',
                    headers={"k": "v"},
                    decode_error=True,
                ),
                msg(TEXT, seq=11, ts=TS + 2, data="two"),
            ],
        )
    )
    nested = batch([e1])
    add(
        case(
            "batch-nested",
            "Batches do not nest: an inner batch frame is an error.",
            batch([nested, e2]),
            [raw(nested, decode_error=True), msg(TEXT, seq=11, ts=TS + 2, data="two")],
        )
    )
    f = batch([e1, e2], count=3)
    add(
        case(
            "batch-truncated",
            "The count says 3 but the frame holds 2: the whole frame is one undecodable message.",
            f,
            [raw(f, decode_error=True)],
        )
    )
    f = batch([e1]) + b"\x00"
    add(
        case(
            "batch-trailing-bytes",
            "Bytes after the last envelope: the whole frame is one undecodable message.",
            f,
            [raw(f, decode_error=True)],
        )
    )
    f = batch([])
    add(
        case(
            "batch-empty",
            "A count of 0 is invalid: a frame always yields at least one message.",
            f,
            [raw(f, decode_error=True)],
        )
    )
    f = batch([e1], flags=BATCH | HEADERS)
    add(
        case(
            "batch-unknown-flags",
            "A batch frame's flags must be exactly 0x01.",
            f,
            [raw(f, decode_error=True)],
        )
    )

    # -- foreign payloads ----------------------------------------------------------------------
    add(
        case(
            "foreign-text",
            "PUBLISH news.sport hello from redis-cli: no magic, so raw bytes, no error.",
            b"hello",
            [raw(b"hello", decode_error=False)],
        )
    )
    f = b'{"user":"bob"}'
    add(
        case(
            "foreign-json",
            "JSON published by redis-py is not decoded: foreign payloads are always raw bytes.",
            f,
            [raw(f, decode_error=False)],
        )
    )
    f = bytes([0xFF, 0x00, 0x01, 0x02])
    add(
        case(
            "foreign-binary",
            "Binary starting with 0xFF but not the magic: raw bytes, no error.",
            f,
            [raw(f, decode_error=False)],
        )
    )
    add(
        case(
            "foreign-empty",
            "An empty payload: raw empty bytes, no error.",
            b"",
            [raw(b"", decode_error=False)],
        )
    )

    # -- frames that cannot be decoded ----------------------------------------------------------
    valid = frame(JSON, js({"user": "alice", "n": 1}), seq=1)
    for name, f, why in [
        ("magic-only", MAGIC, "Only the magic."),
        ("truncated-header", valid[:20], "Cut inside the 30-byte head."),
        (
            "unknown-version",
            frame(JSON, js({"n": 1}), seq=1, version=2),
            "Version 2: a v1 receiver must not guess at its layout.",
        ),
        (
            "unknown-flags",
            frame(JSON, js({"n": 1}), seq=1, flags=0x08),
            "A reserved flag bit (0x08) may announce a section a v1 receiver cannot skip.",
        ),
        (
            "truncated-offset",
            frame(JSON, b"", seq=1, flags=OFFSET) + b"\x00" * 8,
            "Flag 0x04 with 8 of the 16 offset and epoch bytes.",
        ),
        (
            "truncated-headers",
            frame(JSON, b"", seq=1, flags=HEADERS) + U32.pack(100) + b'{"k":"v"}',
            "The headers length runs past the end of the frame.",
        ),
        (
            "invalid-headers",
            frame(JSON, js(1), seq=1, headers=b'{"k":1}'),
            "A header value that is not a string.",
        ),
        (
            "headers-lone-surrogate",
            frame(JSON, js(1), seq=1, headers=b'{"k":"\\ud800"}'),
            "A header value with a lone surrogate (\\ud800 not followed by a low surrogate) "
            "is not Unicode text, so not a string.",
        ),
    ]:
        add(
            case(name, why + " Delivered raw, with a decode error.", f, [raw(f, decode_error=True)])
        )

    body = b'{"user":'
    add(
        case(
            "invalid-json-payload",
            "A valid head with a payload that is not JSON: the id, timestamp and headers are "
            "kept, the payload is delivered as raw bytes with a decode error.",
            frame(JSON, body, seq=8, headers=js({"k": "v"})),
            [msg(BYTES, seq=8, payload=body, headers={"k": "v"}, decode_error=True)],
        )
    )
    for name, body, why in [
        (
            "json-lone-surrogate",
            b'"\\ud800"',
            "A lone surrogate escape (\\ud800 without its low half) is not Unicode text: "
            "invalid JSON for v1, though JavaScript's JSON.parse accepts it.",
        ),
        (
            "json-nan",
            b'{"x":NaN}',
            "NaN (and Infinity) are not JSON; Herald's encoder refuses such values.",
        ),
        (
            "json-number-out-of-range",
            b"1e999",
            "A number beyond the range of a double is refused, not read as Infinity.",
        ),
    ]:
        add(
            case(
                name,
                why + " Delivered with the id kept, raw payload bytes and a decode error.",
                frame(JSON, body, seq=19),
                [msg(BYTES, seq=19, payload=body, decode_error=True)],
            )
        )
    body = b"\xc1"
    add(
        case(
            "invalid-msgpack-payload",
            "0xC1 is never valid msgpack: raw bytes with a decode error, id kept.",
            frame(MSGPACK, body, seq=9),
            [msg(BYTES, seq=9, payload=body, decode_error=True)],
        )
    )
    body = b"caf\xe9"
    add(
        case(
            "invalid-utf8-text",
            "Text (codec 3) that is not UTF-8 (Latin-1 here): raw bytes with a decode error.",
            frame(TEXT, body, seq=10),
            [msg(BYTES, seq=10, payload=body, decode_error=True)],
        )
    )
    body = b"\x01\x02"
    add(
        case(
            "unknown-codec",
            "Codec 9 is not defined in v1: raw bytes with a decode error, id kept.",
            frame(9, body, seq=11),
            [msg(BYTES, seq=11, payload=body, decode_error=True)],
        )
    )
    return out


def render() -> str:
    doc = {
        "format": "herald-wire",
        "version": 1,
        "spec": "docs/wire-format.md",
        "generator": "scripts/make_wire_vectors.py",
        "notes": [
            "frame: the bytes of one Redis Pub/Sub message on `channel`, in hex.",
            "messages: what a receiver delivers for the frame, in order.",
            "data is the decoded payload as a JSON value; payload_hex replaces it when the "
            "message's data is raw bytes (content type application/octet-stream).",
            "type: the message type, from the reserved header herald-type (null without one).",
            "id, publisher_id, seq and timestamp_us are null for a message without an envelope: "
            "a foreign payload (decode_error false) or an undecodable frame (decode_error true).",
            "reencode: true when Herald's encoder, given the same publisher id, seq, timestamp, "
            "data, headers, offset and epoch, writes exactly `frame`. Other encoders may write "
            "different but equivalent JSON or msgpack payload bytes.",
        ],
        "cases": cases(),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(cases())} cases to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
