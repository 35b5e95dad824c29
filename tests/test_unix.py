"""unix:// sockets, with a password and a database number in the URL."""

from __future__ import annotations

from pathlib import Path

import herald
from herald import EmbeddedServer


async def test_unix_socket_with_password_and_db(tmp_path: Path, topic: str) -> None:
    sock = tmp_path / "valkey.sock"
    args = ["--unixsocket", str(sock), "--unixsocketperm", "700", "--requirepass", "pw"]
    with EmbeddedServer(tmp_path / "data", persist=False, args=args):
        url = f"unix://:pw@{sock}?db=3"
        async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
            assert (await hub.publish(topic, "over a socket", confirm=True)).receivers == 1
            assert (await sub.next(timeout=2)).data == "over a socket"
            await hub.execute("SET", f"{topic}:k", "v")
            assert await hub.execute("CLIENT", "INFO") is not None
        with herald.Client(f"unix://:pw@{sock}?db=3") as sync_hub:
            assert sync_hub.execute("GET", f"{topic}:k") == b"v"
        with herald.Client(f"unix://:pw@{sock}") as db0:
            assert db0.execute("GET", f"{topic}:k") is None
