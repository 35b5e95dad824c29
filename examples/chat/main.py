"""Chat over WebSocket: a small browser page on Herald's gateway.

    python examples/chat/main.py                  # embedded Valkey, http://127.0.0.1:8000/chat
    python examples/chat/main.py --url redis://localhost:6379 --port 8080

Open http://127.0.0.1:8000/chat in two tabs (``?room=name`` for another room) and talk. The
page (``chat.html``, no build step) opens the gateway's WebSocket ``/ws``, subscribes to the
topic ``chat.<room>`` and publishes what you type to it; any other Herald client of the same
server sees the same messages: the example prints the command to join from a shell
(``herald sub 'chat.*' --url <the server's URL>``). Each room is declared a recoverable
topic (``history=100``) when its page is served, so a tab that joins, or reconnects, first
gets the room's last messages, then the live ones.

Everything but the page is the gateway itself (``herald.gateway.create_app``): this file adds
one route.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

import herald
from herald.gateway import GatewayConfig, create_app

PAGE = Path(__file__).with_name("chat.html")
HISTORY_TTL = 24 * 3600.0


def make_app(url: str) -> Any:
    """The gateway's ASGI app with the chat page at ``/chat``."""
    app = create_app(url, GatewayConfig(publish_rate=20, publish_burst=40))

    async def chat(request: Request) -> Response:
        room = request.query_params.get("room", "lobby")
        if not room.isidentifier():
            return PlainTextResponse("a room is a name: letters, digits and _", 400)
        # Each room is a recoverable topic: a tab that joins gets its last messages first.
        hub = app.state.gateway.hub
        await hub.declare(f"chat.{room}", history=100, history_ttl=HISTORY_TTL)
        return FileResponse(PAGE, media_type="text/html")

    app.add_route("/chat", chat)
    return app


async def serve(url: str, port: int) -> None:
    config = uvicorn.Config(make_app(url), host="127.0.0.1", port=port, log_level="warning")
    print(f"chat: http://127.0.0.1:{port}/chat (Ctrl-C stops)", flush=True)
    # Without --url the chat runs on a Valkey of its own: a plain `herald sub` would talk to
    # another server (`herald serve`'s, or one of its own), so the command names this one.
    print(f"join from a shell: herald sub 'chat.*' --url {url}", flush=True)
    print(
        f'                   herald pub chat.lobby \'{{"user": "cli", "text": "hi"}}\' '
        f"--json --url {url}",
        flush=True,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="Redis/Valkey URL (default: an embedded Valkey)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        if args.url is None:
            with herald.EmbeddedServer(persist=False) as server:
                asyncio.run(serve(server.url, args.port))
        else:
            asyncio.run(serve(args.url, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
