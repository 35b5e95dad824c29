"""Sentinel: find the primary, follow ``+switch-master``, never keep writing to a demoted node.

A :class:`SentinelResolver` is the :class:`~herald._io.link.Resolver` of every connection of a
client on ``redis+sentinel://``. On each (re)connect it asks the sentinels, in order, for the
primary (``SENTINEL GET-MASTER-ADDR-BY-NAME``) and checks with ``ROLE`` that the node it names
is a primary now; the sentinel that answered moves to the front. One watcher task stays
subscribed to ``+switch-master`` on a sentinel: on a switch, every connection to another node
is dropped and reconnects to the new primary at once. A connection that gets ``READONLY`` (its
node was demoted under it) is dropped too (see ``Link``), and sentinels themselves close the
clients of a node they demote. Together: writes never keep going to a demoted node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import replace
from typing import Any

import hiredis

from herald._core.backoff import Backoff
from herald._core.resp import Arg, command
from herald._core.url import Endpoint, SentinelSpec, tls_refused
from herald._errors import AuthenticationFailed, ConnectionFailed, HeraldError

from .interface import NodeLink
from .protocol import error_from_reply

log = logging.getLogger("herald")

Address = tuple[str, int]
SWITCH_MASTER = b"+switch-master"
PROMOTED = b"+promoted-slave"
# Sent by the leading sentinel just before it turns the chosen replica into the primary.
PROMOTING = b"+failover-state-send-slaveof-noone"


def parse_promoted(payload: bytes, master: str) -> Address | None:
    """The replica a ``+promoted-slave`` message about ``master`` names (it is the primary
    now: the leading sentinel saw it report so), else ``None``.

    >>> parse_promoted(b"slave 10.0.0.2:6380 10.0.0.2 6380 @ herald 10.0.0.1 6379", "herald")
    ('10.0.0.2', 6380)
    """
    parts = payload.decode(errors="replace").split()
    if len(parts) != 8 or parts[4] != "@" or parts[5] != master:
        return None
    try:
        return parts[2], int(parts[3])
    except ValueError:
        return None


def parse_switch(payload: bytes, master: str) -> Address | None:
    """The new primary in a ``+switch-master`` message about ``master``, else ``None``.

    >>> parse_switch(b"herald 10.0.0.1 6379 10.0.0.2 6380", "herald")
    ('10.0.0.2', 6380)
    >>> parse_switch(b"other 10.0.0.1 6379 10.0.0.2 6380", "herald") is None
    True
    """
    parts = payload.decode(errors="replace").split()
    if len(parts) != 5 or parts[0] != master:
        return None
    try:
        return parts[3], int(parts[4])
    except ValueError:
        return None


class _Conn:
    """A plain connection for a few commands (sentinel queries, the ROLE check, the watcher)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: tuple[Endpoint, str] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()
        # (endpoint, address) until the first reply: a TLS server that drops the connection
        # then is refusing the client certificate (or its absence), and the error says so.
        self._tls = tls

    @classmethod
    async def open(
        cls, host: str, port: int, ctx: ssl.SSLContext | None, endpoint: Endpoint | None = None
    ) -> _Conn:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=host if ctx else None
        )
        tls = (endpoint, f"{host}:{port}") if ctx is not None and endpoint is not None else None
        return cls(reader, writer, tls)

    def send(self, *args: Arg) -> None:
        self.writer.write(command(*args))

    async def reply(self) -> Any:
        """The next reply (an error reply is returned as ``hiredis.ReplyError``)."""
        while (reply := self.parser.gets()) is False:
            try:
                data = await self.reader.read(65536)
            except OSError as exc:
                if self._tls is None:
                    raise
                raise ConnectionFailed(tls_refused(*self._tls, exc)) from exc
            if not data:
                if self._tls is not None:
                    raise ConnectionFailed(tls_refused(*self._tls, "closed"))
                raise ConnectionFailed("connection closed by the server")
            self.parser.feed(data)
        self._tls = None
        return reply

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def _auth(conn: _Conn, username: str | None, password: str | None, what: str) -> None:
    if password is None:
        return
    conn.send(*(["AUTH", username, password] if username else ["AUTH", password]))
    reply = await conn.reply()
    if isinstance(reply, hiredis.ReplyError):
        raise AuthenticationFailed(f"{what}: {reply}")


class SentinelResolver:
    """Resolves the primary of a ``redis+sentinel://`` endpoint for the client's connections.

    Args:
        endpoint: the parsed URL (``endpoint.sentinel`` set).
        timeout: per sentinel query and per ROLE check, in seconds.

    Example::

        resolver = SentinelResolver(parse_url("redis+sentinel://s1,s2,s3/mymaster"))
        link = Link(endpoint, name="pub", resolver=resolver)
    """

    def __init__(self, endpoint: Endpoint, *, timeout: float = 1.0) -> None:
        assert endpoint.sentinel is not None
        self.endpoint = endpoint
        self.spec: SentinelSpec = endpoint.sentinel
        self.timeout = timeout
        self._hosts: list[Address] = list(self.spec.hosts)
        self._links: dict[NodeLink, Address] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._ctx: ssl.SSLContext | None = endpoint.ssl_context()
        self.primary: Address | None = None
        self._announced: Address | None = None  # by the last +switch-master
        # (replica being promoted, until when to wait for it rather than use the old primary)
        self._promoting: tuple[Address, float] | None = None
        self.promotion_wait = 3.0
        self.switches = 0  # +switch-master messages seen for this primary

    # -- Resolver ----------------------------------------------------------------------------

    async def resolve(self, link: NodeLink) -> Endpoint:
        """The current primary's endpoint, for ``link`` to connect to."""
        if not self._watchers:
            loop = asyncio.get_running_loop()
            self._watchers = [loop.create_task(self._watch(h, p)) for h, p in self.spec.hosts]
        host, port = await self.discover()
        self._links[link] = (host, port)
        return replace(self.endpoint, host=host, port=port, sentinel=None)

    async def release(self, link: NodeLink) -> None:
        """``link`` closed; the watcher stops with the last one."""
        self._links.pop(link, None)
        if not self._links and self._watchers:
            tasks, self._watchers = self._watchers, []
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- discovery ---------------------------------------------------------------------------

    async def discover(self) -> Address:
        """Ask every sentinel at once for the primary; take the answer with the newest
        configuration epoch (sentinels that have not heard of a failover yet still name the
        old primary) whose node reports ``ROLE`` master."""
        hosts = list(self._hosts)
        answers = await asyncio.gather(
            *(self._ask_timed(h, p) for h, p in hosts), return_exceptions=True
        )
        problems: list[str] = []
        promoting = await self._check_promoting()
        if promoting is not None:
            return promoting
        # Newest configuration epoch first; within one epoch, a sentinel still in the middle of
        # the failover (it names the old primary) after those that finished it, and the address
        # a +switch-master announced first.
        named: list[tuple[int, bool, bool, int, Address]] = []
        for rank, ((host, port), answer) in enumerate(zip(hosts, answers, strict=True)):
            if isinstance(answer, AuthenticationFailed):
                raise answer
            if isinstance(answer, BaseException):
                if not isinstance(answer, OSError | TimeoutError | HeraldError):
                    raise answer
                problems.append(f"sentinel {host}:{port}: {answer or type(answer).__name__}")
            elif answer is None:
                problems.append(f"sentinel {host}:{port} does not know {self.spec.master!r}")
            else:
                epoch, busy, addr = answer
                named.append((-epoch, busy, addr != self._announced, rank, addr))
        if self._announced is not None:
            # Announced by a sentinel's event: newer than any answer that does not name it yet.
            named.append((-(1 << 62), False, False, -1, self._announced))
        tried: set[Address] = set()
        for *_, rank, addr in sorted(named):
            if addr in tried:
                continue
            tried.add(addr)
            try:
                async with asyncio.timeout(self.timeout):
                    role = await self._role(addr)
            except AuthenticationFailed:
                raise
            except (OSError, TimeoutError, HeraldError) as exc:
                problems.append(f"{addr[0]}:{addr[1]}: {exc or type(exc).__name__}")
                continue
            if role not in ("master", None):
                problems.append(f"{addr[0]}:{addr[1]} is a {role}")
                continue
            if rank > 0:  # the sentinel with the newest answer is asked first next time
                self._hosts.insert(0, self._hosts.pop(self._hosts.index(hosts[rank])))
            self.primary = addr
            return addr
        raise ConnectionFailed(f"no primary for {self.spec.master!r} found: " + "; ".join(problems))

    async def _check_promoting(self) -> Address | None:
        """While a replica is being promoted, it or nothing: the old primary still accepts
        writes that the new one will never have."""
        if self._promoting is None:
            return None
        addr, until = self._promoting
        if asyncio.get_running_loop().time() > until:
            self._promoting = None  # the failover did not complete: ask the sentinels
            return None
        try:
            async with asyncio.timeout(self.timeout):
                role = await self._role(addr)
        except AuthenticationFailed:
            raise
        except (OSError, TimeoutError, HeraldError):
            role = "unreachable"
        if role not in ("master", None):
            raise ConnectionFailed(f"waiting for {addr[0]}:{addr[1]} to become the primary")
        self._promoting = None
        self._announced = addr
        self.primary = addr
        return addr

    async def _ask_timed(self, host: str, port: int) -> tuple[int, bool, Address] | None:
        async with asyncio.timeout(self.timeout):
            return await self._ask(host, port)

    async def _ask(self, host: str, port: int) -> tuple[int, bool, Address] | None:
        """(config epoch, failover in progress, primary address) as one sentinel knows them;
        epoch -1 when the sentinel's ACL allows only ``GET-MASTER-ADDR-BY-NAME``."""
        conn = await _Conn.open(host, port, self._ctx, self.endpoint)
        try:
            await _auth(conn, self.spec.username, self.spec.password, f"sentinel {host}:{port}")
            conn.send("SENTINEL", "MASTER", self.spec.master)
            reply = await conn.reply()
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOPERM"):
                conn.send("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.spec.master)
                addr = await conn.reply()
                if isinstance(addr, hiredis.ReplyError):
                    raise error_from_reply(addr)
                return (-1, False, (addr[0].decode(), int(addr[1]))) if addr else None
        finally:
            await conn.close()
        if isinstance(reply, hiredis.ReplyError):
            if "no such master" in str(reply).lower():
                return None
            raise error_from_reply(reply)
        it = iter(reply)
        state = {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}
        busy = "failover_in_progress" in state.get("flags", "")
        return int(state.get("config-epoch", 0)), busy, (state["ip"], int(state["port"]))

    async def _role(self, addr: Address) -> str | None:
        """The node's own view: ``master``, ``slave``; ``None`` when the ACL forbids ROLE."""
        conn = await _Conn.open(addr[0], addr[1], self._ctx, self.endpoint)
        try:
            ep = self.endpoint
            await _auth(conn, ep.username, ep.password, f"{addr[0]}:{addr[1]}")
            conn.send("ROLE")
            reply = await conn.reply()
        finally:
            await conn.close()
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith("NOPERM"):
                return None  # cannot tell; the sentinel's word and READONLY have to do
            raise error_from_reply(reply)
        return str(reply[0].decode())

    # -- following switches ------------------------------------------------------------------

    def _switched(self, new: Address, why: str) -> None:
        if new != self.primary:
            log.warning("sentinel: %r switched to %s:%s (%s)", self.spec.master, *new, why)
        self.primary = new
        for link, addr in list(self._links.items()):
            if addr != new or not link.connected:
                # Connected elsewhere: dropped; reconnecting: tries again now.
                self._links[link] = new
                link.drop(f"{why}: the primary is {new[0]}:{new[1]} now")

    async def _watch(self, host: str, port: int) -> None:
        """Stay subscribed to ``+switch-master`` on one sentinel. There is one watcher per
        sentinel: they learn of a failover at different times, and the first one to announce
        it moves the connections."""
        backoff = Backoff(cap=1.0)
        first = True
        while True:
            conn: _Conn | None = None
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await _Conn.open(host, port, self._ctx, self.endpoint)
                    await _auth(conn, self.spec.username, self.spec.password, "sentinel")
                    conn.send("SUBSCRIBE", SWITCH_MASTER, PROMOTED, PROMOTING)
                    for _ in range(3):
                        await conn.reply()
                if not first:
                    # A switch may have happened while this watcher was away: the sentinels
                    # decide again, not an announcement that may be stale by now.
                    self._announced = None
                    with contextlib.suppress(HeraldError, OSError, TimeoutError):
                        self._switched(await self.discover(), "primary changed")
                first = False
                backoff.reset()
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, HeraldError) as exc:
                first = False
                log.debug("sentinel watcher on %s:%s: %s", host, port, exc or type(exc).__name__)
            finally:
                if conn is not None:
                    await conn.close()
            await asyncio.sleep(backoff.next())

    async def _listen(self, conn: _Conn) -> None:
        idle = 0
        while True:
            try:
                async with asyncio.timeout(2.0):
                    msg = await conn.reply()
            except TimeoutError:
                # Silence: prove the sentinel is there (a PING answers in subscribed mode).
                idle += 1
                if idle > 1:
                    raise ConnectionFailed("sentinel stopped answering") from None
                conn.send("PING")
                continue
            idle = 0
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == b"message":
                if msg[1] == SWITCH_MASTER:
                    new = parse_switch(msg[2], self.spec.master)
                else:
                    new = parse_promoted(msg[2], self.spec.master)
                if new is None:
                    continue
                if msg[1] == PROMOTING:
                    until = asyncio.get_running_loop().time() + self.promotion_wait
                    self._promoting = (new, until)
                else:
                    self.switches += 1
                    self._announced = new
                    if self._promoting is not None and self._promoting[0] == new:
                        self._promoting = None
                self._switched(new, msg[1].decode())
