"""A FastAPI service on Herald: orders in over HTTP, billed by a durable consumer, a
request/reply lookup, and live prices relayed to WebSocket clients.

    python examples/fastapi_app/main.py                 # embedded Valkey, http://127.0.0.1:8000
    python examples/fastapi_app/main.py --url redis://localhost:6379 --port 8080

    curl localhost:8000/orders -H 'content-type: application/json' -d '{"id": 7, "total": 9.5}'
    curl localhost:8000/billed
    curl localhost:8000/geo/1.2.3.4
    curl localhost:8000/prices/eur -H 'content-type: application/json' -d '101.5'
    # and a WebSocket client on ws://127.0.0.1:8000/ws/prices

The client is opened and closed with the app (``Herald.lifespan``), handed to endpoints as
``hub: Hub``, and the consumer and the responder are registered with decorators.
tests/test_fastapi.py runs it with httpx's ASGI transport and a real server.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI, HTTPException, WebSocket
from pydantic import BaseModel

import herald
from herald.fastapi import Herald, Hub, client, relay


class Order(BaseModel):
    id: int
    total: float


async def declare_topics(hub: herald.AsyncClient) -> None:
    await hub.declare("orders", durable=True)
    for currency in ("eur", "usd"):
        await hub.declare(f"prices.{currency}", history=100)


def create_app(url: str | None = None) -> FastAPI:
    """The app, on the server at ``url`` (``None``: ``$HERALD_URL``, else `herald serve`'s)."""
    integration = Herald(url, setup=declare_topics)
    app = FastAPI(title="orders", lifespan=integration.lifespan)
    billed: dict[int, float] = {}

    @integration.consumer("orders", "billing", start="all")
    async def bill(order: Order) -> None:  # acked when it returns, redelivered if it raises
        billed[order.id] = order.total

    @integration.subscriber("geo.lookup")
    def lookup(msg: herald.Message) -> dict[str, str]:  # the return value is the reply
        return {"ip": msg.data["ip"], "country": "NZ"}

    @app.post("/orders")
    async def place_order(order: Order, hub: Hub) -> dict[str, Any]:
        ack = await hub.publish(
            "orders", order.model_dump(), msg_id=f"order-{order.id}", confirm=True
        )
        return {"offset": ack.offset, "duplicate": ack.duplicate}

    @app.get("/billed")
    async def billed_orders() -> dict[int, float]:
        return billed

    @app.get("/geo/{ip}")
    async def geo(ip: str, hub: Hub) -> Any:
        try:
            reply = await hub.request("geo.lookup", {"ip": ip}, timeout=1.0)
        except (herald.NoResponders, herald.Timeout) as e:
            raise HTTPException(503, f"no answer: {e}") from e
        return reply.data

    @app.post("/prices/{currency}")
    async def set_price(currency: str, price: Annotated[float, Body()], hub: Hub) -> dict[str, Any]:
        if currency not in ("eur", "usd"):
            raise HTTPException(404, "unknown currency")
        ack = await hub.publish(f"prices.{currency}", price, confirm=True)
        return {"offset": ack.offset}

    @app.websocket("/ws/prices")
    async def prices(websocket: WebSocket) -> None:
        # Each currency's last price first (a recoverable topic), then every change.
        await relay(websocket, client(websocket), "prices.eur", "prices.usd", last=1)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="Redis/Valkey URL (default: an embedded Valkey)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        if args.url is None:
            with herald.EmbeddedServer(persist=False) as server:
                print(f"orders: http://127.0.0.1:{args.port} on {server.url}", flush=True)
                uvicorn.run(create_app(server.url), port=args.port, log_level="warning")
        else:
            print(f"orders: http://127.0.0.1:{args.port} on {args.url}", flush=True)
            uvicorn.run(create_app(args.url), port=args.port, log_level="warning")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
