"""Typed errors from real failures: bad URLs, dead ports, passwords, ACLs, garbled frames."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

import herald
from herald import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    EmbeddedServer,
    PermissionDenied,
)
from herald._core.wire import MAGIC
from herald._server import free_port

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(persist=False, args=["--requirepass", PASSWORD]) as srv:
        yield srv


@pytest.fixture(scope="module")
def acl_server() -> Iterator[EmbeddedServer]:
    """A server where alice may use keys and commands, but only channels ``allowed.*``."""
    with EmbeddedServer(persist=False) as srv:
        with redis.Redis(port=srv.port) as r:
            r.execute_command("ACL", "SETUSER", "alice", "on", ">pw", "~*", "&allowed.*", "+@all")
            # bob may use channels, but not Herald's own keys (herald:topics).
            r.execute_command("ACL", "SETUSER", "bob", "on", ">pw", "~app.*", "&*", "+@all")
        yield srv


def alice(srv: EmbeddedServer) -> str:
    return f"redis://alice:pw@127.0.0.1:{srv.port}"


def io_threads() -> int:
    return sum(t.name == "herald-io" for t in threading.enumerate())


async def wait_for_clients(port: int, password: str | None, expected: int) -> int:
    """Connected clients seen by the server, waiting (bounded) for closes to be processed."""
    r = redis.asyncio.Redis(port=port, password=password)
    try:
        deadline = time.monotonic() + 2
        while True:
            n = len(await r.client_list())
            if n == expected or time.monotonic() > deadline:
                return n
            await asyncio.sleep(0.01)  # the loop must run: it closes the aborted sockets
    finally:
        await r.aclose()


# -- URLs ------------------------------------------------------------------------------------

BAD_URLS = [
    "http://127.0.0.1:6379",
    "mysql://127.0.0.1",
    "redis+sentinel://127.0.0.1:26379",  # no primary name
    "redis://127.0.0.1:notaport",
    "redis://127.0.0.1:6379/notadb",
    "unix://",
]


@pytest.mark.parametrize("url", BAD_URLS)
async def test_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        herald.AsyncClient(url)


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_url_is_a_configuration_error_sync(url: str) -> None:
    before = io_threads()
    with pytest.raises(ConfigurationError):
        herald.Client(url)
    assert io_threads() == before  # the I/O thread is not left behind


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="scheme"):
        herald.AsyncClient("http://localhost")


# -- nothing listening -----------------------------------------------------------------------


async def test_nothing_listening_fails_fast() -> None:
    port = free_port()
    hub = herald.AsyncClient(f"redis://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(ConnectionFailed, match=str(port)) as info:
        await hub.connect()
    assert time.monotonic() - start < 1
    assert not isinstance(info.value, AuthenticationFailed)
    assert isinstance(info.value, ConnectionError)
    # Every call that needs the connection says the same.
    with pytest.raises(ConnectionFailed):
        await hub.publish("news", 1)
    with pytest.raises(ConnectionFailed):
        await hub.subscribe("news")
    assert hub.stats.published == 0
    await hub.close()


def test_nothing_listening_fails_fast_sync() -> None:
    before = io_threads()
    start = time.monotonic()
    with pytest.raises(ConnectionFailed):
        herald.Client(f"redis://127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 1
    assert io_threads() == before


# -- passwords -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials", ["", ":wrong@", "default:wrong@", "nobody:s3cret@"], ids=str
)
async def test_wrong_or_missing_password(auth_server: EmbeddedServer, credentials: str) -> None:
    hub = herald.AsyncClient(f"redis://{credentials}127.0.0.1:{auth_server.port}")
    with pytest.raises(AuthenticationFailed) as info:
        await hub.connect()
    assert isinstance(info.value, ConnectionFailed)
    assert PASSWORD not in str(info.value)
    await hub.close()
    # The refused connection is closed, not left open on the server.
    assert await wait_for_clients(auth_server.port, PASSWORD, 1) == 1


@pytest.mark.parametrize("credentials", [f":{PASSWORD}@", f"default:{PASSWORD}@"])
async def test_right_password_works(
    auth_server: EmbeddedServer, topic: str, credentials: str
) -> None:
    url = f"redis://{credentials}127.0.0.1:{auth_server.port}"
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        assert (await hub.publish(topic, "authenticated", confirm=True)).receivers == 1
        assert (await sub.next(timeout=2)).data == "authenticated"


async def test_password_in_query(auth_server: EmbeddedServer, topic: str) -> None:
    url = f"redis://127.0.0.1:{auth_server.port}?password={PASSWORD}"
    async with herald.AsyncClient(url) as hub:
        assert (await hub.publish(topic, 1, confirm=True)).receivers == 0


def test_password_errors_sync(auth_server: EmbeddedServer, topic: str) -> None:
    before = io_threads()
    with pytest.raises(AuthenticationFailed):
        herald.Client(auth_server.url)
    with pytest.raises(AuthenticationFailed):
        herald.Client(f"redis://:wrong@127.0.0.1:{auth_server.port}")
    assert io_threads() == before
    with (
        herald.Client(f"redis://:{PASSWORD}@127.0.0.1:{auth_server.port}") as hub,
        hub.subscribe(topic) as sub,
    ):
        assert hub.publish(topic, "sync", confirm=True).receivers == 1
        assert sub.next(timeout=2).data == "sync"


# -- ACL -------------------------------------------------------------------------------------


async def test_acl_subscribe_to_a_forbidden_channel(acl_server: EmbeddedServer) -> None:
    async with herald.AsyncClient(alice(acl_server)) as hub:
        with pytest.raises(PermissionDenied, match="NOPERM"):
            await hub.subscribe("forbidden.x")
        with pytest.raises(PermissionDenied):
            await hub.subscribe("forbidden.*")
        # A subscription with one forbidden name fails as a whole and leaves nothing behind.
        with pytest.raises(PermissionDenied):
            await hub.subscribe("allowed.partial", "forbidden.y")
        assert await hub.execute("PUBSUB", "NUMSUB", "allowed.partial") == [b"allowed.partial", 0]
        # The subscriber connection keeps working for what is allowed.
        async with hub.subscribe("allowed.x", "allowed.*") as sub:
            # PUBLISH counts deliveries: the channel and the pattern on one connection are 2.
            assert (await hub.publish("allowed.x", "ok", confirm=True)).receivers == 2
            got = [await sub.next(timeout=2) for _ in range(2)]  # channel and pattern
            assert sorted((m.pattern or "", m.data) for m in got) == [
                ("", "ok"),
                ("allowed.*", "ok"),
            ]


async def test_acl_publish_to_a_forbidden_channel(acl_server: EmbeddedServer) -> None:
    async with herald.AsyncClient(alice(acl_server)) as hub:
        with pytest.raises(PermissionDenied):
            await hub.publish("forbidden.x", 1, confirm=True)
        assert hub.stats.published == 0
        # Fire-and-forget cannot raise; the refusal is counted instead.
        await hub.publish("forbidden.x", 2)
        await hub.flush()
        assert hub.stats.publish_errors == 1
        assert (await hub.publish("allowed.x", 3, confirm=True)).receivers == 0


async def test_acl_user_without_access_to_policies(
    acl_server: EmbeddedServer, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Without read access to herald:topics the client still works: every topic is live, and the
    # log says which keys to grant.
    url = f"redis://bob:pw@127.0.0.1:{acl_server.port}"
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        assert (await hub.publish(topic, "still live", confirm=True)).receivers == 1
        assert (await sub.next(timeout=2)).data == "still live"
    assert "herald:{herald}:topics" in caplog.text
    assert "treated as live" in caplog.text


def test_acl_errors_sync(acl_server: EmbeddedServer) -> None:
    with herald.Client(alice(acl_server)) as hub:
        with pytest.raises(PermissionDenied):
            hub.subscribe("forbidden.x")
        with pytest.raises(PermissionDenied):
            hub.publish("forbidden.x", 1, confirm=True)
        with hub.subscribe("allowed.sync") as sub:
            assert hub.publish("allowed.sync", "ok", confirm=True).receivers == 1
            assert sub.next(timeout=2).data == "ok"


# -- garbled frames --------------------------------------------------------------------------

_HEAD = struct.Struct(">3sBBB8sQQ")
PID = b"\x01" * 8


def envelope(payload: bytes, *, version: int = 1, flags: int = 0, codec: int = 1) -> bytes:
    return _HEAD.pack(MAGIC, version, flags, codec, PID, 1, 0) + payload


def batch_frame(*envelopes: bytes, count: int | None = None) -> bytes:
    head = struct.pack(">3sBBI", MAGIC, 1, 1, len(envelopes) if count is None else count)
    return head + b"".join(struct.pack(">I", len(e)) + e for e in envelopes)


GARBLED: list[tuple[str, bytes, bytes, str]] = [
    # (id, frame, data delivered, error text)
    ("magic-only", MAGIC, MAGIC, "truncated header"),
    ("short-header", MAGIC + b"\x01\x00\x01\x00\x00", MAGIC + b"\x01\x00\x01\x00\x00", "truncated"),
    ("version", envelope(b"1", version=9), envelope(b"1", version=9), "version 9"),
    ("flags", envelope(b"1", flags=0x80), envelope(b"1", flags=0x80), "unknown flags"),
    (
        "headers",
        envelope(b"\x00\x00\x01\x00{}", flags=2),
        envelope(b"\x00\x00\x01\x00{}", flags=2),
        "truncated headers",
    ),
    (
        "batch",
        batch_frame(envelope(b"1"), count=3),
        batch_frame(envelope(b"1"), count=3),
        "truncated batch",
    ),
    ("json", envelope(b"{not json"), b"{not json", "not valid json"),
    ("text", envelope(b"\xff\xfe", codec=3), b"\xff\xfe", "not valid text"),
    ("codec", envelope(b"x", codec=9), b"x", "unknown codec"),
]


@pytest.mark.parametrize(
    ("frame", "data", "error"), [g[1:] for g in GARBLED], ids=[g[0] for g in GARBLED]
)
async def test_garbled_frame_is_delivered_with_decode_error(
    url: str, topic: str, frame: bytes, data: bytes, error: str
) -> None:
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        with redis.Redis.from_url(url) as r:
            assert r.publish(topic, frame) == 1
        msg = await sub.next(timeout=2)
        assert msg.data == data
        assert msg.raw == frame
        assert isinstance(msg.decode_error, herald.DecodeError)
        assert error in str(msg.decode_error)
        assert msg.content_type == "application/octet-stream"
        # ...and the subscription goes on.
        await hub.publish(topic, {"after": True}, confirm=True)
        msg = await sub.next(timeout=2)
        assert (msg.data, msg.decode_error) == ({"after": True}, None)


async def test_one_broken_message_in_a_batch_spares_the_others(url: str, topic: str) -> None:
    frame = batch_frame(envelope(b"1"), envelope(b"{broken"), b"not a frame", envelope(b"4"))
    async with herald.AsyncClient(url) as hub, hub.subscribe(topic) as sub:
        with redis.Redis.from_url(url) as r:
            assert r.publish(topic, frame) == 1
        got = [await sub.next(timeout=2) for _ in range(4)]
    assert [m.data for m in got] == [1, b"{broken", b"not a frame", 4]
    assert [m.decode_error is not None for m in got] == [False, True, True, False]
    assert got[0].id == f"{PID.hex()}-1"


async def test_channel_revoked_while_disconnected_ends_the_subscription(
    acl_server: EmbeddedServer,
) -> None:
    # carol may use allowed.* ; after a reconnect she may not: the subscription must end with
    # PermissionDenied instead of silently staying unsubscribed.
    admin = herald.Client(acl_server.url)
    admin.execute("ACL", "SETUSER", "carol", "on", ">pw", "~*", "&allowed.*", "+@all")
    url = f"redis://carol:pw@127.0.0.1:{acl_server.port}"
    async with herald.AsyncClient(url, probe_interval=0) as hub:
        sub = await hub.subscribe("allowed.revoked")
        admin.execute("ACL", "SETUSER", "carol", "resetchannels", "&other.*")
        admin.execute("CLIENT", "KILL", "USER", "carol")
        with pytest.raises(PermissionDenied):
            await sub.next(timeout=5)
        assert sub.closed
    admin.close()
