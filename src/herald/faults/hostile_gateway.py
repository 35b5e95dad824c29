"""15, second half: hostile input to the gateway's WebSocket endpoint.

A real gateway (uvicorn on a free port, JWT auth on) gets random frames from an authenticated
client: requests with every op and fields of every type, broken JSON, deep nesting, binary and
oversized frames. The promise: the gateway answers each with a reply, an error frame, or a
close with a documented code (1000, 1007, 1008, 1009), never 1011 (an internal error), and it
keeps answering ``ping`` (a hang is a ping without its pong in 5 s). Then forged tokens (none
algorithm, wrong key or algorithm, expired, other audience or issuer, garbage) try to connect:
accepted must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

from ._harness import Scale, running_server

KEY = "faults-" + "k" * 57
_TOPICS = ["t.a", "t.*", "", "{x}", "a b", "t." * 600, "\x00", "[", "t.\\", 7, None, ["t.a"]]
_OPS = ["subscribe", "unsubscribe", "publish", "auth", "ping", "resume", "", None, 3, "x" * 300]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**64), 10**30, 1.5e308, rng.randrange(10**6)])
    if kind == 3:
        return rng.choice(_TOPICS)
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(40)))
    if kind == 5:
        return rng.randbytes(8).hex()
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(["topics", "topic", "data", "since", "id", "x"]): _value(rng, depth + 1)}


def frame(rng: random.Random) -> str | bytes:
    """One hostile WebSocket frame."""
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))  # binary
    if kind == 1:
        return "{" * rng.randrange(1, 50_000)  # deep, unterminated
    if kind == 2:
        return "[" * 10_000 + "]" * 10_000  # deep, valid
    if kind == 3:
        return json.dumps({"op": "publish", "topic": "t.a", "data": "x" * 70_000})  # too big
    if kind == 4:
        return rng.choice(
            [
                "",
                "null",
                "[]",
                "1",
                '"op"',
                "{}",
                "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
            ]
        )
    request: dict[str, Any] = {"op": rng.choice(_OPS), "id": _value(rng)}
    for field in ("topics", "topic", "data", "since", "epoch", "last", "token", "headers"):
        if rng.random() < 0.4:
            request[field] = _value(rng)
    if rng.random() < 0.5:
        request["topics"] = [rng.choice(_TOPICS) for _ in range(rng.randrange(1, 4))]
    return json.dumps(request, default=str)


def _token(**changes: Any) -> str:
    import jwt

    claims: dict[str, Any] = {
        "sub": "fuzz",
        "aud": "herald",
        "iss": "faults",
        "exp": int(time.time() + 600),
        "herald": {"publish": ["t.*"], "subscribe": ["t.*"], "history": ["t.*"]},
    }
    key = changes.pop("key", KEY)
    algorithm = changes.pop("algorithm", "HS256")
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    if algorithm == "none":
        return jwt.encode(claims, "", algorithm="none")  # the none algorithm takes no key
    return jwt.encode(claims, key, algorithm=algorithm)


def forged_tokens(rng: random.Random) -> list[str]:
    good = _token()
    head, body, sig = good.split(".")
    return [
        _token(algorithm="none"),
        _token(algorithm="HS512"),
        _token(key="another-" + "k" * 56),
        _token(exp=int(time.time() - 120)),
        _token(exp=None),
        _token(aud="other"),
        _token(iss="other"),
        f"{head}.{body}.",
        f"{head}.{body}.{sig[::-1]}",
        f"{head}.{body[:-4]}AAAA.{sig}",
        "",
        "Bearer",
        "x.y.z",
        rng.randbytes(30).hex(),
        good + "x",
    ]


async def fuzz_gateway(seconds: float, seed: int = 0) -> dict[str, Any]:
    """Hostile frames for ``seconds``, then the forged tokens; the counts."""
    rng = random.Random(seed)
    out: dict[str, Any] = {"frames": 0, "closes": {}, "hangs": 0}
    with _errors_logged() as errors:
        await _fuzz(out, rng, seconds)
    out["internal_errors"] = len(errors) + out["closes"].get("1011", 0)
    out["error_sample"] = errors[:3]
    return out


@contextlib.contextmanager
def _errors_logged() -> Iterator[list[str]]:
    """ERROR records of the gateway and of uvicorn: an exception in a connection's handling."""
    records: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.getMessage()} {record.exc_text or ''}"[:500])

    catch = Catch(logging.ERROR)
    loggers = [logging.getLogger(n) for n in ("herald.gateway", "uvicorn.error")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(catch)
        lg.setLevel(logging.ERROR)
        lg.propagate = False
    try:
        yield records
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(catch)
            lg.setLevel(level)
            lg.propagate = propagate


async def _fuzz(out: dict[str, Any], rng: random.Random, seconds: float) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from herald.gateway import GatewayConfig
    from herald.gateway.auth import AuthConfig
    from herald.gateway.serve import BackgroundGateway

    auth = AuthConfig(key=KEY, audience="herald", issuer="faults", leeway=0)
    async with running_server(persist=False) as server:
        gw = await asyncio.to_thread(
            lambda: BackgroundGateway(server.url, GatewayConfig(auth=auth)).start()
        )
        try:
            target = gw.ws_url + f"?token={_token()}"
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                async with connect(target, max_size=None) as ws:
                    try:
                        while time.monotonic() < deadline:
                            await ws.send(frame(rng))
                            out["frames"] += 1
                            if out["frames"] % 20 == 0:
                                ref = out["frames"]
                                await ws.send(json.dumps({"op": "ping", "id": ref}))
                                if not await _pong(ws, ref):
                                    out["hangs"] += 1
                                    break
                    except ConnectionClosed as exc:
                        # 1006: the TCP connection reset under a frame still being sent
                        # after the gateway closed (the close frame is lost with the reset).
                        code = exc.rcvd.code if exc.rcvd is not None else 1006
                        out["closes"][str(code)] = out["closes"].get(str(code), 0) + 1
            accepted = 0
            tokens = forged_tokens(rng)
            for bad in tokens:
                try:
                    async with connect(
                        gw.ws_url, additional_headers={"authorization": f"Bearer {bad}"}
                    ) as ws:
                        await ws.send(json.dumps({"op": "subscribe", "topics": ["t.a"], "id": 1}))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 2))
                        if isinstance(reply, dict) and reply.get("type") == "subscribed":
                            accepted += 1
                except (InvalidStatus, ConnectionClosed, TimeoutError):
                    pass
            out["bad_tokens"] = len(tokens)
            out["bad_tokens_accepted"] = accepted
        finally:
            await asyncio.to_thread(gw.stop)


async def _pong(ws: Any, ref: int, timeout: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while True:
                data = json.loads(await ws.recv())
                for item in data if isinstance(data, list) else [data]:
                    if (
                        isinstance(item, dict)
                        and item.get("type") == "pong"
                        and item.get("id") == ref
                    ):
                        return True
    except TimeoutError:
        return False


async def hostile_gateway(scale: Scale) -> dict[str, Any]:
    return await fuzz_gateway(scale.pick(3.0, 60.0))
