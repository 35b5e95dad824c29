"""14. Mass reconnect of gateway WebSocket clients: every client's connection is cut at once (a
TCP proxy in front of the gateway resets them all, as a restarted load balancer would); each
client reconnects with jitter and resubscribes to a recoverable topic with ``since`` = the last
offset it has. Measured: time until 99% (and 100%) are subscribed again, and how many of the
messages published meanwhile each client got back (recovered %), none twice.

The gateway runs in a process of its own (``herald.gateway.serve.BackgroundGateway``), so that
the clients and the gateway do not share one interpreter.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from herald import AsyncClient

from ._harness import Child, Scale, running_server, summary, wait_for
from .proxy import Proxy

GATEWAY = """
    import sys, time
    from herald.gateway import GatewayConfig
    from herald.gateway.serve import BackgroundGateway

    # Old and new connections overlap in a mass reconnect: room above the 1,000 clients.
    gw = BackgroundGateway(sys.argv[1], GatewayConfig(max_connections=10_000)).start()
    print(gw.port, flush=True)
    print("ready", flush=True)
    while True:  # until killed
        time.sleep(3600)
"""


class WsClient:
    """One browser-like client: keeps the last offset, resumes from it after a reconnect."""

    def __init__(self, url: str, topic: str, rng: random.Random) -> None:
        self.url, self.topic, self.rng = url, topic, rng
        self.offsets: list[int] = []
        self.subscribed_at: list[float] = []
        self.history_lost = 0
        self.stop = False

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        while not self.stop:
            try:
                async with connect(self.url, open_timeout=20) as ws:
                    request: dict[str, Any] = {"op": "subscribe", "topic": self.topic, "id": 1}
                    if self.offsets:
                        request["since"] = self.offsets[-1]
                    await ws.send(json.dumps(request))
                    async for text in ws:
                        data = json.loads(text)
                        for item in data if isinstance(data, list) else [data]:
                            kind = item.get("type")
                            if kind == "message":
                                self.offsets.append(item["offset"])
                            elif kind == "subscribed":
                                self.subscribed_at.append(time.time())
                            elif kind == "history_lost":
                                self.history_lost += 1
                        if self.stop:
                            return
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
                pass
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))  # jitter: no thundering herd


async def gateway_reconnect(scale: Scale) -> dict[str, Any]:
    n_clients = scale.pick(100, 1000)
    rate = scale.pick(20, 10)  # messages per second: every client gets each one
    rng = random.Random(14)
    async with running_server(persist=False) as server:
        gateway = Child(GATEWAY, server.url)
        hub = AsyncClient(server.url)
        try:
            await gateway.ready(30)
            port = int(gateway.lines[0])
            await hub.declare("scores", history=100_000)
            with Proxy(port) as proxy:
                url = f"ws://127.0.0.1:{proxy.port}/ws"
                clients = [WsClient(url, "scores", rng) for _ in range(n_clients)]
                tasks = [asyncio.create_task(c.run()) for c in clients]
                connected = await wait_for(lambda: all(c.subscribed_at for c in clients), 60, 0.05)
                published = 0
                stop = asyncio.Event()

                async def publish() -> None:
                    nonlocal published
                    while not stop.is_set():
                        await hub.publish("scores", {"n": published}, confirm=True)
                        published += 1
                        await asyncio.sleep(1 / rate)

                feeder = asyncio.create_task(publish())
                await asyncio.sleep(2.0)
                cut_at = time.time()
                proxy.cut()
                back = await wait_for(
                    lambda: all(len(c.subscribed_at) >= 2 for c in clients), 60, 0.02
                )
                times = sorted(
                    c.subscribed_at[1] - cut_at for c in clients if len(c.subscribed_at) >= 2
                )
                await asyncio.sleep(2.0)
                stop.set()
                await feeder
                last = published  # offsets are 1..published
                await wait_for(
                    lambda: all(c.offsets and c.offsets[-1] >= last for c in clients), 30, 0.1
                )
                for c in clients:
                    c.stop = True
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await hub.close()
            gateway.kill()
    missing = duplicates = complete = 0
    for c in clients:
        got = c.offsets
        duplicates += len(got) - len(set(got))
        expected = set(range(got[0], last + 1)) if got else set()
        lost = len(expected - set(got))
        missing += lost
        complete += lost == 0 and bool(got) and got[-1] >= last
    p = {q: _pct_time(times, q, n_clients) for q in (0.5, 0.99, 1.0)}
    report = {
        "scenario": "gateway-reconnect",
        "clients": n_clients,
        "messages": last,
        "all_subscribed_before": connected,
        "resubscribed": len(times),
        "time_to_resubscribe_s": p,
        "clients_complete": complete,
        "recovered_pct": round(100.0 * complete / n_clients, 2),
        "missing": missing,
        "duplicates": duplicates,
        "history_lost": sum(c.history_lost for c in clients),
        "deliveries": sum(len(c.offsets) for c in clients),
    }
    checks = {
        "every client resubscribed": back and len(times) == n_clients,
        "recovered 100% (no offset missing)": missing == 0 and complete == n_clients,
        "duplicates == 0": duplicates == 0,
    }
    return summary(report, checks)


def _pct_time(sorted_times: list[float], q: float, n: int) -> float | None:
    """Seconds until a fraction ``q`` of ``n`` clients were back (None: never)."""
    k = max(1, round(q * n))
    return round(sorted_times[k - 1], 3) if len(sorted_times) >= k else None
