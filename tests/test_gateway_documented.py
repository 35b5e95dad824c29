"""Every WebSocket request, frame type and error code that docs/gateway.md lists, walked from
its tables and produced by a real gateway on real Valkey: a row without a case here fails, and
so does a case the docs do not list. The few that a test cannot provoke say why, and which test
covers them instead."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect

import herald
from conftest import GatewayFactory as Factory
from herald.gateway import AuthConfig

DOC = Path(__file__).parent.parent / "docs" / "gateway.md"
KEY = "d" * 64
AUTH = AuthConfig(key=KEY, audience="herald", issuer="docs", leeway=0)


def table(heading: str) -> list[str]:
    """The first column of the table under ``### heading``, without its backticks."""
    text = DOC.read_text()
    section = text[text.index(f"### {heading}\n") :]
    rows: list[str] = []
    started = False
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            cell = line.split("|")[1].strip()
            if cell.startswith("`"):
                rows.append(cell.strip("`"))
        elif started:
            break
    assert rows, heading
    return rows


def token(grants: dict[str, Any], exp: float = 600) -> str:
    claims = {"sub": "docs", "aud": "herald", "iss": "docs", "exp": int(time.time() + exp)}
    return jwt.encode({**claims, "herald": grants}, KEY, algorithm="HS256")


async def frames(ws: ClientConnection, n: int = 1) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(out) < n:
            data = json.loads(await ws.recv())
            out.extend(data if isinstance(data, list) else [data])
    return out


async def ask(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    return (await frames(ws))[0]


class World:
    """The gateways and names one test uses."""

    def __init__(self, factory: Factory, hub: herald.AsyncClient, topic: str) -> None:
        self.open = factory()
        self.secured = factory(auth=AUTH)
        self.small = factory(max_subscriptions=1, publish_rate=1, publish_burst=1)
        self.hub = hub
        self.topic = topic

    def ws(self, gw: Any = None, token_: str | None = None) -> Any:
        url = (gw or self.open).ws_url
        return connect(url + (f"?token={token_}" if token_ else ""))


Case = Callable[[World], Awaitable[dict[str, Any]]]


# -- requests: each op and its answer --------------------------------------------------------


async def op_subscribe(w: World) -> dict[str, Any]:
    async with w.ws() as ws:
        return await ask(ws, op="subscribe", topic=w.topic, id=1)


async def op_unsubscribe(w: World) -> dict[str, Any]:
    async with w.ws() as ws:
        await ask(ws, op="subscribe", topic=w.topic)
        return await ask(ws, op="unsubscribe", topic=w.topic, id=1)


async def op_publish(w: World) -> dict[str, Any]:
    async with w.ws() as ws:
        return await ask(ws, op="publish", topic=w.topic, data={"x": 1}, id=1)


async def op_auth(w: World) -> dict[str, Any]:
    grants = {"subscribe": ["*"]}
    async with w.ws(w.secured, token(grants)) as ws:
        return await ask(ws, op="auth", token=token(grants, 900), id=1)


async def op_ping(w: World) -> dict[str, Any]:
    async with w.ws() as ws:
        return await ask(ws, op="ping", id=1)


REQUESTS: dict[str, tuple[Case, str]] = {
    "subscribe": (op_subscribe, "subscribed"),
    "unsubscribe": (op_unsubscribe, "unsubscribed"),
    "publish": (op_publish, "ack"),
    "auth": (op_auth, "authenticated"),
    "ping": (op_ping, "pong"),
}


# -- frames ----------------------------------------------------------------------------------


async def frame_message(w: World) -> dict[str, Any]:
    async with w.ws() as ws:
        await ask(ws, op="subscribe", topic=w.topic)
        await w.hub.publish(w.topic, "hi")
        return (await frames(ws))[0]


async def frame_unsubscribed_by_gateway(w: World) -> dict[str, Any]:
    async with w.ws(w.secured, token({"subscribe": ["*"]})) as ws:
        await ask(ws, op="subscribe", topic=w.topic)
        got = await ask(ws, op="auth", token=token({"subscribe": ["other"]}), id=2)
        assert got["type"] == "authenticated"
        return (await frames(ws))[0]


async def frame_gap(w: World) -> dict[str, Any]:
    # A live topic's SSE stream resumed with Last-Event-ID starts with a gap frame.
    async with (
        httpx.AsyncClient(base_url=w.open.url) as http,
        http.stream(
            "GET", f"/topics/{w.topic}/events", headers={"last-event-id": "x-1"}
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                frame: dict[str, Any] = json.loads(line[6:])
                return frame
    raise AssertionError("no frame")


async def frame_history_lost(w: World) -> dict[str, Any]:
    name = f"{w.topic}.kept"
    await w.hub.declare(name, history=2)
    for i in range(5):
        await w.hub.publish(name, i, confirm=True)
    async with w.ws() as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": name, "since": 0}))
        got = await frames(ws, 3)
        assert got[0]["type"] == "subscribed", got
        return next(f for f in got if f["type"] != "subscribed" and f["type"] != "message")


async def frame_error(w: World) -> dict[str, Any]:
    async with w.ws() as ws:
        return await ask(ws, op="nothing", id=9)


FRAMES: dict[str, Case | str] = {
    "subscribed": op_subscribe,
    "unsubscribed": frame_unsubscribed_by_gateway,
    "message": frame_message,
    "ack": op_publish,
    "authenticated": op_auth,
    "pong": op_ping,
    "gap": frame_gap,
    "history_lost": frame_history_lost,
    "error": frame_error,
    "closed": "an SSE stream's token expiring: test_gateway_auth.py "
    "test_sse_ends_when_its_token_expires",
}


# -- error codes -----------------------------------------------------------------------------


def refused(gw: str, token_grants: dict[str, Any] | None = None, **frame: Any) -> Case:
    async def case(w: World) -> dict[str, Any]:
        target = getattr(w, gw)
        tok = token(token_grants) if token_grants is not None else None
        async with w.ws(target, tok) as ws:
            return await ask(
                ws,
                id=5,
                **{
                    k: v.replace("TOPIC", w.topic) if isinstance(v, str) else v
                    for k, v in frame.items()
                },
            )

    return case


async def code_too_many(w: World) -> dict[str, Any]:
    async with w.ws(w.small) as ws:
        await ask(ws, op="subscribe", topic=w.topic)
        return await ask(ws, op="subscribe", topic=f"{w.topic}.2", id=5)


async def code_rate_limited(w: World) -> dict[str, Any]:
    async with w.ws(w.small) as ws:
        await ask(ws, op="publish", topic=w.topic, data=1, id=1)
        return await ask(ws, op="publish", topic=w.topic, data=2, id=5)


async def code_reserved_payload(w: World) -> dict[str, Any]:
    name = f"{w.topic}.bare"
    await w.hub.declare(name, bare=True)
    magic = base64.b64encode(b"\xffHR1").decode()
    async with w.ws() as ws:
        return await ask(ws, op="publish", topic=name, data_b64=magic, id=5)


CODES: dict[str, Case | str] = {
    "bad_request": refused("open", op="publish", topic="TOPIC"),
    "invalid_topic": refused("open", op="subscribe", topic="has space"),
    "not_applicable": refused("open", op="subscribe", topic="TOPIC", since=3),
    "forbidden": refused("secured", {"subscribe": ["x"]}, op="subscribe", topic="TOPIC"),
    "unauthorized": refused("secured", {"subscribe": ["x"]}, op="auth", token="garbage"),
    "too_many_subscriptions": code_too_many,
    "rate_limited": code_rate_limited,
    "too_large": "unreachable over the WebSocket: a frame over max_message_size is closed with "
    "1009 before any payload can exceed the client's larger limit (test_gateway_ws.py "
    "test_bad_input_and_limits)",
    "reserved_header": refused(
        "open", op="publish", topic="TOPIC", data=1, headers={"herald-reply-to": "x"}
    ),
    "reserved_topic": refused("open", op="subscribe", topic="_herald.inbox.x"),
    "reserved_payload": code_reserved_payload,
    "not_supported": "only with a Herald without recoverable topics (RESUME_SUPPORTED false)",
    "unavailable": "a HeraldError other than Timeout: with the server gone the client waits for "
    "it and times out (timeout), so no test provokes this one",
    "timeout": "provoked by test_timeout_when_the_server_is_gone (below, 10 s)",
}


@pytest.fixture
async def world(gateway_factory: Factory, url: str, topic: str) -> AsyncIterator[World]:
    async with herald.AsyncClient(url, policy_refresh=0.1) as hub:
        yield World(gateway_factory, hub, topic)


def test_the_tables_and_the_cases_agree() -> None:
    assert table("WebSocket requests") == list(REQUESTS)
    assert table("WebSocket frames") == list(FRAMES)
    assert table("WebSocket error codes") == list(CODES)


@pytest.mark.parametrize("op", list(REQUESTS))
async def test_each_documented_request_gets_its_answer(world: World, op: str) -> None:
    case, answer = REQUESTS[op]
    got = await case(world)
    assert got["type"] == answer, got
    assert got["id"] == 1, got


@pytest.mark.parametrize("kind", list(FRAMES))
async def test_each_documented_frame_is_sent(world: World, kind: str) -> None:
    case = FRAMES[kind]
    if isinstance(case, str):
        pytest.skip(f"covered elsewhere: {case}")
    got = await case(world)
    assert got["type"] == kind, got
    fields = _documented_fields("WebSocket frames", kind)
    # Every field sent is documented for that frame.
    assert set(got) - {"type"} <= fields, (got, fields)


@pytest.mark.parametrize("code", list(CODES))
async def test_each_documented_error_code_is_sent(world: World, code: str) -> None:
    case = CODES[code]
    if isinstance(case, str):
        pytest.skip(f"not provoked here: {case}")
    got = await case(world)
    assert (got["type"], got["code"], got["id"]) == ("error", code, 5), got
    assert isinstance(got["message"], str)
    assert got["message"]


def _documented_fields(heading: str, row: str) -> set[str]:
    text = DOC.read_text()
    section = text[text.index(f"### {heading}\n") :]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| `{row}` |"))
    return set(re.findall(r"`([a-z_0-9]+)`", line.split("|")[2]))


# -- HTTP error codes ------------------------------------------------------------------------

HttpCase = Callable[[World], Awaitable[httpx.Response]]
AS_JSON = {"content-type": "application/json"}


def http_case(gw: str, method: str, path: str, **kwargs: Any) -> HttpCase:
    async def case(w: World) -> httpx.Response:
        base = getattr(w, gw).url
        async with httpx.AsyncClient(base_url=base) as http:
            return await http.request(method, path.replace("TOPIC", w.topic), **kwargs)

    return case


async def http_reserved_payload(w: World) -> httpx.Response:
    name = f"{w.topic}.bare"
    await w.hub.declare(name, bare=True)
    async with httpx.AsyncClient(base_url=w.open.url) as http:
        return await http.post(f"/topics/{name}", content=b"\xffHR1")


async def http_rate_limited(w: World) -> httpx.Response:
    async with httpx.AsyncClient(base_url=w.small.url) as http:
        await http.post(f"/topics/{w.topic}", json=1)
        return await http.post(f"/topics/{w.topic}", json=2)


async def http_too_large(w: World) -> httpx.Response:
    async with httpx.AsyncClient(base_url=w.open.url) as http:
        return await http.post(f"/topics/{w.topic}", content=b"x" * (64 * 1024 + 1))


HTTP_CODES: dict[str, tuple[HttpCase, int] | str] = {
    "invalid_topic": (http_case("open", "POST", "/topics/a*b", json=1), 400),
    "bad_json": (
        http_case(
            "open",
            "POST",
            "/topics/TOPIC",
            content=b"{",
            headers={"content-type": "application/json"},
        ),
        400,
    ),
    "bad_text": (
        http_case(
            "open", "POST", "/topics/TOPIC", content=b"\xff", headers={"content-type": "text/plain"}
        ),
        400,
    ),
    "bad_request": (http_case("open", "GET", "/topics/TOPIC/messages?limit=0"), 400),
    "reserved_header": (
        http_case(
            "open", "POST", "/topics/TOPIC", json=1, headers={"x-herald-header-herald-x": "1"}
        ),
        400,
    ),
    "reserved_payload": (http_reserved_payload, 400),
    "unauthorized": (http_case("secured", "POST", "/topics/TOPIC", json=1), 401),
    "forbidden": (
        http_case(
            "secured",
            "POST",
            "/topics/TOPIC",
            json=1,
            headers={"authorization": "Bearer " + token({"publish": ["other"]})},
        ),
        403,
    ),
    "reserved_topic": (http_case("open", "POST", "/topics/_herald.inbox.x", json=1), 403),
    "no_history": (http_case("open", "GET", "/topics/TOPIC/messages"), 404),
    "not_found": (http_case("open", "GET", "/no/such/route"), 404),
    "method_not_allowed": (http_case("open", "DELETE", "/topics/TOPIC"), 405),
    "not_applicable": (http_case("open", "GET", "/topics/TOPIC/dead"), 409),
    "too_large": (http_too_large, 413),
    "host_not_allowed": (
        http_case("open", "GET", "/stats", headers={"host": "evil.example"}),
        421,
    ),
    "rate_limited": (http_rate_limited, 429),
    "not_supported": "only with a Herald without recoverable topics (RESUME_SUPPORTED false)",
    "unavailable": "a HeraldError other than Timeout: with the server gone the client waits for "
    "it and times out (timeout), so no test provokes this one",
    "timeout": "provoked by test_timeout_when_the_server_is_gone (below, 10 s)",
}


def http_table() -> list[tuple[str, int]]:
    text = DOC.read_text()
    section = text[text.index("### HTTP error codes\n") :]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.split("|")[1:3]]
            rows.append((cells[0].strip("`"), int(cells[1])))
        elif rows and not line.startswith("|"):
            break
    return rows


def test_the_http_table_and_the_cases_agree() -> None:
    documented = http_table()
    assert [code for code, _ in documented] == list(HTTP_CODES)
    for code, status in documented:
        case = HTTP_CODES[code]
        if not isinstance(case, str):
            assert case[1] == status, code


@pytest.mark.parametrize("code", list(HTTP_CODES))
async def test_each_documented_http_error_is_answered(world: World, code: str) -> None:
    case = HTTP_CODES[code]
    if isinstance(case, str):
        pytest.skip(f"not provoked here: {case}")
    make, status = case
    r = await make(world)
    assert r.status_code == status, (code, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), code
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str)
    if status == 429:
        assert r.headers["retry-after"]
    if status == 405:
        assert r.headers["allow"]


# -- close codes -----------------------------------------------------------------------------


async def _drain(ws: ClientConnection) -> None:
    async with asyncio.timeout(5):
        while True:
            await ws.recv()


async def _closed_with(ws: ClientConnection) -> int:
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as closed:
        await _drain(ws)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def close_1007(w: World) -> int:
    async with w.ws() as ws:
        await ws.send(b"\xff\xfe")
        return await _closed_with(ws)


async def close_1008(w: World) -> int:
    async with w.ws(w.secured, token({"subscribe": ["*"]})) as ws:
        await ws.send(json.dumps({"op": "auth", "token": "garbage"}))
        return await _closed_with(ws)


async def close_1009(w: World) -> int:
    async with connect(w.open.ws_url, max_size=None) as ws:
        await ws.send("x" * (64 * 1024 + 1))
        return await _closed_with(ws)


CLOSE_CODES: dict[str, Callable[[World], Awaitable[int]] | str] = {
    "1007": close_1007,
    "1008": close_1008,
    "1009": close_1009,
    "1011": "an internal error, i.e. a bug: nothing provokes one on purpose (tests assert its "
    "absence, e.g. test_gateway_input.py)",
}


def test_the_close_code_table_and_the_cases_agree() -> None:
    text = DOC.read_text()
    section = text[text.index("**Close codes.**") :]
    codes = re.findall(r"^\| (\d{4}) \|", section.split("**Slow clients.**")[0], re.M)
    assert codes == list(CLOSE_CODES)


@pytest.mark.parametrize("code", list(CLOSE_CODES))
async def test_each_documented_close_code_is_sent(world: World, code: str) -> None:
    case = CLOSE_CODES[code]
    if isinstance(case, str):
        pytest.skip(f"covered elsewhere: {case}")
    assert await case(world) == int(code)


async def test_timeout_when_the_server_is_gone(own_server: herald.EmbeddedServer) -> None:
    """With the server stopped, a publish waits for it (10 s) and answers `timeout`: 504 over
    HTTP, an error frame on the WebSocket, which stays open."""
    from herald.gateway.serve import BackgroundGateway

    with BackgroundGateway(own_server.url) as gw:
        async with connect(gw.ws_url) as ws, httpx.AsyncClient(base_url=gw.url) as http:
            assert (await ask(ws, op="ping", id=1))["type"] == "pong"
            own_server.stop()
            r = await http.post("/topics/t", json=1, timeout=30)
            assert (r.status_code, r.json()["error"]) == (504, "timeout")
            await ws.send(json.dumps({"op": "publish", "topic": "t", "data": 1, "id": 5}))
            (got,) = await frames_within(ws, 30)
            assert (got["type"], got["code"], got["id"]) == ("error", "timeout", 5)


async def frames_within(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    async with asyncio.timeout(seconds):
        data = json.loads(await ws.recv())
    return data if isinstance(data, list) else [data]
