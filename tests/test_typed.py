"""Typed payloads: handlers annotated with a msgspec Struct or a pydantic model get the payload
decoded and validated; invalid payloads are skipped (live) or dead-lettered (durable)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import pydantic
import pytest

import herald
from herald import DurableMessage, Message
from herald._core.typed import converter, payload


class Order(msgspec.Struct):
    id: int
    placed: datetime


class Invoice(pydantic.BaseModel):
    number: int
    total: float


GOOD_ORDER = {"id": 7, "placed": "2024-05-01T12:00:00+00:00"}
BAD_ORDER = {"id": "seven", "placed": "2024-05-01T12:00:00+00:00"}


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_only_struct_and_model_annotations_make_a_typed_handler() -> None:
    def untyped(msg: Message) -> None: ...
    def typed_struct(order: Order) -> None: ...
    def typed_model(invoice: Invoice, msg: Message) -> None: ...
    def with_default(order: Order, extra: int = 1) -> None: ...

    assert converter(untyped) is None
    assert converter(lambda m: None) is None
    assert converter(print) is None
    found = converter(typed_struct)
    assert found is not None
    assert (found[0].type, found[1]) == (Order, False)
    found = converter(typed_model)
    assert found is not None
    assert (found[0].type, found[1]) == (Invoice, True)  # gets the message too
    found = converter(with_default)
    assert found is not None
    assert not found[1]


def test_payload_is_found_after_headers() -> None:
    from herald._core.wire import Encoder, decode

    enc = Encoder()
    plain = decode("t", enc.envelope({"a": 1}))[0]
    with_headers = decode("t", enc.envelope({"a": 1}, {"trace": "x" * 50}))[0]
    assert payload(plain) == payload(with_headers) == b'{"a":1}'
    foreign = decode("t", b'{"a":1}')[0]
    assert payload(foreign) == b'{"a":1}'


async def test_subscription_handlers_get_structs_and_models(url: str, topic: str) -> None:
    orders: list[Order] = []
    invoices: list[tuple[Invoice, str]] = []

    def on_order(order: Order) -> None:
        orders.append(order)

    async def on_invoice(invoice: Invoice, msg: Message) -> None:
        invoices.append((invoice, msg.topic))

    async with (
        herald.AsyncClient(url) as hub,
        herald.AsyncClient(url, codec="msgpack") as packer,
    ):
        s1 = await hub.subscribe(f"{topic}.orders", handler=on_order)
        s2 = await hub.subscribe(f"{topic}.invoices", handler=on_invoice)
        await hub.publish(f"{topic}.orders", GOOD_ORDER, headers={"trace": "1"})
        await hub.publish(f"{topic}.orders", BAD_ORDER)
        await hub.publish(f"{topic}.orders", "not json at all")
        await packer.publish(f"{topic}.orders", {"id": 8, "placed": "2024-05-02T00:00:00Z"})
        # a foreign publisher's JSON (redis-cli, redis-py) is typed too
        foreign = b'{"id": 9, "placed": "2024-05-03T00:00:00Z"}'
        await hub.execute("PUBLISH", f"{topic}.orders", foreign)
        await hub.publish(f"{topic}.invoices", {"number": 1, "total": "9.50"})  # lax: pydantic
        await hub.publish(f"{topic}.invoices", {"number": "x"})
        await wait_for(lambda: len(orders) == 3 and len(invoices) == 1)
        await wait_for(lambda: s1.stats.invalid == 2 and s2.stats.invalid == 1)
        await s1.close()
        await s2.close()
    assert sorted(o.id for o in orders) == [7, 8, 9]  # 8 came from another client
    assert orders[0].placed == datetime.fromisoformat("2024-05-01T12:00:00+00:00")
    assert invoices == [(Invoice(number=1, total=9.5), f"{topic}.invoices")]
    assert s1.stats.handler_errors == 0  # skipped, not a failure of the handler


async def test_a_typed_responder_answers_invalid_requests_with_an_error(
    url: str, topic: str
) -> None:
    def double(order: Order) -> int:
        return order.id * 2

    async with herald.AsyncClient(url) as hub:
        async with hub.subscribe(topic, handler=double):
            assert (await hub.request(topic, GOOD_ORDER)).data == 14
            # By default the requester learns the error's type, not the validator's text...
            with pytest.raises(herald.ResponderFailed) as info:
                await hub.request(topic, BAD_ORDER)
            assert info.value.error == "DecodeError"
        # ...which a responder sends when it opts in.
        async with hub.subscribe(topic, handler=double, error_text=True):
            with pytest.raises(herald.ResponderFailed, match="invalid payload: Order"):
                await hub.request(topic, BAD_ORDER)


def test_sync_subscription_handlers_are_typed(url: str, topic: str) -> None:
    got: list[Invoice] = []
    seen = threading.Event()

    def on_invoice(invoice: Invoice) -> None:
        got.append(invoice)
        seen.set()

    with herald.Client(url) as hub:
        sub = hub.subscribe(topic, handler=on_invoice)
        hub.publish(topic, {"number": "bad"})
        hub.publish(topic, {"number": 2, "total": 1})
        assert seen.wait(5)
        sub.close()
    assert got == [Invoice(number=2, total=1.0)]
    assert sub.stats.invalid == 1


@pytest.mark.parametrize("kind", ["msgspec", "pydantic"])
async def test_durable_invalid_payloads_are_dead_lettered_never_handled(
    url: str, topic: str, kind: str
) -> None:
    handled: list[Any] = []

    async def on_order(order: Order, msg: DurableMessage) -> None:
        handled.append((order.id, msg.deliveries))

    def on_invoice(invoice: Invoice) -> None:
        handled.append((invoice.number, 1))

    handler: Any = on_order if kind == "msgspec" else on_invoice
    good: Any = GOOD_ORDER if kind == "msgspec" else {"number": 7, "total": 1.0}
    bad: Any = BAD_ORDER if kind == "msgspec" else {"number": "seven", "total": 1.0}
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for data in (good, bad, good):
            await hub.publish(topic, data)
        c = await hub.consume(topic, "g", start="all", handler=handler, max_deliver=3)
        await wait_for(lambda: len(handled) == 2 and c.stats.dead_lettered == 1)
        await asyncio.sleep(0.1)
        await c.close()
        assert handled == [(7, 1), (7, 1)]  # the invalid one never reached the handler
        assert c.stats.invalid == 1
        assert c.stats.handler_errors == 0  # and it did not count as the handler's failure
        assert c.stats.naked == 0  # nor come back: no crash loop
        (dead,) = await hub.dead_letters(topic)
        assert dead.reason.startswith("invalid payload: ")
        assert ("Order" if kind == "msgspec" else "Invoice") in dead.reason
        assert dead.message.data == bad
        assert dead.deliveries == 1


def test_sync_consumer_typed_handler(url: str, topic: str) -> None:
    got: list[int] = []
    done = threading.Event()

    def on_order(order: Order) -> None:
        got.append(order.id)
        if len(got) == 2:
            done.set()

    with herald.Client(url) as hub:
        hub.declare(topic, durable=True)
        for data in (GOOD_ORDER, BAD_ORDER, {**GOOD_ORDER, "id": 8}):
            hub.publish(topic, data)
        c = hub.consume(topic, "g", start="all", handler=on_order)
        assert done.wait(5)
        deadline = time.monotonic() + 5
        while c.stats.dead_lettered < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        c.close()
        assert got == [7, 8]
        assert c.stats.invalid == 1
        assert [d.reason[:16] for d in hub.dead_letters(topic)] == ["invalid payload:"]
