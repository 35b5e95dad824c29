"""The gateway benchmark: WebSocket fan-out of one topic to many clients.

One embedded Valkey, one gateway process (uvicorn, as ``herald serve`` runs it), one process
holding every WebSocket client, and a publisher (this process, Herald's AsyncClient) sending
``rate`` messages per second for ``duration`` seconds. Every client counts what it receives; a
sample of them (websockets' client) decodes each message and measures its latency from the
publisher's ``time.monotonic_ns()`` (one clock for every process on Linux) to its arrival in the
client; the others only count messages in the bytes they receive (:class:`_CountingClient`).
Memory per connection is the gateway's resident memory with every client connected and
subscribed, less its memory before the first one, divided by the number of clients.

Example::

    from herald_bench.gateway import format_table, run_gateway_bench

    print(format_table(run_gateway_bench(clients=100, rate=200, duration=5)))
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import os
import platform
import signal
import time
import uuid
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from typing import Any, cast

END = "END"
SAMPLED = 20  # clients that decode every message and measure latency
CONNECT_BATCH = 50
#: Counting clients per load-generator process, at most (more processes above that).
CLIENTS_PER_PROCESS = 5000


def _raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the soft limit now in force.

    Every client connection is a file descriptor in the gateway and one in a client process:
    10,000 clients need more than the common soft limit of 1,024.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gateway_main(
    url: str, conn: Connection, max_queue: int, frame_writer: bool, gateway_loop: str
) -> None:
    from herald.gateway import GatewayConfig, create_app
    from herald.gateway.serve import _Server, loop_factory, uvicorn_config

    _raise_fd_limit()
    # Fan-out is measured, not the connection cap: room for any number of clients.
    config = GatewayConfig(max_queue=max_queue, max_connections=1_000_000)
    settings = uvicorn_config(create_app(url, config), config, "127.0.0.1", 0, "error")
    if not frame_writer:  # plain uvicorn: every frame through ASGI's websocket.send
        settings.ws = "websockets-sansio"
    # The counting clients do not parse frames, so they cannot answer keepalive pings: with
    # pings on, uvicorn closes every connection ping_interval + ping_timeout after it opened
    # (10,000 clients take longer than that to connect on a busy 2-core machine).
    settings.ws_ping_interval = None
    server = _Server(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
        task = loop.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await asyncio.sleep(0.01)
        conn.send(server.servers[0].sockets[0].getsockname()[1])
        await task

    # the event loop as `herald serve --loop` chooses it
    with asyncio.Runner(loop_factory=loop_factory(gateway_loop)) as runner:
        runner.run(main())


_MESSAGE = b'"type":"message"'
_END = f'"text":"{END}"'.encode()  # a str is published, and arrives, as text
_SUBSCRIBED = b'"type":"subscribed"'


class _CountingClient(asyncio.Protocol):
    """A WebSocket client that only counts: it finds messages in the byte stream.

    A thousand clients parsing every frame in one Python process cost more CPU than the
    gateway that serves them; counting ``"type":"message"`` in what arrives (with a tail kept
    across reads, so a marker split between two reads is found once) keeps the load generator
    from being the limit. The handshake and the one request are real WebSocket.
    """

    def __init__(self, host: str, path: str, request: bytes, ready: asyncio.Future[None]) -> None:
        self.host = host
        self.path = path
        self.request = request
        self.ready = ready
        self.done: asyncio.Future[int] = ready.get_loop().create_future()
        self.upgraded = False
        self.head = b""
        self.tail = b""
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.WriteTransport subclasses
        self.transport = cast(asyncio.WriteTransport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            status, _, data = self.head.partition(b"\r\n\r\n")
            if b" 101 " not in status.split(b"\r\n", 1)[0]:
                self._fail(f"handshake refused: {status[:80]!r}")
                return
            self.upgraded = True
            self.head = b""
            self.transport.write(self.request)
        if not self.ready.done():
            self.head = window = self.head + data
            if _SUBSCRIBED not in window:
                return
            self.ready.set_result(None)
            self.head = b""
        else:
            window = self.tail + data
        # Shorter than a marker: one that ended in the last read is not counted again here.
        self.tail = window[-(len(_MESSAGE) - 1) :]
        self.count += window.count(_MESSAGE)
        if _END in window:
            self.count -= 1
            if not self.done.done():
                self.done.set_result(self.count)
            self.transport.close()

    def _fail(self, reason: str) -> None:
        for fut in (self.ready, self.done):
            if not fut.done():
                fut.set_exception(ConnectionError(reason))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost after {self.count} messages: {exc!r}")


def _clients_main(
    ws_url: str,
    topic: str,
    indices: tuple[int, int],
    duration: float,
    conn: Connection,
    counting: bool,
) -> None:
    """Clients ``indices[0]`` to ``indices[1] - 1`` (those under :data:`SAMPLED` measure
    latency), in one process."""
    from urllib.parse import urlsplit

    from websockets.asyncio.client import connect
    from websockets.frames import Frame, Opcode

    _raise_fd_limit()
    first, stop = indices
    n = stop - first
    counts = [0] * n
    closed: list[str] = []
    latencies: list[int] = []
    subscribe = json.dumps({"op": "subscribe", "topic": topic})
    url = urlsplit(ws_url)
    request = Frame(Opcode.TEXT, subscribe.encode()).serialize(mask=True, extensions=[])

    async def counting_client(i: int, ready: asyncio.Queue[int]) -> None:
        loop = asyncio.get_running_loop()
        subscribed: asyncio.Future[None] = loop.create_future()
        assert url.hostname is not None
        assert url.port is not None
        _, proto = await loop.create_connection(
            lambda: _CountingClient(url.netloc, url.path, request, subscribed),
            url.hostname,
            url.port,
        )
        await subscribed
        await ready.put(i)
        try:
            counts[i] = await proto.done
        except Exception as exc:  # the gateway cut this client
            counts[i] = proto.count
            closed.append(repr(exc))

    async def client(i: int, ready: asyncio.Queue[int], finished: asyncio.Event) -> None:
        if counting and i + first >= SAMPLED:
            await counting_client(i, ready)
            return
        sampled = i + first < SAMPLED
        async with connect(ws_url, max_size=None, ping_interval=None) as ws:
            await ws.send(subscribe)
            await ws.recv()
            await ready.put(i)
            try:
                while True:
                    text = await ws.recv()
                    assert isinstance(text, str)
                    if sampled:
                        now = time.monotonic_ns()
                        frames = json.loads(text)
                        for f in frames if isinstance(frames, list) else [frames]:
                            if f.get("text") == END:
                                finished.set()
                                return
                            data = f.get("data")
                            if isinstance(data, dict):
                                latencies.append(now - data["t"])
                                counts[i] += 1
                    else:
                        if END in text and f'"text":"{END}"' in text:
                            counts[i] += text.count('"type":"message"') - 1
                            return
                        counts[i] += text.count('"type":"message"')
            except Exception as exc:  # the gateway cut this client
                closed.append(repr(exc))

    async def main() -> None:
        ready: asyncio.Queue[int] = asyncio.Queue()
        finished = asyncio.Event()
        tasks = []
        for start in range(0, n, CONNECT_BATCH):
            for i in range(start, min(n, start + CONNECT_BATCH)):
                tasks.append(asyncio.create_task(client(i, ready, finished)))
            while ready.qsize() < min(n, start + CONNECT_BATCH):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        conn.send("ready")
        await asyncio.to_thread(conn.recv)  # "go"
        try:
            async with asyncio.timeout(duration + 30):
                await asyncio.gather(*tasks, return_exceptions=True)
        except TimeoutError:
            for t in tasks:
                t.cancel()
        conn.send({"counts": counts, "latencies": latencies, "closed": closed})

    _run(main())


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run the clients on uvloop where it is installed (as the gateway under uvicorn is)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _client_ranges(clients: int, processes: int | None, counting: bool) -> list[tuple[int, int]]:
    """Client index ranges, one per process: the sampled clients first, alone."""
    sampled = min(SAMPLED, clients)
    rest = clients - sampled
    if processes is None:
        processes = -(-rest // CLIENTS_PER_PROCESS)
    processes = max(1, min(processes, rest)) if rest else 0
    ranges = [(0, sampled)]
    step = -(-rest // processes) if processes else 0
    for start in range(sampled, clients, step or 1):
        ranges.append((start, min(clients, start + step)))
    return ranges


def _percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] / 1e6


async def _publish(url: str, topic: str, rate: int, duration: float) -> tuple[int, float]:
    from herald import AsyncClient

    async with AsyncClient(url, probe_interval=0, policy_refresh=0) as hub:
        sent = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < duration:
            due = int(elapsed * rate) + 1
            while sent < due:
                await hub.publish(topic, {"t": time.monotonic_ns(), "n": sent})
                sent += 1
            await asyncio.sleep(0.001)
        await hub.flush()
        took = time.perf_counter() - start
        await asyncio.sleep(1.0)  # let the gateway drain before the end marker
        await hub.publish(topic, END)
        await hub.flush()
    return sent, took


def run_gateway_bench(
    clients: int = 100,
    rate: int = 200,
    duration: float = 5.0,
    max_queue: int = 10_000,
    *,
    counting_clients: bool = True,
    frame_writer: bool = True,
    gateway_loop: str | None = None,
    client_processes: int | None = None,
) -> dict[str, Any]:
    """Run the fan-out benchmark once and return a JSON-able result.

    ``counting_clients``: all but the sampled clients count messages in the raw byte stream
    (:class:`_CountingClient`); False runs every client on websockets' asyncio client, whose
    frame parsing makes the client process the limit long before the gateway at 1,000 clients.
    ``frame_writer``: False serves the gateway with uvicorn's plain ``websockets-sansio``, so
    every frame goes through ASGI's ``websocket.send`` (the fallback path), for comparison.
    ``gateway_loop``: the gateway process's event loop, as ``herald serve --loop`` (``auto``,
    ``asyncio``, ``uvloop``; default: ``herald serve``'s).
    ``client_processes``: processes running the counting clients (default: one per
    :data:`CLIENTS_PER_PROCESS`); the sampled clients always have a process of their own, so
    that their latency is not that of a client process busy with thousands of others.
    """
    import httpx

    from herald import EmbeddedServer
    from herald.gateway.serve import DEFAULT_LOOP, loop_factory

    # uvloop not installed: said before anything starts; "auto" reported as what it ran
    factory = loop_factory(gateway_loop or DEFAULT_LOOP)
    gateway_loop = "asyncio" if factory is None else "uvloop"
    ctx = mp.get_context("spawn")
    topic = f"bench.gateway.{uuid.uuid4().hex[:8]}"
    with EmbeddedServer(persist=False) as server:
        parent, child = ctx.Pipe()
        gateway = ctx.Process(
            target=_gateway_main, args=(server.url, child, max_queue, frame_writer, gateway_loop)
        )
        gateway.start()
        pools: list[tuple[Any, Connection]] = []
        try:
            port = parent.recv()
            assert gateway.pid is not None
            base = f"http://127.0.0.1:{port}"
            httpx.get(base + "/readyz", timeout=10).raise_for_status()
            time.sleep(0.5)
            rss_before = _rss_kib(gateway.pid)
            for indices in _client_ranges(clients, client_processes, counting_clients):
                cparent, cchild = ctx.Pipe()
                pool = ctx.Process(
                    target=_clients_main,
                    args=(
                        f"ws://127.0.0.1:{port}/ws",
                        topic,
                        indices,
                        duration,
                        cchild,
                        counting_clients,
                    ),
                )
                pool.start()
                pools.append((pool, cparent))
            connect_start = time.perf_counter()
            deadline = time.monotonic() + 60 + clients / 100
            for _, cparent in pools:
                if not cparent.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"{clients} clients did not connect in time")
                assert cparent.recv() == "ready"
            connect_time = time.perf_counter() - connect_start
            time.sleep(0.5 + clients / 10_000)
            rss_idle = _rss_kib(gateway.pid)
            for _, cparent in pools:
                cparent.send("go")
            cpu_start = _cpu_seconds(gateway.pid), sum(_cpu_seconds(p.pid or 0) for p, _ in pools)
            sent, took = asyncio.run(_publish(server.url, topic, rate, duration))
            cpu = (
                _cpu_seconds(gateway.pid) - cpu_start[0],
                sum(_cpu_seconds(p.pid or 0) for p, _ in pools) - cpu_start[1],
            )
            rss_busy = _rss_kib(gateway.pid)
            parts = [cparent.recv() for _, cparent in pools]
            for pool, _ in pools:
                pool.join(10)
            stats = httpx.get(base + "/stats", timeout=10).json()["gateway"]
        finally:
            gateway.terminate()
            gateway.join(10)
            for pool, _ in pools:
                if pool.is_alive():
                    pool.kill()
    result: dict[str, list[Any]] = {
        key: [x for part in parts for x in part[key]] for key in ("counts", "latencies", "closed")
    }
    counts: list[int] = result["counts"]
    delivered = sum(counts)
    expected = sent * clients
    return {
        "benchmark": "gateway websocket fan-out",
        "parameters": {
            "clients": clients,
            "rate": rate,
            "duration": duration,
            "max_queue": max_queue,
            "counting_clients": counting_clients,
            "frame_writer": frame_writer,
            "gateway_loop": gateway_loop,
            "client_processes": len(pools),
        },
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            # other programs share the machine: the 1-minute load average when the run ended
            "load_average": round(os.getloadavg()[0], 2),
            "open_files_limit": _raise_fd_limit(),
        },
        "published": sent,
        "publish_rate": round(sent / took, 1),
        "expected_deliveries": expected,
        "delivered": delivered,
        "delivered_ratio": round(delivered / expected, 4) if expected else None,
        "delivered_per_s": round(delivered / took, 1),
        "clients_complete": sum(1 for c in counts if c == sent),
        "clients_cut": stats["slow_disconnects"],
        "client_errors": len(result["closed"]),
        "client_error_reasons": sorted({str(r)[:100] for r in result["closed"]})[:5],
        "latency_ms": {
            "p50": _percentile(result["latencies"], 50),
            "p99": _percentile(result["latencies"], 99),
            "max": _percentile(result["latencies"], 100),
            "samples": len(result["latencies"]),
        },
        "connect_seconds": round(connect_time, 2),
        # CPU seconds per second of publishing (1.0: one core busy the whole time)
        "cpu": {"gateway": round(cpu[0] / took, 2), "clients": round(cpu[1] / took, 2)},
        # gateway CPU per message delivered to one client (the send system call dominates)
        "gateway_cpu_us_per_delivery": round(cpu[0] / delivered * 1e6, 2) if delivered else None,
        "gateway_rss_kib": {"before": rss_before, "idle": rss_idle, "busy": rss_busy},
        "memory_per_connection_kib": round((rss_idle - rss_before) / clients, 1),
        "gateway_dropped": stats["dropped"] + stats["subscription_dropped"],
        # publish to the gateway's fan-out of a batch, the most seen (wall clocks)
        "gateway_fanout_lag_max_ms": round(stats["fanout_lag_max"] * 1000, 1),
        # fan-out rounds (one frame written to every client): how many, mean and longest
        "gateway_rounds": stats.get("fanout_rounds"),
        "gateway_round_ms": {
            "mean": round(stats["fanout_seconds"] / stats["fanout_rounds"] * 1000, 1)
            if stats.get("fanout_rounds")
            else None,
            "max": round(stats.get("fanout_round_max", 0.0) * 1000, 1),
        },
    }


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a :func:`run_gateway_bench` result."""
    p = result["parameters"]
    lat = result["latency_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    rows = [
        ("clients x msg/s x s", f"{p['clients']} x {p['rate']} x {p['duration']:g}"),
        ("published (msg/s)", f"{result['published']} ({result['publish_rate']:,.0f}/s)"),
        (
            "delivered / expected",
            f"{result['delivered']:,} / {result['expected_deliveries']:,}"
            f" ({result['delivered_ratio']:.2%})",
        ),
        ("delivered/s", f"{result['delivered_per_s']:,.0f}"),
        ("latency p50 / p99 / max (ms)", f"{ms(lat['p50'])} / {ms(lat['p99'])} / {ms(lat['max'])}"),
        (
            "clients complete / cut as slow",
            f"{result['clients_complete']} / {result['clients_cut']}",
        ),
        (
            "CPU busy: gateway / clients (cores)",
            f"{result['cpu']['gateway']} / {result['cpu']['clients']}",
        ),
        ("gateway CPU per delivery", f"{result['gateway_cpu_us_per_delivery']} us"),
        ("memory per idle connection", f"{result['memory_per_connection_kib']} KiB"),
        (
            "gateway RSS before / idle / busy (MiB)",
            " / ".join(f"{v / 1024:.0f}" for v in result["gateway_rss_kib"].values()),
        ),
    ]
    out = ["| measure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out)
