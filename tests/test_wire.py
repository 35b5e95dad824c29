"""Wire format v1: the test vectors, encode/decode round trips, and decode's never-raise promise."""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import time
from pathlib import Path
from typing import Any

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald import ConfigurationError, Message
from herald._core.resp import Arg, command, prefix
from herald._core.wire import FLAG_BATCH, MAGIC, VERSION, Codec, Encoder, batch, decode

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "wire-v1.json").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = VECTORS["cases"]

u64 = st.integers(min_value=0, max_value=2**64 - 1)
# What both codecs carry without change: JSON has no NaN or infinity, msgpack no int over 64 bits,
# and JSON object keys are strings.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
payloads = json_values | st.binary()
header_maps = st.dictionaries(st.text(), st.text(), max_size=5)


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


def _check(msg: Message, want: dict[str, Any], channel: str) -> None:
    assert msg.topic == channel
    assert msg.id == want["id"]
    if want["publisher_id"] is None:
        # no envelope: a foreign payload, or a damaged frame (which is not foreign)
        assert msg.foreign is not want["decode_error"]
        assert msg.timestamp is None
    else:
        assert want["id"] == f"{want['publisher_id']}-{want['seq']}"
        assert not msg.foreign
        assert msg.timestamp == want["timestamp_us"] / 1e6
    assert msg.content_type == want["content_type"]
    assert msg.headers == want["headers"]
    assert msg.type == want["type"]
    assert msg.offset == want["offset"]
    assert msg.epoch == want["epoch"]
    if "payload_hex" in want:
        assert msg.data == bytes.fromhex(want["payload_hex"])
    else:
        assert msg.data == want["data"]
    assert (msg.decode_error is not None) == want["decode_error"]


# -- test vectors ---------------------------------------------------------------------------------


def test_vectors_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_wire_vectors", ROOT / "scripts/make_wire_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert json.loads(rendered) == VECTORS, "run scripts/make_wire_vectors.py"


def test_vectors_cover_the_brief() -> None:
    names = set(_ids(CASES))
    assert len(names) == len(CASES), "case names must be unique"
    assert {
        "json-dict", "text", "bytes", "msgpack", "headers", "offset-epoch", "batch-3",
        "foreign-text", "foreign-binary", "truncated-header", "unknown-version", "unknown-flags",
        "batch-broken-inner", "invalid-json-payload", "batch-invalid-payload-inner",
        "json-lone-surrogate", "headers-lone-surrogate", "seq-above-2-53", "headers-proto-key",
        "json-nan", "headers-escapes", "headers-other-json", "message-type",
    } <= names  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_vector_decodes(case: dict[str, Any]) -> None:
    messages = decode(case["channel"], bytes.fromhex(case["frame"]))
    assert len(messages) == len(case["messages"])
    for msg, want in zip(messages, case["messages"], strict=True):
        _check(msg, want, case["channel"])


REENCODE = [c for c in CASES if c["reencode"]]


@pytest.mark.parametrize("case", REENCODE, ids=_ids(REENCODE))
def test_vector_reencodes(case: dict[str, Any]) -> None:
    [want] = case["messages"]
    codec: Codec = "msgpack" if want["content_type"] == "application/msgpack" else "json"
    encoder = Encoder(
        codec,
        bytes.fromhex(want["publisher_id"]),
        clock=lambda: want["timestamp_us"] * 1000 + 999,  # sub-microsecond part is dropped
        first_seq=want["seq"],
    )
    data = bytes.fromhex(want["payload_hex"]) if "payload_hex" in want else want["data"]
    frame = encoder.envelope(data, want["headers"], want["offset"], want["epoch"])
    assert frame.hex() == case["frame"]


def test_doc_examples_match_the_vectors() -> None:
    doc = (ROOT / "docs" / "wire-format.md").read_text(encoding="utf-8")
    frames = {c["name"]: c["frame"] for c in CASES}
    examples = re.findall(r"<!-- vector: ([\w-]+) -->\s*```text\n(.*?)```", doc, re.DOTALL)
    assert examples
    for name, block in examples:
        hexdigits = "".join(line.split("#")[0] for line in block.splitlines()).replace(" ", "")
        assert hexdigits == frames[name], name


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@given(data=payloads, headers=header_maps)
def test_round_trip(codec: Codec, data: Any, headers: dict[str, str]) -> None:
    encoder = Encoder(codec)
    [msg] = decode("t", encoder.envelope(data, headers))
    assert msg.decode_error is None
    assert msg.data == data
    assert type(msg.data) is type(data)
    assert msg.headers == headers
    assert msg.offset is None
    assert msg.epoch is None


@given(text=st.text())
def test_str_is_sent_as_text(text: str) -> None:
    frame = Encoder().envelope(text)
    assert frame.endswith(text.encode())
    [msg] = decode("t", frame)
    assert msg.data == text
    assert msg.content_type == "text/plain"


@given(data=st.binary())
def test_bytes_like_are_sent_raw(data: bytes) -> None:
    encoder = Encoder()
    for value in (data, bytearray(data), memoryview(data)):
        [msg] = decode("t", encoder.envelope(value))
        assert msg.data == data
        assert type(msg.data) is bytes
        assert msg.content_type == "application/octet-stream"


@given(pid=st.binary(min_size=8, max_size=8), seq=u64, ts=u64, offset=u64, epoch=u64)
def test_metadata_round_trip(pid: bytes, seq: int, ts: int, offset: int, epoch: int) -> None:
    encoder = Encoder(publisher_id=pid, clock=lambda: ts * 1000, first_seq=seq)
    [msg] = decode("t", encoder.envelope({"k": 1}, offset=offset, epoch=epoch), "t*")
    assert msg.id == f"{pid.hex()}-{seq}"
    assert msg.timestamp == ts / 1e6
    assert (msg.offset, msg.epoch) == (offset, epoch)
    assert msg.pattern == "t*"


@given(items=st.lists(st.tuples(payloads, header_maps), min_size=1, max_size=10))
def test_batch_round_trip(items: list[tuple[Any, dict[str, str]]]) -> None:
    encoder = Encoder()
    envelopes = [encoder.envelope(d, h) for d, h in items]
    messages = decode("t", batch(envelopes))
    assert [(m.data, m.headers) for m in messages] == items
    assert [m.raw for m in messages] == envelopes
    seqs = [int(m.id.rsplit("-", 1)[1]) for m in messages if m.id]
    assert seqs == list(range(1, len(items) + 1))


def test_batch_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        batch([])


def test_sequence_counts_up_from_first_seq() -> None:
    encoder = Encoder(first_seq=7)
    ids = [decode("t", encoder.envelope(i))[0].id for i in range(3)]
    assert ids == [f"{encoder.publisher_id.hex()}-{s}" for s in (7, 8, 9)]


def test_default_clock_is_wall_time() -> None:
    before = time.time()
    [msg] = decode("t", Encoder().envelope(1))
    assert msg.timestamp is not None
    assert before - 0.001 <= msg.timestamp <= time.time() + 0.001


def test_publisher_ids_are_random_and_8_bytes() -> None:
    assert Encoder().publisher_id != Encoder().publisher_id
    for bad in (b"", b"short", b"123456789"):
        with pytest.raises(ConfigurationError, match="8 bytes"):
            Encoder(publisher_id=bad)


def test_unknown_codec_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Encoder("cbor")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        ("json", object()),
        ("json", {1j: 2}),
        ("msgpack", 2**64),  # msgspec: OverflowError
        ("json", "\ud800"),  # a lone surrogate: UnicodeEncodeError
        ("json", ["\ud800"]),
    ],
)
def test_unencodable_payload_is_a_type_error(codec: Codec, data: Any) -> None:
    with pytest.raises(TypeError, match="cannot encode payload"):
        Encoder(codec).envelope(data)


@pytest.mark.parametrize(
    "data",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        {"a": [1, {"b": float("nan")}]},
        (1.0, float("-inf")),
        {float("nan")},
    ],
)
def test_nan_and_infinity_are_refused_not_sent_as_null(data: Any) -> None:
    with pytest.raises(TypeError, match="NaN and Infinity are not JSON"):
        Encoder().envelope(data)


def test_none_is_still_null() -> None:
    assert Encoder().payload({"user": None, "x": [None, 1.5]}) == (
        1,
        b'{"user":null,"x":[null,1.5]}',
    )


def test_msgpack_carries_nan() -> None:
    [msg] = decode("t", Encoder("msgpack").envelope(float("nan")))
    assert msg.data != msg.data


def test_headers_with_a_lone_surrogate_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="headers"):
        Encoder().envelope(1, {"k": "\ud800"})


def test_headers_must_map_str_to_str() -> None:
    with pytest.raises(TypeError, match="headers"):
        Encoder().envelope(1, {"k": 1})  # type: ignore[dict-item]


# -- decode never raises --------------------------------------------------------------------------


def _check_never_raises(raw: bytes) -> None:
    messages = decode("t", raw)
    assert messages
    for msg in messages:
        assert msg.topic == "t"
        if msg.decode_error is not None or msg.foreign:
            assert type(msg.data) is bytes
            assert msg.content_type == "application/octet-stream"
    if raw[:3] != MAGIC:
        [msg] = messages
        assert msg.data == raw
        assert msg.decode_error is None


@given(raw=st.binary())
def test_decode_never_raises(raw: bytes) -> None:
    _check_never_raises(raw)


@given(raw=st.binary())
def test_decode_never_raises_after_magic(raw: bytes) -> None:
    _check_never_raises(MAGIC + raw)


@given(flags=st.integers(0, 255), codec=st.integers(0, 255), rest=st.binary())
def test_decode_never_raises_after_v1_head(flags: int, codec: int, rest: bytes) -> None:
    _check_never_raises(MAGIC + bytes([VERSION, flags, codec]) + rest)


@given(
    count=st.none() | st.integers(0, 2**32 - 1),
    inner=st.lists(st.binary(max_size=40) | st.sampled_from([c["frame"] for c in CASES])),
)
def test_decode_never_raises_on_batches(count: int | None, inner: list[bytes | str]) -> None:
    envelopes = [bytes.fromhex(e) if isinstance(e, str) else e for e in inner]
    n = len(envelopes) if count is None else count
    frame = struct.pack(">3sBBI", MAGIC, VERSION, FLAG_BATCH, n)
    _check_never_raises(frame + b"".join(struct.pack(">I", len(e)) + e for e in envelopes))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_every_truncation_of_a_vector_decodes(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["frame"])
    for end in range(len(frame) + 1):
        _check_never_raises(frame[:end])


@pytest.mark.parametrize("codec", [1, 2])
def test_deeply_nested_payload_is_a_decode_error(codec: int) -> None:
    # msgspec raises RecursionError here, which must not escape into the subscriber's reader
    body = b"[" * 100_000 if codec == 1 else b"\x91" * 100_000
    frame = struct.pack(">3sBBB8sQQ", MAGIC, VERSION, 0, codec, b"p" * 8, 1, 1) + body
    [msg] = decode("t", frame)
    assert msg.decode_error is not None
    assert msg.data == body
    assert msg.id == f"{(b'p' * 8).hex()}-1"


def test_messages_do_not_share_headers() -> None:
    frames = [b"foreign", Encoder().envelope(1), MAGIC]  # foreign, envelope, undecodable
    first = [decode("t", f)[0] for f in frames]
    for msg in first:
        msg.headers["leak"] = "yes"
    assert all(decode("t", f)[0].headers == {} for f in frames)


# -- RESP -----------------------------------------------------------------------------------------

args = st.binary() | st.text() | st.integers() | st.floats(allow_nan=False)


def _parse(data: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(data)
    reply = reader.gets()
    assert reader.gets() is False, "bytes left over after one reply"
    return reply


def _as_bytes(a: Arg) -> bytes:
    return a if isinstance(a, bytes) else a.encode() if isinstance(a, str) else repr(a).encode()


@given(argv=st.lists(args, min_size=1, max_size=8))
def test_command_is_a_resp_array_of_bulk_strings(argv: list[Arg]) -> None:
    assert _parse(command(*argv)) == [_as_bytes(a) for a in argv]


@given(number=st.integers() | st.floats(allow_nan=False))
def test_numbers_round_trip_through_resp(number: int | float) -> None:
    [raw] = _parse(command(number))
    assert type(number)(raw) == number


@pytest.mark.parametrize("bad", [True, None, [1], b"x".decode])
def test_command_rejects_other_types(bad: Any) -> None:
    with pytest.raises(TypeError):
        command("SET", "k", bad)


@given(name=st.binary(), key=st.binary(), value=st.binary())
def test_prefix_plus_value_is_the_whole_command(name: bytes, key: bytes, value: bytes) -> None:
    data = prefix(name, key) + b"%d\r\n" % len(value) + value + b"\r\n"
    assert _parse(data) == [name, key, value]
    assert data == command(name, key, value)


def test_plain_json_frames_leave_their_ids_in_the_frame_until_asked() -> None:
    # The decoders' fast path (single and batched frames) does not unpack the ids: most
    # receivers never look at them. Asked for, they are those the publisher wrote.
    pid, seq, ts = b"q" * 8, 41, 1_700_000_000_123_456
    encoder = Encoder(publisher_id=pid, clock=lambda: ts * 1000, first_seq=seq)
    one = encoder.envelope({"n": 1})
    two = encoder.envelope({"n": 2})
    for msg, n in [
        (decode("t", one)[0], seq),
        *zip(decode("t", batch([one, two])), (seq, seq + 1), strict=True),
    ]:
        assert msg._pid is None
        assert msg.id == f"{pid.hex()}-{n}"
        assert msg.timestamp == ts / 1e6
        assert not msg.foreign
        assert msg._pid == pid


def test_a_message_without_headers_gets_a_dict_of_its_own_when_asked() -> None:
    frame = Encoder().envelope({"n": 1})
    first, second = decode("t", frame)[0], decode("t", frame)[0]
    assert first._headers is None  # nothing made for the common case
    first.headers["trace"] = "x"
    assert first.headers == {"trace": "x"}
    assert second.headers == {}
    second.headers = {"a": "b"}
    assert second.headers == {"a": "b"}
    with_headers = decode("t", Encoder().envelope({"n": 1}, {"k": "v"}))[0]
    assert with_headers.headers == {"k": "v"}
