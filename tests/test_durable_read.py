"""The consumer's read path for new entries (``_streams.read_messages``): the same messages as the
general path, in stream order, entries still held skipped, every other entry handed to the
general path; and the grouped XACK id encoding (``_group.bulk_strings``).

Sans-I/O: the delivery behaviour itself is tested against a server in ``test_durable.py``.
"""

from __future__ import annotations

from typing import Any

import hiredis

from herald import DurableMessage
from herald._group import bulk_strings
from herald._streams import decode_entry, parse_read, read_messages
from herald._wire import Encoder


class _Settler:
    def _ack(self, msg: DurableMessage, confirm: bool) -> Any: ...
    def _nak(self, msg: DurableMessage, delay: float | None) -> Any: ...
    def _term(self, msg: DurableMessage, reason: str) -> Any: ...
    def _in_progress(self, msg: DurableMessage) -> Any: ...


def _slots(cls: type) -> list[str]:
    return [s for k in cls.__mro__ for s in getattr(k, "__slots__", ()) if s != "__weakref__"]


def _read(entries: list[list[Any]]) -> list[list[Any]]:
    return parse_read([[b"herald:{t}:s", entries]])


def test_read_messages_builds_what_the_general_path_builds_in_stream_order() -> None:
    enc = Encoder("json")
    settler = _Settler()
    plain = [enc.envelope({"n": i}, None) for i in range(5)]
    headers = enc.envelope({"n": 5}, {"trace": "x"})
    entries: list[list[Any]] = [[f"{i}-0".encode(), [b"m", f]] for i, f in enumerate(plain)]
    entries.insert(2, [b"9-0", [b"m", headers]])  # not the fast kind: general path
    entries.insert(4, [b"10-0", None])  # deleted after it was read: general path
    entries.insert(0, [b"11-0", [b"m", plain[0]]])  # still held: skipped
    held = DurableMessage(decode_entry("t", [b"m", plain[0]]), "11-0", 1, settler)
    outstanding: dict[str, DurableMessage] = {"11-0": held}
    out: list[DurableMessage] = []
    general: list[tuple[str, list[bytes]]] = []

    def slow(offset: str, fields: list[bytes]) -> DurableMessage | None:
        general.append((offset, fields))
        if not fields:
            return None  # acked away, not delivered
        return DurableMessage(decode_entry("t", fields), offset, 1, settler)

    added = read_messages("t", _read(entries), settler, outstanding, out.append, slow)

    assert added == 6
    assert [m.offset for m in out] == ["0-0", "1-0", "9-0", "2-0", "3-0", "4-0"]
    assert general == [("9-0", [b"m", headers]), ("10-0", [])]
    assert outstanding["11-0"] is held
    assert {o: outstanding[o] for o in outstanding if o != "11-0"} == {m.offset: m for m in out}
    for msg in out:
        offset = msg._entry
        fields = [b"m", headers] if offset == "9-0" else [b"m", plain[int(offset[0])]]
        ref = DurableMessage(decode_entry("t", fields), offset, 1, settler)
        for name in _slots(DurableMessage):
            if name != "_replier":
                assert getattr(msg, name) == getattr(ref, name), (msg.offset, name)
        assert msg.headers is not ref.headers
    assert len({id(m.headers) for m in out}) == len(out)  # never shared


def test_read_messages_leaves_broken_frames_to_the_general_path() -> None:
    enc = Encoder("json")
    frame = enc.envelope({"id": 7}, None)
    odd = [
        [b"m", frame[:-1]],  # broken JSON
        [b"m", frame[:20]],  # a header cut short
        [b"m", Encoder("msgpack").envelope({"id": 7}, None)],
        [b"m", frame, b"k", b"key-1"],  # an ordering key
        [b"x", b"y"],  # a foreign entry
    ]
    seen: list[str] = []

    def slow(offset: str, fields: list[bytes]) -> DurableMessage | None:
        seen.append(offset)
        return None

    entries: list[list[Any]] = [[f"{i}-1".encode(), fields] for i, fields in enumerate(odd)]
    out: list[DurableMessage] = []
    added = read_messages("t", _read(entries), _Settler(), {}, out.append, slow)
    assert added == 0
    assert out == []
    assert seen == [f"{i}-1" for i in range(len(odd))]


def test_parse_read_of_no_reply() -> None:
    assert parse_read(None) == []
    assert parse_read([]) == []


def test_bulk_strings_is_one_bulk_string_per_id() -> None:
    ids = [f"1764452831{i % 3}-{i * 37}" for i in range(300)] + ["1-1", "10-10"]
    encoded = bulk_strings(ids)
    reader = hiredis.Reader()
    reader.feed(b"*%d\r\n" % len(ids) + encoded)
    got = reader.gets()
    assert sorted(x.decode() for x in got) == sorted(ids)
    assert bulk_strings([]) == b""
