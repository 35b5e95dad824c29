"""What the fault scenarios share: servers, numbered publishers, recording consumers, the drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import herald
from herald import AsyncClient, DurableMessage, EmbeddedServer

from .checker import Checker, Op

log = logging.getLogger("herald.faults")


@dataclass(frozen=True)
class Scale:
    """How big a run is: ``smoke`` fits a CI job, ``full`` is the figure in the docs."""

    name: str

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, smoke: Any, full: Any) -> Any:
        return full if self.full else smoke


SMOKE = Scale("smoke")
FULL = Scale("full")


@contextlib.asynccontextmanager
async def running_server(
    args: Sequence[str] = (), *, persist: bool = True
) -> AsyncIterator[EmbeddedServer]:
    """A throwaway Valkey with AOF (``appendfsync everysec``) on a free port."""
    with tempfile.TemporaryDirectory(prefix="herald-faults-") as tmp:
        server = EmbeddedServer(Path(tmp) / "valkey", persist=persist, args=args)
        await start(server)
        try:
            yield server
        finally:
            server.cleanup()


async def start(server: EmbeddedServer) -> None:
    # Launched on the loop's thread: the server dies with the thread that started it.
    server.launch()
    await asyncio.to_thread(server.wait_ready)


def payload(publisher: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {"p": publisher, "s": seq, "k": f"{publisher}-{seq}", **extra}


async def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll ``cond`` until true or ``timeout`` passes; whether it became true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


@dataclass
class Publisher:
    """Publishes ``(publisher id, seq, key)`` messages and logs every operation.

    ``idempotent`` publishes with ``msg_id=key`` and retries an operation whose outcome is
    unknown (or that was not sent) with the same key, up to ``retries`` times: the topic's
    dedup window stores it once. Without it an operation is tried once.
    """

    hub: AsyncClient
    topic: str
    checker: Checker
    name: str
    idempotent: bool = True
    retries: int = 50
    window: int = 16
    op_timeout: float = 10.0
    rate: float | None = None  # messages per second, None: as fast as the window allows
    extra: Callable[[int], dict[str, Any]] | None = None
    replicas: int = 0  # publish(replicas=N): wait until N replicas have it
    fsync: bool = False  # publish(fsync=True): acknowledged once on disk (WAITAOF)
    sent: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    async def run(
        self, count: int | None = None, stop: asyncio.Event | None = None, first: int = 0
    ) -> None:
        """Publish ``count`` messages (numbered after ``first``), or until ``stop`` is set."""
        seq = first
        end = None if count is None else first + count
        started = time.monotonic()
        while (end is None or seq < end) and not (stop is not None and stop.is_set()):
            n = self.window if end is None else min(self.window, end - seq)
            if self.rate:
                n = 1
                due = started + (seq - first) / self.rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
            await asyncio.gather(*(self.one(seq + i + 1) for i in range(n)))
            seq += n

    async def one(self, seq: int) -> Op:
        op = self.checker.invoke(self.name, seq, topic=self.topic)
        data = payload(self.name, seq, **(self.extra(seq) if self.extra else {}))
        outcome: str | None = None
        for attempt in range(self.retries + 1 if self.idempotent else 1):
            self.checker.attempt(op)
            try:
                async with asyncio.timeout(self.op_timeout):
                    options: dict[str, Any] = {"replicas": self.replicas} if self.replicas else {}
                    if self.fsync:
                        options["fsync"] = True
                    await self.hub.publish(
                        self.topic,
                        data,
                        msg_id=op.key if self.idempotent else None,
                        confirm=True,
                        **options,
                    )
            except (herald.NotReplicated, herald.NotPersisted) as exc:  # stored: in doubt
                self._count(exc)
                self.checker.in_doubt(op)
                outcome = "unknown"
            except herald.Timeout as exc:  # not sent (no connection in time, no buffer room)
                self._count(exc)
                outcome = outcome or "failed"
            except (herald.ConnectionLost, TimeoutError) as exc:  # in flight: unknown
                self._count(exc)
                self.checker.in_doubt(op)
                outcome = "unknown"
            except herald.ServerError as exc:  # refused by the server: not done
                self._count(exc)
                outcome = outcome or "failed"
                op.error = str(exc)
                if not exc.reply.startswith("LOADING"):  # OOM and the like: final
                    break
                self.errors["LOADING"] = self.errors.get("LOADING", 0) + 1
            else:
                self.checker.ok(op)
                self.sent += 1
                return op
            if attempt < self.retries:
                await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        if outcome == "unknown":
            self.checker.unknown(op, op.error or "connection lost in flight")
        else:
            self.checker.fail(op, op.error or "not sent")
        return op

    def _count(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


def recorder(
    checker: Checker, reader: str, consumer: str, effects: set[str] | None = None
) -> Callable[[DurableMessage], None]:
    """A durable handler that logs each delivery (and applies its effect once per key)."""

    def handle(msg: DurableMessage) -> None:
        d = msg.data
        checker.deliver(
            d["p"], d["s"], reader=reader, consumer=consumer, redelivered=msg.deliveries > 1
        )
        if effects is not None and d["k"] not in effects:
            effects.add(d["k"])
            checker.effect(d["k"])

    return handle


async def recorded(
    hub: AsyncClient,
    topic: str,
    consumer: str,
    checker: Checker,
    effects: set[str] | None = None,
    **options: Any,
) -> herald.Consumer:
    """``consumer`` of group ``g`` on ``topic``, running :func:`recorder` on each delivery;
    ``options`` as :meth:`AsyncClient.consume`'s (``ack_wait``...)."""
    handler = recorder(checker, "g", consumer, effects)
    return await hub.consume(topic, "g", consumer, handler=handler, **options)


def publish_errors(publishers: Sequence[Publisher]) -> dict[str, int]:
    """The publishers' error counts, summed by error name."""
    total: dict[str, int] = {}
    for p in publishers:
        for name, n in p.errors.items():
            total[name] = total.get(name, 0) + n
    return total


@contextlib.asynccontextmanager
async def recording(
    hub: AsyncClient, topic: str, checker: Checker, reader: str, **options: Any
) -> AsyncIterator[herald.Subscription]:
    """A live subscription whose deliveries go to ``checker`` as ``reader``; ``options`` go to
    :meth:`~herald.AsyncClient.subscribe` (the scenario's gap or history-lost callback)."""
    checker.reader(reader, topic)
    sub = await hub.subscribe(topic, max_pending=100_000, **options)

    async def consume() -> None:
        # A HistoryLost is raised by the iterator at its place in the sequence (when the
        # subscription has no on_history_lost): logged there, and the reading goes on.
        while True:
            try:
                msg = await sub.__anext__()
            except herald.HistoryLost as lost:
                checker.history_lost(reader, lost.last_offset, lost.first_available, str(lost))
                continue
            except StopAsyncIteration:
                return
            d = msg.data
            if isinstance(d, dict) and "p" in d and "s" in d:
                checker.deliver(d["p"], d["s"], reader=reader, offset=msg.offset)
            else:  # not from a scenario's publisher: unexpected
                checker.deliver("foreign", -1, reader=reader, offset=msg.offset)

    task = asyncio.get_running_loop().create_task(consume())
    try:
        yield sub
    finally:
        await sub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, herald.HeraldError):
            await task


async def drain(
    checker: Checker, readers: Sequence[str], timeout: float, quiet: float = 0.5
) -> bool:
    """Wait until every reader has every acknowledged message (or ``timeout``), then ``quiet``
    seconds more for late duplicates. Whether everything arrived."""
    done = await wait_for(lambda: all(checker.missing(r) == 0 for r in readers), timeout, step=0.05)
    await asyncio.sleep(quiet)
    return done


async def group_pending(hub: AsyncClient, stream: str, group: str) -> int:
    """Entries of ``group`` delivered and not acked (XPENDING's count)."""
    reply = await hub.execute("XPENDING", stream, group)
    return int(reply[0])


async def stored_twice(hub: AsyncClient, topic: str) -> int:
    """Messages stored in a durable topic's stream more than once (same publisher and seq)."""
    seen: dict[tuple[str, int], int] = {}
    async for msg in hub.replay(topic, page=5000):
        d = msg.data
        if isinstance(d, dict) and "p" in d:
            k = (d["p"], d["s"])
            seen[k] = seen.get(k, 0) + 1
    return sum(n - 1 for n in seen.values())


class Child:
    """A Python child process running ``script``; its stdout lines are collected on a thread."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line == "ready":
                self._ready.set()
            else:
                self.lines.append(line)
        self._ready.set()

    async def ready(self, timeout: float = 20.0) -> None:
        if not await asyncio.to_thread(self._ready.wait, timeout) or self.proc.poll() is not None:
            err = (
                self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
            )
            raise RuntimeError(f"child process did not start: {err[-2000:]}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def summary(report: dict[str, Any], checks: dict[str, bool], **extra: Any) -> dict[str, Any]:
    """The scenario's report: the checker's figures, scenario figures, and its checks."""
    report.update(extra)
    report["checks"] = checks
    report["passed"] = all(checks.values())
    return report
