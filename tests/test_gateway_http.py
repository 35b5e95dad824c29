"""The gateway's HTTP API through httpx's ASGI transport, on a real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

import herald
from herald.gateway import GatewayConfig, create_app
from herald.gateway.fanout import RESUME_SUPPORTED
from herald.gateway.state import Gateway

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def hub(url: str) -> AsyncIterator[herald.AsyncClient]:
    async with herald.AsyncClient(url, policy_refresh=0.1) as client:
        yield client


@pytest.fixture
async def api(hub: herald.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(hub, GatewayConfig(max_message_size=1024, history_limit=50))
    gw: Gateway = app.state.gateway
    await gw.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client
    await gw.stop()


async def test_publish_json_text_and_bytes_with_headers_and_trace_context(
    api: httpx.AsyncClient, hub: herald.AsyncClient, topic: str
) -> None:
    async with hub.subscribe(topic) as sub:
        r = await api.post(
            f"/topics/{topic}",
            json={"n": 1},
            headers={"traceparent": TRACEPARENT, "tracestate": "a=b", "X-Herald-Header-k": "v"},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"topic": topic, "receivers": 1}
        assert r.headers["traceparent"] == TRACEPARENT
        r = await api.post(
            f"/topics/{topic}", content="héllo", headers={"content-type": "text/plain"}
        )
        assert r.status_code == 200
        r = await api.post(f"/topics/{topic}", content=b"\xff\x00")
        assert r.status_code == 200
        got = [await sub.next(2.0) for _ in range(3)]
    assert got[0].data == {"n": 1}
    assert got[0].headers == {"traceparent": TRACEPARENT, "tracestate": "a=b", "k": "v"}
    assert got[1].data == "héllo"
    assert got[2].data == b"\xff\x00"


async def test_bad_input_gets_clear_errors(api: httpx.AsyncClient, topic: str) -> None:
    r = await api.post("/topics/bad*topic", json=1)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_topic")
    r = await api.post(
        f"/topics/{topic}", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert (r.status_code, r.json()["error"]) == (400, "bad_json")
    r = await api.post(
        f"/topics/{topic}", content=b"[" * 1000, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await api.post(f"/topics/{topic}", content=b"x" * 2000)
    assert (r.status_code, r.json()["error"]) == (413, "too_large")
    r = await api.post(f"/topics/{topic}", content=b"\xff", headers={"content-type": "text/plain"})
    assert r.status_code == 400
    r = await api.get(f"/topics/{topic}/messages")
    assert (r.status_code, r.json()["error"]) == (404, "no_history")
    r = await api.get(f"/topics/{topic}/dead")
    assert r.status_code == 409
    # A malformed traceparent is not copied.
    r = await api.post(f"/topics/{topic}", json=1, headers={"traceparent": "00-zz"})
    assert r.status_code == 200


async def test_durable_history_pages_and_topic_listing(
    api: httpx.AsyncClient, hub: herald.AsyncClient, topic: str
) -> None:
    await hub.declare(topic, durable=True)
    for i in range(5):
        r = await api.post(f"/topics/{topic}", json={"i": i})
        assert r.status_code == 200
        assert isinstance(r.json()["offset"], str)
    page = (await api.get(f"/topics/{topic}/messages", params={"limit": 2})).json()
    assert [m["data"]["i"] for m in page["messages"]] == [0, 1]
    page2 = (await api.get(f"/topics/{topic}/messages", params={"after": page["next"]})).json()
    assert [m["data"]["i"] for m in page2["messages"]] == [2, 3, 4]
    assert (await api.get(f"/topics/{topic}/messages", params={"limit": 51})).status_code == 400
    assert (await api.get(f"/topics/{topic}/messages", params={"after": "x"})).status_code == 400
    async with hub.subscribe(topic):
        listing = (await api.get("/topics")).json()
    entry = next(t for t in listing["topics"] if t["topic"] == topic)
    assert entry["kind"] == "durable"
    assert entry["policy"]["durable"] is True
    assert entry["subscribers"] == 1


@pytest.mark.skipif(
    not RESUME_SUPPORTED,
    reason="recoverable topics (declare(history=...)) are not in this Herald",
)
async def test_recoverable_history_pages_by_offset(
    api: httpx.AsyncClient, hub: herald.AsyncClient, topic: str
) -> None:
    await hub.declare(topic, history=100)
    for i in range(1, 6):
        r = await api.post(f"/topics/{topic}", json={"i": i})
        assert r.json()["offset"] == i
    page = (await api.get(f"/topics/{topic}/messages", params={"after": 2, "limit": 2})).json()
    assert [(m["offset"], m["data"]["i"]) for m in page["messages"]] == [(3, 3), (4, 4)]
    assert page["next"] == 4
    rest = (await api.get(f"/topics/{topic}/messages", params={"after": 4})).json()
    assert [m["offset"] for m in rest["messages"]] == [5]
    listing = (await api.get(f"/topics/{topic}")).json()
    assert listing["kind"] == "recoverable"
    assert listing["policy"]["history"] == 100


async def test_dead_letters_are_listed_and_replayed(
    api: httpx.AsyncClient, hub: herald.AsyncClient, topic: str
) -> None:
    await hub.declare(topic, durable=True)
    await hub.publish(topic, {"bad": True})
    async with hub.consume(topic, "workers", start="all") as consumer:
        msg = await consumer.next(5.0)
        await msg.term("cannot handle")
    detail = (await api.get(f"/topics/{topic}")).json()
    assert detail["dead_letters"] == 1
    assert detail["groups"][0]["name"] == "workers"
    dead = (await api.get(f"/topics/{topic}/dead")).json()["dead_letters"]
    assert len(dead) == 1
    assert dead[0]["reason"] == "cannot handle"
    assert dead[0]["message"]["data"] == {"bad": True}
    r = await api.post(f"/topics/{topic}/dead/replay", json={"offsets": [dead[0]["offset"]]})
    assert list(r.json()["replayed"]) == [dead[0]["offset"]]
    assert (await api.get(f"/topics/{topic}/dead")).json()["dead_letters"] == []


async def test_health_readiness_stats_metrics_and_openapi(
    api: httpx.AsyncClient, topic: str
) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    await api.post(f"/topics/{topic}", json=1)
    stats = (await api.get("/stats")).json()
    assert stats["gateway"]["published"] == 1
    assert stats["client"]["connected"] is True
    assert len(stats["rates"]["series"]) == 60
    metrics = (await api.get("/metrics")).text
    assert "herald_gateway_published_total 1.0" in metrics
    for name in ("delivered", "dropped", "gaps", "recovered", "reconnects"):
        assert f"herald_gateway_{name}_total" in metrics
    assert 'herald_gateway_clients{transport="websocket"} 0.0' in metrics
    doc = (await api.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert "/topics/{topic}" in doc["paths"]
    page = await api.get("/")
    assert page.status_code == 200
    assert "Live tail" in page.text
    assert (await api.get("/static/app.js")).status_code == 200


async def test_rates_follow_the_messages(
    api: httpx.AsyncClient, hub: herald.AsyncClient, topic: str
) -> None:
    await api.get("/stats")  # switches the rate monitor on
    for _ in range(20):
        await hub.publish(topic, 1)
    await hub.flush()
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        series = (await api.get("/stats")).json()["rates"]["series"]
        listed = {t["topic"] for t in (await api.get("/topics")).json()["topics"]}
        if sum(n for _, n in series) >= 20 and topic in listed:
            break
        assert asyncio.get_running_loop().time() < deadline, series
        await asyncio.sleep(0.2)


async def test_readyz_fails_when_the_server_is_gone(own_server: herald.EmbeddedServer) -> None:
    async with herald.AsyncClient(own_server.url, probe_interval=0.2) as hub:
        app = create_app(hub, GatewayConfig(ready_timeout=0.5, ready_cache=0))
        gw: Gateway = app.state.gateway
        await gw.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as api:
            assert (await api.get("/readyz")).status_code == 200
            own_server.pause()
            try:
                r = await api.get("/readyz")
                assert r.status_code == 503
                assert r.json()["status"] == "unavailable"
            finally:
                own_server.resume()
        await gw.stop()


async def test_topics_lists_subscribed_undeclared_topics_at_once(
    api: httpx.AsyncClient, url: str, topic: str
) -> None:
    # Subscribed by another client, never declared, nothing published: only the server knows.
    async with herald.AsyncClient(url) as other, other.subscribe(topic, f"{topic}.*"):
        listing = (await api.get("/topics")).json()  # the first request: no rate watch before
    entry = next(t for t in listing["topics"] if t["topic"] == topic)
    assert entry == {
        "topic": topic,
        "kind": "live",
        "policy": {},
        "subscribers": 1,
        "gateway_clients": 0,
        "rate": 0.0,
    }
    assert listing["patterns"] >= 1
    assert not any(t["topic"].startswith("_herald.") for t in listing["topics"])
