"""Client (threads) and AsyncClient offer the same API: every public method, the constructor
and the overloads have the same parameters (names, kinds, defaults, annotations) and returns,
modulo async/await and the sync twins of async types."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import pytest

import herald

# What the sync side says where the async side says the key (whole words in annotations).
TWINS = {
    "Subscription": "SyncSubscription",
    "Consumer": "SyncConsumer",
    "Pipeline": "SyncPipeline",
    "Responder": "SyncResponder",
    "Script": "SyncScript",
    "Transaction": "SyncTransaction",
    "AsyncIterator": "Iterator",
}
# Members on one side only, and why.
ASYNC_ONLY = {"connect"}  # Client connects in its constructor
# AsyncClient.url is an attribute of each instance (the URL given), not of the class.
SYNC_ONLY = {"url"}


def _public(cls: type) -> dict[str, Any]:
    return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_")}


def _sync_annotation(text: str) -> str:
    return re.sub(
        r"\b(" + "|".join(TWINS) + r")\b", lambda m: TWINS[m.group(1)], text.replace(" ", "")
    )


def _shape(sig: inspect.Signature, *, to_sync: bool) -> list[tuple[str, Any, Any, str]]:
    convert = _sync_annotation if to_sync else (lambda t: t.replace(" ", ""))
    params = [
        (p.name, p.kind, p.default, convert(str(p.annotation))) for p in sig.parameters.values()
    ]
    return [*params, ("return", None, None, convert(str(sig.return_annotation)))]


def _pairs() -> list[tuple[str, Callable[..., Any], Callable[..., Any]]]:
    a, s = _public(herald.AsyncClient), _public(herald.Client)
    names = sorted((set(a) & set(s)) | {"__init__"})
    a["__init__"], s["__init__"] = herald.AsyncClient.__init__, herald.Client.__init__
    return [(n, a[n], s[n]) for n in names if callable(a[n])]


def test_both_clients_have_the_same_members() -> None:
    a, s = set(_public(herald.AsyncClient)), set(_public(herald.Client))
    assert a - s == ASYNC_ONLY
    assert s - a == SYNC_ONLY


@pytest.mark.parametrize(("name", "async_fn", "sync_fn"), _pairs(), ids=[n for n, _, _ in _pairs()])
def test_sync_and_async_signatures_match(
    name: str, async_fn: Callable[..., Any], sync_fn: Callable[..., Any]
) -> None:
    expected = _shape(inspect.signature(async_fn), to_sync=True)
    assert _shape(inspect.signature(sync_fn), to_sync=False) == expected
    async_overloads = typing.get_overloads(async_fn)
    sync_overloads = typing.get_overloads(sync_fn)
    assert len(sync_overloads) == len(async_overloads)
    for a, s in zip(async_overloads, sync_overloads, strict=True):
        assert _shape(inspect.signature(s), to_sync=False) == _shape(
            inspect.signature(a), to_sync=True
        )


def test_the_check_sees_a_difference() -> None:
    """The comparison is not vacuous: a renamed keyword, another default or annotation, a
    missing parameter each make the shapes differ."""

    async def base(self: Any, topic: str, *, timeout: float = 1.0) -> herald.Subscription:
        raise NotImplementedError

    def same(self: Any, topic: str, *, timeout: float = 1.0) -> herald.SyncSubscription:
        raise NotImplementedError

    def renamed(self: Any, topic: str, *, deadline: float = 1.0) -> herald.SyncSubscription:
        raise NotImplementedError

    def default(self: Any, topic: str, *, timeout: float = 2.0) -> herald.SyncSubscription:
        raise NotImplementedError

    def typed(self: Any, topic: str, *, timeout: int = 1) -> herald.SyncSubscription:
        raise NotImplementedError

    def missing(self: Any, topic: str) -> herald.SyncSubscription:
        raise NotImplementedError

    want = _shape(inspect.signature(base), to_sync=True)
    assert _shape(inspect.signature(same), to_sync=False) == want
    for other in (renamed, default, typed, missing):
        assert _shape(inspect.signature(other), to_sync=False) != want, other.__name__
