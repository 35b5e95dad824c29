"""Message types and event dispatch: ``msg.type`` from the payload's class or ``type=``, and
handlers annotated with a union of Structs / models getting the member the type names."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pydantic
import pytest

import herald
from herald import DurableMessage, Message


class OrderCreated(msgspec.Struct):
    id: int
    total: float


class UserLoggedIn(msgspec.Struct):
    user: str


class Refund(pydantic.BaseModel):
    order: int


class Shipped(msgspec.Struct, tag="order.shipped"):
    id: int


class Placed(msgspec.Struct, tag=True):
    id: int


class OtherOrderCreated(msgspec.Struct, tag="OrderCreated"):
    id: int


Event = OrderCreated | UserLoggedIn | Refund


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def sync_wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def test_message_type_from_payload_class_or_type_argument(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        await hub.publish(topic, OrderCreated(1, 9.5))
        await hub.publish(topic, Refund(order=1))
        await hub.publish(topic, Shipped(1))
        await hub.publish(topic, Placed(1))
        await hub.publish(topic, {"id": 1}, type="OrderCreated", headers={"k": "v"})
        await hub.publish(topic, OrderCreated(1, 1.0), type="Override")
        await hub.publish(topic, {"id": 1})
        await hub.publish(topic, UserLoggedIn("bob"), envelope=False)  # bare: no type
        await hub.publish_many(topic, [OrderCreated(2, 1.0), {"x": 1}, Refund(order=2)])
        await hub.publish_many(topic, [{"a": 1}], type="Batch")
        got = [await sub.next(5) for _ in range(12)]
    assert [m.type for m in got] == [
        "OrderCreated",
        "Refund",
        "order.shipped",
        "Placed",
        "OrderCreated",
        "Override",
        None,
        None,  # bare
        "OrderCreated",
        None,
        "Refund",
        "Batch",
    ]
    assert got[4].headers == {"k": "v", "herald-type": "OrderCreated"}
    assert got[7].foreign
    assert got[7].data == b'{"user":"bob"}'


async def test_type_argument_is_checked(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        with pytest.raises(herald.ConfigurationError, match="carries no type"):
            await hub.publish(topic, {"a": 1}, type="T", envelope=False)
        with pytest.raises(herald.ConfigurationError, match="invalid message type"):
            await hub.publish(topic, {"a": 1}, type="")
        with pytest.raises(herald.ConfigurationError, match="invalid message type"):
            await hub.publish(topic, {"a": 1}, type="a\nb")
        with pytest.raises(TypeError, match="a message type is a str"):
            await hub.publish(topic, {"a": 1}, type=3)  # type: ignore[call-overload]
        with pytest.raises(herald.ReservedName):
            await hub.publish(topic, {"a": 1}, headers={"herald-type": "T"})


async def test_union_handler_gets_the_member_its_type_names(url: str, topic: str) -> None:
    got: list[tuple[str, Any]] = []

    async def on_event(event: Event, msg: Message) -> None:
        got.append((type(event).__name__, msg.type))

    async with herald.AsyncClient(url) as hub:
        sub = await hub.subscribe(topic, handler=on_event)
        await hub.publish(topic, OrderCreated(1, 2.5))
        await hub.publish(topic, {"user": "ann"}, type="UserLoggedIn")
        await hub.publish(topic, Refund(order=3))
        # not delivered: no type, an unknown type, a type whose payload does not fit
        await hub.publish(topic, {"id": 1, "total": 2.0})
        await hub.publish(topic, {"id": 1, "total": 2.0}, type="Cancelled")
        await hub.publish(topic, {"user": 5}, type="UserLoggedIn")
        await hub.execute("PUBLISH", topic, b'{"user": "foreign"}')
        await wait_for(lambda: sub.stats.invalid == 4)
        await hub.publish(topic, UserLoggedIn("last"))
        await wait_for(lambda: len(got) == 4)
        await sub.close()
    assert got == [
        ("OrderCreated", "OrderCreated"),
        ("UserLoggedIn", "UserLoggedIn"),
        ("Refund", "Refund"),
        ("UserLoggedIn", "UserLoggedIn"),
    ]
    assert sub.stats.handler_errors == 0


async def test_tagged_union_decodes_foreign_payloads_by_their_tag(url: str, topic: str) -> None:
    got: list[Any] = []

    def on_event(event: Shipped | Placed) -> None:
        got.append(event)

    async with herald.AsyncClient(url) as hub:
        sub = await hub.subscribe(topic, handler=on_event, foreign="json")
        await hub.execute("PUBLISH", topic, b'{"type": "order.shipped", "id": 1}')
        await hub.execute("PUBLISH", topic, b'{"type": "Placed", "id": 2}')
        await hub.execute("PUBLISH", topic, b'{"type": "Nope", "id": 3}')
        await hub.publish(topic, Placed(4))
        await wait_for(lambda: len(got) == 3 and sub.stats.invalid == 1)
        await sub.close()
    assert got == [Shipped(1), Placed(2), Placed(4)]


async def test_recoverable_union_handler(url: str, topic: str) -> None:
    got: list[Any] = []

    def on_event(event: OrderCreated | UserLoggedIn) -> None:
        got.append(event)

    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, history=100)
        await hub.publish(topic, OrderCreated(1, 1.0))
        await hub.publish(topic, UserLoggedIn("a"))
        sub = await hub.subscribe(topic, handler=on_event, last=2)
        await hub.publish(topic, {"x": 1}, type="Other")
        await hub.publish(topic, OrderCreated(2, 2.0))
        await wait_for(lambda: len(got) == 3 and sub.stats.invalid == 1)
        (stored, *_) = await hub.history(topic)
        await sub.close()
    assert got == [OrderCreated(1, 1.0), UserLoggedIn("a"), OrderCreated(2, 2.0)]
    assert stored.type == "OrderCreated"


async def test_durable_union_handler_dead_letters_untyped_and_unknown(url: str, topic: str) -> None:
    got: list[Any] = []

    async def on_event(event: Event, msg: DurableMessage) -> None:
        got.append((event, msg.type))

    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish(topic, OrderCreated(1, 1.0))
        await hub.publish(topic, {"id": 1}, type="Unknown")
        await hub.publish(topic, {"id": 1})
        await hub.publish(topic, Refund(order=9))
        c = await hub.consume(topic, "g", start="all", handler=on_event)
        await wait_for(lambda: len(got) == 2 and c.stats.dead_lettered == 2)
        await c.close()
        dead = await hub.dead_letters(topic)
        (stored, *_) = await hub.history(topic)
    assert got == [(OrderCreated(1, 1.0), "OrderCreated"), (Refund(order=9), "Refund")]
    assert c.stats.invalid == 2
    assert c.stats.handler_errors == 0
    assert c.stats.naked == 0
    assert sorted(d.reason for d in dead) == [
        "invalid payload: message type 'Unknown' is not one of OrderCreated, UserLoggedIn, Refund",
        "invalid payload: the message has no type; expected one of OrderCreated, "
        "UserLoggedIn, Refund",
    ]
    assert {d.message.type for d in dead} == {"Unknown", None}  # the dead letter keeps it
    assert stored.type == "OrderCreated"


def test_threaded_client_union_handlers(url: str, topic: str) -> None:
    live: list[Any] = []
    durable: list[Any] = []
    done = threading.Event()

    def on_live(event: OrderCreated | UserLoggedIn) -> None:
        live.append(event)

    def on_durable(event: OrderCreated | UserLoggedIn, msg: DurableMessage) -> None:
        durable.append((event, msg.type))
        if len(durable) == 2:
            done.set()

    with herald.Client(url) as hub:
        sub = hub.subscribe(topic, handler=on_live)
        hub.publish(topic, OrderCreated(1, 1.0))
        hub.publish(topic, {"user": "x"}, type="UserLoggedIn")
        hub.publish(topic, {"user": "x"}, type="Nope", confirm=True)
        hub.publish_many(topic, [UserLoggedIn("y")])
        sync_wait(lambda: len(live) == 3 and sub.stats.invalid == 1)
        sub.close()
        hub.declare(f"{topic}.d", durable=True)
        hub.publish(f"{topic}.d", UserLoggedIn("z"))
        hub.publish(f"{topic}.d", {"id": 2, "total": 1}, type="OrderCreated")
        c = hub.consume(f"{topic}.d", "g", start="all", handler=on_durable)
        assert done.wait(5)
        c.close()
    assert live == [OrderCreated(1, 1.0), UserLoggedIn("x"), UserLoggedIn("y")]
    assert durable == [(UserLoggedIn("z"), "UserLoggedIn"), (OrderCreated(2, 1.0), "OrderCreated")]


def _h_int(x: int) -> None: ...
def _h_dict(x: dict[str, Any]) -> None: ...
def _h_optional(x: OrderCreated | None) -> None: ...
def _h_same_name(x: OrderCreated | OtherOrderCreated) -> None: ...
def _h_mixed(x: OrderCreated | dict[str, Any]) -> None: ...


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (_h_int, "decodes payloads into msgspec Structs"),
        (_h_dict, "use a msgspec Struct"),
        (_h_optional, "NoneType is not a msgspec Struct"),
        (_h_same_name, "same type name 'OrderCreated'"),
        (_h_mixed, "is not a msgspec Struct"),
    ],
)
async def test_annotations_herald_cannot_honour_are_refused_at_subscribe(
    url: str, topic: str, handler: Callable[..., None], reason: str
) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(f"{topic}.d", durable=True)
        with pytest.raises(herald.UnsupportedAnnotation, match=reason) as info:
            hub.subscribe(topic, handler=handler)
        assert info.value.handler is handler
        with pytest.raises(herald.UnsupportedAnnotation, match=reason):
            hub.consume(f"{topic}.d", "g", handler=handler)
    with herald.Client(url) as sync_hub:
        with pytest.raises(herald.UnsupportedAnnotation):
            sync_hub.subscribe(topic, handler=handler)
        with pytest.raises(herald.UnsupportedAnnotation):
            sync_hub.consume(f"{topic}.d", "g", handler=handler)
        assert sync_hub.execute("PUBSUB", "NUMSUB", topic)[1] == 0  # nothing left subscribed


async def test_message_annotations_still_get_the_message(url: str, topic: str) -> None:
    got: list[Any] = []

    def plain(msg: Message | DurableMessage) -> None:
        got.append(msg)

    def anything(msg: Any) -> None:
        got.append(msg)

    def optional(msg: Message | None = None) -> None:
        got.append(msg)

    async with herald.AsyncClient(url) as hub:
        s1 = await hub.subscribe(topic, handler=plain)
        s2 = await hub.subscribe(topic, handler=anything)
        s3 = await hub.subscribe(topic, handler=optional)
        await hub.publish(topic, OrderCreated(1, 1.0))
        await wait_for(lambda: len(got) == 3)
        for s in (s1, s2, s3):
            await s.close()
    assert all(isinstance(m, Message) and m.type == "OrderCreated" for m in got)


async def test_gateway_publishes_with_a_message_type(url: str, topic: str) -> None:
    import httpx

    from herald.gateway import GatewayConfig, create_app
    from herald.gateway.frames import message_dict

    async with herald.AsyncClient(url) as hub:
        app = create_app(hub, GatewayConfig())
        gw = app.state.gateway
        await gw.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://localhost") as api,
                hub.subscribe(topic) as sub,
            ):
                r = await api.post(f"/topics/{topic}?type=OrderCreated", json={"id": 1})
                assert r.status_code == 200, r.text
                bad = await api.post(f"/topics/{topic}?type=", json={"id": 1})
                assert bad.status_code == 400
                assert bad.json()["error"] == "bad_request"
                msg = await sub.next(5)
        finally:
            await gw.stop()
    assert msg.type == "OrderCreated"
    frame = message_dict(msg)
    assert frame["message_type"] == "OrderCreated"
    assert frame["headers"] == {"herald-type": "OrderCreated"}


async def test_requests_and_replies_carry_their_type(url: str, topic: str) -> None:
    def respond(event: OrderCreated | UserLoggedIn) -> Any:
        if isinstance(event, OrderCreated):
            return UserLoggedIn(f"buyer of {event.id}")
        return {"plain": True}

    async with herald.AsyncClient(url) as hub, hub.subscribe(topic, handler=respond):
        reply = await hub.request(topic, OrderCreated(7, 1.0))
        assert (reply.type, reply.data) == ("UserLoggedIn", {"user": "buyer of 7"})
        reply = await hub.request(topic, UserLoggedIn("x"))
        assert (reply.type, reply.data) == (None, {"plain": True})
        with pytest.raises(herald.ResponderFailed):
            await hub.request(topic, {"id": 1, "total": 1.0})  # no type: invalid


def test_a_message_type_is_any_text_without_control_characters() -> None:
    from herald._core.typed import check_type

    # The gateway's OpenAPI schema says the same (pattern): any character but a control one.
    for ok in ("OrderCreated", "order created", "Ünïcode.v2", "\U000fc36d", "x" * 200):
        assert check_type(ok) == ok
    for bad in ("", "x" * 201, "a\nb", "\x1b[31m", "a\x85b"):
        with pytest.raises(herald.ConfigurationError):
            check_type(bad)
    with pytest.raises(TypeError):
        check_type(3)
