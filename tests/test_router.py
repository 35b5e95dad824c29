"""Content-based routing: rules, templates, the default route, counters, plain Redis
publishers, and a durable router that loses nothing across a restart."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis

import herald
from herald import Message, Router
from herald._core.rules import Target, condition
from herald._core.wire import decode
from herald.testing import LocalCluster


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _msg(data: Any, topic: str = "orders", headers: dict[str, str] | None = None) -> Message:
    msg = decode(topic, herald._core.wire.Encoder().envelope(data, headers))[0]
    return msg


def test_conditions() -> None:
    order = _msg(
        {"total": 150, "customer": {"country": "NZ"}, "tags": ["vip"], "sku": "A-7", "n": "12"},
        headers={"herald-type": "OrderCreated", "tenant": "t1"},
    )
    holds = [
        "total > 100",
        "total >= 150",
        "total != 3",
        'customer.country == "NZ"',
        "customer.country == NZ",
        "customer.country in NZ,AU",
        'customer.country in ["NZ", "AU"]',
        "customer.country not in US",
        "tags contains vip",
        "tags.0 == vip",
        "sku ~ A-*",
        "sku exists",
        "n > 10",  # text holding a number compares as a number
        "$topic == orders",
        "$topic ~ ord*",
        "$type == OrderCreated",
        "$header.tenant == t1",
        "total > 100 and customer.country == NZ",
    ]
    fails = [
        "total < 100",
        "missing == 1",
        "missing != 1",  # a missing field matches nothing, != included
        "sku > 3",  # not comparable
        "coupon exists",
        "tags.5 == x",
        "$header.other == x",
        "total > 100 and customer.country == AU",
    ]
    assert [t for t in holds if not condition(t)(order)] == []
    assert [t for t in fails if condition(t)(order)] == []
    foreign_entry = Message("orders", {b"total": b"150", b"region": b"eu"}, b"", 0, b"", 0, 0, None)
    assert condition("total > 100 and region == eu")(foreign_entry)
    assert Target("orders.{region}").topic(foreign_entry) == "orders.eu"
    assert Target("orders.{customer.country}").topic(order) == "orders.NZ"
    assert Target("orders.{missing}").topic(order) is None
    assert Target("orders.{tags}").topic(order) is None  # a list: not a topic part
    assert Target("o.{x}").topic(_msg({"x": "a*"})) is None  # no pattern characters
    # a value that would make no valid topic, or a reply inbox, does not fill the template
    assert Target("o.{x}").topic(_msg({"x": "a\x00b"})) is None
    assert Target("o.{x}").topic(_msg({"x": "a\x1bb"})) is None
    assert Target("o.{x}").topic(_msg({"x": "x" * 2000})) is None
    assert Target("{x}").topic(_msg({"x": "_herald.inbox.abc"})) is None


async def test_a_template_that_would_loop_does_not_match(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        router = Router(hub, f"{topic}.*")
        router.route(to=f"{topic}.{{kind}}")
        router.default(f"{topic}")
        assert router.targets(_msg({"kind": "x"}, f"{topic}.in")) == ("default", [topic])
        assert router.targets(_msg({}, f"{topic}.in")) == ("default", [topic])
        durable = Router(hub, topic, group="g")
        durable.route(to="{kind}")
        assert durable.targets(_msg({"kind": topic})) is None
        assert durable.targets(_msg({"kind": "other"})) == ("rule 1", ["other"])


@pytest.mark.parametrize(
    "text", ["total", "total >", "> 3", "a >> 3", "a => b", "a..b == 1", "$nope == 1", "$header"]
)
def test_bad_conditions_are_configuration_errors(text: str) -> None:
    with pytest.raises(herald.ConfigurationError):
        condition(text)


async def test_router_declaration_errors(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        router = Router(hub, topic)
        with pytest.raises(herald.ConfigurationError, match="loop"):
            router.route(to=topic)
        with pytest.raises(herald.ConfigurationError, match="loop"):
            Router(hub, f"{topic}.*").route(to=f"{topic}.big")
        with pytest.raises(herald.ConfigurationError, match="at least one target"):
            router.route("a == 1", to=[])
        router.route("a == 1", to="x")
        with pytest.raises(herald.ConfigurationError, match="exists already"):
            router.route("a == 1", to="y")
        with pytest.raises(herald.ConfigurationError, match="needs a rule"):
            await Router(hub, topic).start()
        r = Router(hub, topic, group="g")
        r.default("x")
        with pytest.raises(herald.ConfigurationError, match="not durable"):
            await r.start()
        with pytest.raises(herald.ConfigurationError, match="foreign"):
            Router(hub, topic, foreign="xml")  # type: ignore[arg-type]


class OrderCreated(msgspec.Struct):
    id: int
    total: float
    region: str


class Refunded(msgspec.Struct):
    id: int
    region: str


async def test_durable_router_rules_default_and_counters(url: str, topic: str) -> None:
    src = f"{topic}.in"
    async with herald.AsyncClient(url) as hub:
        await hub.declare(src, durable=True)
        for t in ("big", "eu", "rest", "audit"):
            await hub.declare(f"{topic}.{t}", durable=True)
        router = Router(hub, src, group="router")
        router.route(lambda m: m.data["total"] > 100, to=[f"{topic}.big", f"{topic}.audit"])
        router.route("region == eu", to=f"{topic}.{{region}}", name="europe")
        router.default(f"{topic}.rest")
        await router.start()
        await hub.publish(src, OrderCreated(1, 500.0, "us"), headers={"trace": "x"})
        await hub.publish(src, {"id": 2, "total": 5, "region": "eu"})
        await hub.publish(src, {"id": 3, "total": 5, "region": "us"})
        await hub.publish(src, [1, 2, 3])  # no total: the lambda raises, nothing matches
        await wait_for(lambda: router.stats.routed == 4)
        await router.stop()
        got = {t: await hub.history(f"{topic}.{t}") for t in ("big", "eu", "rest", "audit")}
    assert router.counters == {
        "rule 1": 1,
        "europe": 1,
        "default": 2,
        "unrouted": 0,
    }
    assert router.stats.published == 5
    big = got["big"][0]
    assert big.data == {"id": 1, "total": 500.0, "region": "us"}
    assert big.type == "OrderCreated"  # the type is kept
    assert big.headers == {"trace": "x", "herald-type": "OrderCreated"}
    assert [m.data["id"] for m in got["audit"]] == [1]
    assert [m.data["id"] for m in got["eu"]] == [2]
    assert [m.data for m in got["rest"]] == [{"id": 3, "total": 5, "region": "us"}, [1, 2, 3]]


async def test_durable_router_without_default_dead_letters_unrouted(url: str, topic: str) -> None:
    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        router = Router(hub, topic, group="router")
        router.route("total > 100", to=f"{topic}.big")
        async with router:
            await hub.publish(topic, {"total": 5})
            await hub.publish(topic, {"total": 500})
            await wait_for(lambda: router.stats.received == 2)
            deadline = time.monotonic() + 5
            while not (dead := await hub.dead_letters(topic)):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
    assert router.counters == {"total > 100": 1, "default": 0, "unrouted": 1}
    assert [(d.reason, d.message.data) for d in dead] == [("no route", {"total": 5})]


async def test_a_restarted_router_loses_nothing(url: str, topic: str) -> None:
    """A router stopped midway (messages in flight) and one started later in the same group
    route every message published before, during and after; durable targets hold each once."""
    src, even, odd = f"{topic}.in", f"{topic}.even", f"{topic}.odd"
    n = 300

    def make(hub: herald.AsyncClient) -> Router:
        r = Router(hub, src, group="router", concurrency=4)
        r.route("parity == 0", to=even)
        r.default(odd)
        return r

    async with herald.AsyncClient(url) as hub:
        for t in (src, even, odd):
            await hub.declare(t, durable=True)
        async with herald.AsyncClient(url) as first_hub:
            first = make(first_hub)
            await first.start()
            for i in range(n // 2):
                await hub.publish(src, {"i": i, "parity": i % 2}, confirm=False)
            await wait_for(lambda: first.stats.routed >= 20)
            await first.stop()  # mid-stream: the rest waits in the group
        for i in range(n // 2, n):
            await hub.publish(src, {"i": i, "parity": i % 2}, confirm=False)
        await hub.flush()
        second = make(hub)
        async with second:
            await wait_for(lambda: first.stats.routed + second.stats.routed >= n)
        routed = {t: await hub.history(t, limit=1000) for t in (even, odd)}
    assert first.stats.routed < n
    got = Counter(m.data["i"] for msgs in routed.values() for m in msgs)
    assert sorted(got) == list(range(n))  # none lost
    assert set(got.values()) == {1}  # none twice (msg_id on durable targets)
    assert all(m.data["i"] % 2 == 0 for m in routed[even])
    assert all(m.data["i"] % 2 == 1 for m in routed[odd])


async def test_live_router_routes_plain_redis_publishers_by_content(url: str, topic: str) -> None:
    src = f"{topic}.in"
    plain = redis.Redis.from_url(url)
    async with herald.AsyncClient(url) as hub, hub.subscribe(f"{topic}.out.*") as out:
        router = Router(hub, src)
        router.route('sector == "tech"', to=f"{topic}.out.tech")
        router.route(to=f"{topic}.out.{{sector}}")
        router.default(f"{topic}.out.unrouted")
        async with router:
            plain.publish(src, json.dumps({"symbol": "ABC", "sector": "tech"}))
            plain.publish(src, json.dumps({"symbol": "XYZ", "sector": "energy"}))
            plain.publish(src, b"not json")  # not lost: no rule sees content, the default
            plain.publish(src, json.dumps({"symbol": "NOS"}))
            got = [await out.next(5) for _ in range(4)]
    plain.close()
    assert [(m.topic, m.data) for m in got] == [
        (f"{topic}.out.tech", {"symbol": "ABC", "sector": "tech"}),
        (f"{topic}.out.energy", {"symbol": "XYZ", "sector": "energy"}),
        (f"{topic}.out.unrouted", b"not json"),
        (f"{topic}.out.unrouted", {"symbol": "NOS"}),
    ]
    assert router.counters == {
        'sector == "tech"': 1,
        "rule 2": 1,
        "default": 2,
        "unrouted": 0,
    }


async def test_durable_router_routes_entries_a_plain_program_wrote(url: str, topic: str) -> None:
    """redis-py XADDs into the topic's stream (fields, or a JSON ``m``): routed by content."""
    from herald._core.streams import stream_key

    async with herald.AsyncClient(url) as hub:
        await hub.declare(topic, durable=True)
        for t in ("eu", "rest"):
            await hub.declare(f"{topic}.{t}", durable=True)
        router = Router(hub, topic, group="router", start="all")
        router.route("region == eu and total > 100", to=f"{topic}.eu")
        router.default(f"{topic}.rest")
        plain = redis.Redis.from_url(url)
        key = stream_key(topic)
        plain.xadd(key, {"region": "eu", "total": "150"})
        plain.xadd(key, {"m": json.dumps({"region": "eu", "total": 500})})
        plain.xadd(key, {"region": "eu", "total": "50"})
        plain.close()
        async with router:
            await wait_for(lambda: router.stats.routed == 3)
        eu = await hub.history(f"{topic}.eu")
        rest = await hub.history(f"{topic}.rest")
    assert [m.data for m in eu] == [
        {"region": "eu", "total": "150"},
        {"region": "eu", "total": 500},
    ]
    assert [m.data for m in rest] == [{"region": "eu", "total": "50"}]


async def test_durable_router_and_union_dispatch_on_a_cluster(cluster: LocalCluster) -> None:
    """Source and targets in different slots; the copies keep their type, and a union
    handler downstream dispatches on it."""
    got: list[Any] = []

    def on_order(order: OrderCreated | Refunded) -> None:
        got.append(order)

    src = f"rt{time.monotonic_ns()}"
    async with herald.AsyncClient(cluster.url) as hub:
        for t in (src, f"{src}.eu", f"{src}.other"):
            await hub.declare(t, durable=True)
        router = Router(hub, src, group="router")
        router.route("region == eu", to=f"{src}.eu")
        router.default(f"{src}.other")
        async with router, hub.consume(f"{src}.eu", "g", handler=on_order, start="all"):
            for i in range(20):
                region = "eu" if i % 2 else "us"
                await hub.publish(src, OrderCreated(i, 1.0, region))
                await hub.publish(src, Refunded(i, region))
            await wait_for(lambda: len(got) == 20)
        other = await hub.history(f"{src}.other")
    assert sorted((type(o).__name__, o.id) for o in got) == sorted(
        [("OrderCreated", i) for i in range(1, 20, 2)] + [("Refunded", i) for i in range(1, 20, 2)]
    )
    assert len(other) == 20
    assert {m.type for m in other} == {"OrderCreated", "Refunded"}


async def test_a_copy_that_cannot_be_published_is_never_acked(url: str, topic: str) -> None:
    """Route, then ack: a message whose copy fails is delivered again, then dead-lettered
    (max_deliver), never acked as routed; the messages around it are routed."""
    async with (
        herald.AsyncClient(url) as hub,
        herald.AsyncClient(url, max_message_size=1024) as small,  # the router's client
    ):
        await hub.declare(topic, durable=True)
        await hub.declare(f"{topic}.out", durable=True)
        router = Router(small, topic, group="router", max_deliver=2)
        router.default(f"{topic}.out")
        async with router:
            await hub.publish(topic, {"n": 1})
            await hub.publish(topic, {"n": 2, "pad": "x" * 2000})  # its copy is too large
            await hub.publish(topic, {"n": 3})
            deadline = time.monotonic() + 15
            while not (dead := await hub.dead_letters(topic)):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        out = await hub.history(f"{topic}.out")
    assert [m.data["n"] for m in out] == [1, 3]
    assert router.stats.failed == 2
    assert [d.message.data["n"] for d in dead] == [2]
    assert dead[0].reason.startswith("handler failed on delivery 2 of 2: MessageTooLarge")
