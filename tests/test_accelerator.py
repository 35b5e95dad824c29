"""The optional compiled core (setup.py: ``HERALD_MYPYC=1`` compiles ``herald._core`` and
``herald._io.link`` with mypyc).

The same tests run on both: ``make test`` runs the suite on the pure-Python package, then its
compiled tier with ``PYTHONPATH=build/compiled`` and ``HERALD_EXPECT_COMPILED=1``. Here, which
one was imported is checked, so that the compiled tier cannot run pure without failing; and
what a compiled ``Message`` could change (subclasses, attributes a subclass overrides with a
property, pickling, equality, ``repr``) is checked on whichever runs.
"""

from __future__ import annotations

import copy
import importlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import herald
import herald._core
import herald._io
from herald._core.durable_message import DurableMessage, StoredMessage, durable_message
from herald._core.wire import Encoder, decode
from herald.cli import main

pytestmark = pytest.mark.unit

EXPECT_COMPILED = os.environ.get("HERALD_EXPECT_COMPILED") == "1"
CORE = Path(herald._core.__file__).parent
IO = Path(herald._io.__file__).parent
# setup.py compiles every module of herald._core but these (NOT_COMPILED there), and Link.
NOT_COMPILED = {"__init__", "durable_message"}
COMPILED = sorted(f"herald._core.{p.stem}" for p in CORE.glob("*.py") if p.stem not in NOT_COMPILED)
COMPILED.append("herald._io.link")
INTERPRETED = sorted(
    f"herald._io.{p.stem}" for p in IO.glob("*.py") if p.stem not in {"__init__", "link"}
)


def test_the_core_is_the_one_expected() -> None:
    assert len(COMPILED) > 10
    for name in COMPILED:
        file = importlib.import_module(name).__file__ or ""
        if EXPECT_COMPILED:
            assert file.endswith(".so"), f"{name} is not compiled: {file}"
        else:
            assert file.endswith(".py"), f"{name} is compiled: {file}"
    for name in NOT_COMPILED:
        module = (
            herald._core if name == "__init__" else importlib.import_module(f"herald._core.{name}")
        )
        assert (module.__file__ or "").endswith(".py"), module.__file__
    for module in (herald._io, *map(importlib.import_module, INTERPRETED)):
        assert (module.__file__ or "").endswith(".py"), module.__file__
    assert list(herald._io.compiled()) == (COMPILED if EXPECT_COMPILED else [])


def test_version_says_whether_the_core_is_compiled() -> None:
    out = CliRunner().invoke(main, ["--version"]).output.strip()
    core = "compiled (mypyc)" if EXPECT_COMPILED else "pure Python"
    assert out == f"herald, version {herald.__version__}, core {core}"


def _frame() -> bytes:
    return Encoder("json").envelope({"n": 1}, {"k": "v"})


def test_a_message_subclass_keeps_its_own_slots_methods_and_properties() -> None:
    class Tagged(herald.Message):
        __slots__ = ("tag",)

        def __init__(self, topic: str, tag: str) -> None:
            super().__init__(topic, {"n": 1}, b"", 1, b"12345678", 7, 8, None)
            self.tag = tag

        @property
        def type(self) -> str:
            return f"tagged-{self.tag}"

        def __repr__(self) -> str:
            return f"Tagged({self.topic!r}, {self.tag!r})"

    msg = Tagged("orders", "a")
    assert (msg.topic, msg.tag, msg.data, msg.type) == ("orders", "a", {"n": 1}, "tagged-a")
    assert (msg.id, msg.timestamp, msg.foreign, msg.headers) == (
        "3132333435363738-7",
        8e-6,
        False,
        {},
    )
    assert isinstance(msg, herald.Message)
    assert repr(msg) == "Tagged('orders', 'a')"
    with pytest.raises(AttributeError):
        msg.undeclared = 1  # type: ignore[attr-defined]


def test_durable_messages_built_either_way_read_the_same() -> None:
    [message] = decode("orders", _frame())
    settler: Any = None  # never called here
    slow = DurableMessage(message, "1700000000000-5", 2, settler)
    fast = durable_message(
        "orders", message.data, message.raw, message._codec, b"1700000000000-5", 2, settler
    )
    for msg in (slow, fast):
        assert msg.offset == "1700000000000-5"
        assert msg._entry == b"1700000000000-5"
        assert msg.stored_at == 1700000000.0
        assert (msg.topic, msg.data, msg.deliveries, msg.settled) == ("orders", {"n": 1}, 2, False)
        assert msg.id == message.id
        assert repr(msg).startswith("DurableMessage(topic='orders', data={'n': 1}, offset=")
    stored = StoredMessage(message, 12, key="k")
    assert (stored.offset, stored.key, stored.headers) == (12, "k", {"k": "v"})


def test_messages_pickle_copy_compare_and_hash_as_objects() -> None:
    [msg] = decode("orders", _frame())
    again = pickle.loads(pickle.dumps(msg))
    assert (again.topic, again.data, again.headers, again.id) == (
        msg.topic,
        msg.data,
        msg.headers,
        msg.id,
    )
    assert repr(again) == repr(msg)
    # equality is identity, the hash the object's
    assert msg == msg
    assert msg != again
    assert msg != copy.copy(msg)
    assert hash(msg) == object.__hash__(msg)


def test_the_comparison_can_run_herald_rows_again_on_the_compiled_core() -> None:
    from herald_bench import compare
    from herald_bench._compare_rows import COMPILED_TREE

    pure = compare._plan({"live", "durable"}, quick=True)
    both = compare._plan({"live", "durable"}, quick=True, compiled=True)
    herald = [r for r in pure if r.peer == "herald"]
    twins = [r for r in both if r.name.endswith("-compiled")]
    assert herald
    assert [r.name for r in twins] == [f"{r.name}-compiled" for r in herald]
    for row, twin in zip(herald, twins, strict=True):
        assert (twin.workload, twin.kinds) == (row.workload, row.kinds)
        assert twin.params == {**row.params, "herald_path": str(COMPILED_TREE)}
    assert [r for r in both if not r.name.endswith("-compiled")] == pure
