"""16. Forged request metadata: requests whose ``herald-reply-to`` names a topic that is not a
reply inbox, sent every way a hostile publisher has (raw ``PUBLISH`` of a hand-made envelope, the
client library, the gateway's HTTP header and WebSocket ``headers``), to responders that echo
their request and to responders that raise with a secret in the exception's text.

The promise: no responder publishes outside the inbox namespace, no exception text reaches a
requester, every forged publish through Herald is refused, and an attacker who has seen another
client's messages cannot name that client's inbox. A watcher subscribed to ``*`` counts every
message that lands anywhere but the topics attacked.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from herald import AsyncClient, Message, ReservedName, ResponderFailed
from herald._core.wire import Encoder

from ._harness import Scale, running_server, summary

KEY = "faults-" + "t" * 57
SECRET = "postgres://app:s3cret@db/prod"
ECHO, FAIL = "rpc.echo", "rpc.fail"


def targets(rng: random.Random) -> list[str]:
    """Reply addresses a hostile request names instead of an inbox."""
    fixed = [
        "admin.commands",
        ECHO,  # a reply loop onto the request topic itself
        "_herald.inbo",
        "_herald.inboxx",
        "_herald.Inbox.x",
        "herald:{orders}.dead",
        "orders.dead",
        "a" * 2000,
        "",
        " ",
    ]
    return fixed + [f"t.{rng.randbytes(6).hex()}" for _ in range(20)]


async def forged_replies(scale: Scale) -> dict[str, Any]:
    rounds = scale.pick(20, 500)
    rng = random.Random(16)
    report: dict[str, Any] = {}
    async with running_server(persist=False) as server:
        hub = AsyncClient(server.url)
        watcher = AsyncClient(server.url)
        caller = AsyncClient(server.url)
        try:
            landed: list[str] = []
            handled = {"n": 0}

            def echo(msg: Message) -> Any:
                handled["n"] += 1
                return {"echo": msg.data}

            def fail(msg: Message) -> Any:
                handled["n"] += 1
                raise RuntimeError(SECRET)

            await hub.subscribe(ECHO, handler=echo)
            await hub.subscribe(FAIL, handler=fail)

            def watch(msg: Message) -> None:
                if msg.topic not in (ECHO, FAIL) and not msg.topic.startswith("_herald.gateway."):
                    landed.append(msg.topic)

            await watcher.subscribe("*", handler=watch)
            # A legitimate request first: the inbox now exists, and the attacker sees its id.
            first = await caller.request(ECHO, "hello", timeout=5)
            seen_id = first.id or ""

            raw_sent = 0
            encoder = Encoder()
            for _ in range(rounds):
                for target in targets(rng):
                    for topic in (ECHO, FAIL):
                        frame = encoder.envelope(
                            {"cmd": "drop-db"},
                            {"herald-reply-to": target, "herald-request-id": str(raw_sent)},
                        )
                        await hub.execute("PUBLISH", topic, frame)
                        raw_sent += 1

            library_refused = library_tried = 0
            inbox = caller._request_table().inbox
            guessed = "_herald.inbox." + seen_id.partition("-")[0]
            for topic, headers in (
                (ECHO, {"herald-reply-to": "admin.commands"}),
                (ECHO, {"Herald-Request-Id": "1"}),
                (inbox, None),  # a forged reply into a known inbox
                (guessed, None),  # into the inbox derived from a message id
            ):
                for confirm in (None, True):
                    library_tried += 1
                    try:
                        await hub.publish(topic, "forged", headers=headers, confirm=confirm)
                    except ReservedName:
                        library_refused += 1

            gateway = await _through_gateway(server.url)

            leaked = 0
            for _ in range(scale.pick(5, 50)):
                try:
                    await caller.request(FAIL, None, timeout=5)
                except ResponderFailed as exc:
                    if SECRET in exc.error or SECRET in json.dumps(exc.reply.headers):
                        leaked += 1
            await hub.flush()
            await asyncio.sleep(0.5)
            report = {
                "scenario": "forged-replies",
                "forged_requests": raw_sent,
                "handled": handled["n"],
                "published_outside_inboxes": len(landed),
                "outside_sample": sorted(set(landed))[:5],
                "library_forgeries_refused": f"{library_refused}/{library_tried}",
                "gateway_forgeries_accepted": gateway["accepted"],
                "gateway_forgeries_tried": gateway["tried"],
                "secrets_leaked": leaked,
                "inbox_derivable_from_ids": guessed == inbox,
            }
            checks = {
                "every forged request was handled (so a reply was possible)": handled["n"]
                >= raw_sent,
                "no publish outside the inbox namespace": not landed,
                "the library refused every forgery": library_refused == library_tried,
                "the gateway refused every forgery": gateway["accepted"] == 0,
                "no exception text reached a requester": leaked == 0,
                "inbox not derivable from message ids": guessed != inbox,
            }
        finally:
            for client in (hub, watcher, caller):
                await client.close()
    return summary(report, checks)


async def _through_gateway(url: str) -> dict[str, int]:
    """Forged headers and reserved topics through a real gateway with auth on (token: rpc.*)."""
    import httpx
    import jwt
    from websockets.asyncio.client import connect

    from herald.gateway import GatewayConfig
    from herald.gateway.auth import AuthConfig
    from herald.gateway.serve import BackgroundGateway

    auth = AuthConfig(key=KEY, audience="herald", issuer="faults", leeway=0)
    claims = {
        "sub": "mallory",
        "aud": "herald",
        "iss": "faults",
        "exp": int(time.time() + 600),
        "herald": {"publish": ["rpc.*", "_herald.*", "*.dead"], "subscribe": ["rpc.*"]},
    }
    bearer = {"authorization": "Bearer " + jwt.encode(claims, KEY, algorithm="HS256")}
    tried = accepted = 0
    gw = await asyncio.to_thread(lambda: BackgroundGateway(url, GatewayConfig(auth=auth)).start())
    try:
        async with httpx.AsyncClient(base_url=gw.url, headers=bearer) as api:
            for name in ("herald-reply-to", "herald-request-id", "HERALD-ERROR", "herald-reason"):
                tried += 1
                r = await api.post(
                    f"/topics/{ECHO}", json={"cmd": 1}, headers={f"X-Herald-Header-{name}": "x"}
                )
                accepted += r.status_code < 300
            for topic in ("_herald.inbox.0123456789abcdef", "_herald.inbox.x"):
                tried += 1
                accepted += (await api.post(f"/topics/{topic}", json=1)).status_code < 300
        async with connect(gw.ws_url, additional_headers=bearer) as ws:
            for i, headers in enumerate(
                ({"herald-reply-to": "admin.commands"}, {"herald-request-id": "1"})
            ):
                tried += 1
                await ws.send(
                    json.dumps(
                        {"op": "publish", "topic": ECHO, "data": 1, "headers": headers, "id": i}
                    )
                )
                reply = json.loads(await ws.recv())
                accepted += reply.get("type") != "error"
    finally:
        await asyncio.to_thread(gw.stop)
    return {"tried": tried, "accepted": int(accepted)}
